"""What every cold-tier store shares: the ``Store`` protocol, its values and errors,
and the argument checks both backends run before any I/O.

The contract (tests/test_stores.py runs it against every backend): keys are
relative to the store's prefix and checked before any I/O. Every object is
write-once under a deterministic key: ``put`` of identical bytes again reports
``created=False``, of different bytes raises ``ObjectConflict``; nothing is ever
overwritten. Absent keys count as deleted. Stores are safe to share between threads.

Errors: ``StoreError`` (not retryable), ``StoreUnavailable`` (retry later),
``ObjectNotFound`` (``open`` of an absent key), ``ObjectConflict`` and
``DigestMismatch`` (evidence problems). Messages are one line, name the bucket
or key, and never carry credentials or request dumps.

No botocore here: the configuration imports ``StoreOptions`` from this module.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Annotated, BinaryIO, Literal, Protocol

import msgspec

from ...errors import EvidenceError, InputError, LedgerError, UsageError

READ_BLOCK = 1 << 20
MAX_KEY_BYTES = 1024
TMP_PREFIX = ".ledger-tmp-"  # FileStore temp files; reserved, never a key segment

_HEX64 = re.compile(r"^[0-9a-f]{64}$")

# ---- errors ---------------------------------------------------------------------------


class StoreError(LedgerError):
    """The store cannot be used as configured: missing bucket, access denied, bad config.

    Not retryable. The message names the bucket or key, never credentials.
    """


class StoreUnavailable(StoreError):
    """The store did not answer usefully (5xx, throttling, refused, timed out) after retries.

    Retry later.
    """


class ObjectNotFound(StoreError):
    """``open`` of a key that is not in the store."""


class ObjectConflict(EvidenceError):
    """A different object already exists under a deterministic key."""

    def __init__(
        self, message: str, *, path: str, key: str, expected: tuple[int, str], found: tuple[int, str | None]
    ) -> None:
        super().__init__(message, path=path)
        self.key = key
        self.expected = expected  # (size, sha256) of what we tried to put
        self.found = found  # (size, sha256 or None) of what is there


class DigestMismatch(EvidenceError):
    """The bytes read or sent do not hash to the sha256 the caller gave (or the store recorded)."""


# ---- values ---------------------------------------------------------------------------


class StoreOptions(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """How to talk to an S3-compatible endpoint; ignored by ``file://`` stores.

    Each feature some endpoint rejects (R2, Spaces: SSE and Object Lock headers) is a
    switch. ``versioned_deletes=None`` means "on when ``object_lock_mode`` is set".
    Object Lock needs ``checksums`` (S3 requires a checksum on each locked PUT).
    """

    endpoint_url: str | None = None  # None -> boto3's own resolution (AWS_ENDPOINT_URL_S3, profile, ...)
    region: str | None = None
    profile: str | None = None
    path_style: bool | None = None  # None: botocore default (path-style for custom endpoints)
    sse: Literal["AES256", "aws:kms"] | None = None
    kms_key_id: str | None = None
    object_lock_mode: Literal["GOVERNANCE", "COMPLIANCE"] | None = None
    object_lock_days: Annotated[int, msgspec.Meta(ge=0)] = 0
    conditional_writes: bool = True  # If-None-Match: * on PUT
    checksums: bool = True  # x-amz-checksum-sha256 on PUT / ChecksumMode on HEAD and GET
    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=20)] = 5  # total attempts per request (standard mode)
    connect_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 5.0
    read_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    versioned_deletes: bool | None = None  # delete every version of a key (ListObjectVersions first)


class ObjectInfo(msgspec.Struct, kw_only=True):
    key: str
    size: int
    sha256: str | None = None  # lowercase hex when known
    last_modified: float | None = None  # epoch seconds
    lock_mode: str | None = None  # S3 Object Lock mode of the current version (from HEAD)
    retain_until: float | None = None  # epoch seconds (from HEAD)


class PutResult(msgspec.Struct, kw_only=True):
    key: str
    size: int
    sha256: str
    created: bool  # False: an identical object was already there


class DeleteResult(msgspec.Struct, kw_only=True):
    deleted: list[str]  # absent keys count as deleted (S3 semantics)
    errors: list[dict[str, str]]  # {"key", "code", "message"}
    requests: int = 0  # DeleteObjects calls made (0 for file://)


class Store(Protocol):
    url: str  # canonical URL without credentials: "s3://bucket/prefix" or "file:///dir"

    def put(
        self,
        key: str,
        source: Path | bytes,
        *,
        sha256: str,
        content_type: str = "application/octet-stream",
        retain_until: datetime | None = None,
    ) -> PutResult: ...

    def head(self, key: str) -> ObjectInfo | None: ...

    def open(self, key: str) -> BinaryIO: ...

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]: ...

    def delete_many(self, keys: Sequence[str]) -> DeleteResult: ...

    def object_lock_enabled(self) -> bool: ...


def _checked_options(options: StoreOptions) -> StoreOptions:
    """Validate types and ranges (msgspec checks them on convert, not on construction)."""
    try:
        opts = msgspec.convert(msgspec.to_builtins(options), StoreOptions)
    except msgspec.ValidationError as exc:
        raise UsageError(f"invalid store options: {exc}") from exc
    if opts.kms_key_id and opts.sse != "aws:kms":
        raise UsageError('store option kms_key_id needs sse="aws:kms"')
    if opts.object_lock_mode and not opts.checksums:
        raise UsageError("store option object_lock_mode needs checksums (S3 requires one on each locked PUT)")
    return opts


# ---- keys and arguments ---------------------------------------------------------------


def check_key(key: str) -> str:
    """Return ``key`` if it is a usable relative key, else raise UsageError.

    Rejected: empty, a leading ``/``, empty, ``.`` or ``..`` segments, NUL, segments
    starting with the reserved temp-file prefix, more than 1,024 UTF-8 bytes.
    """
    if not isinstance(key, str) or not key:
        raise UsageError("object key must be a non-empty string")
    if "\x00" in key:
        raise UsageError(f"object key {key!r} contains NUL")
    if key.startswith("/"):
        raise UsageError(f"object key {key!r} must be relative (no leading /)")
    for segment in key.split("/"):
        _check_segment(key, segment)
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise UsageError(f"object key {key[:60]!r}... is longer than {MAX_KEY_BYTES} bytes")
    return key


def _check_segment(key: str, segment: str) -> None:
    if segment in ("", ".", ".."):
        raise UsageError(f"object key {key!r} has an empty, '.' or '..' segment")
    if segment.startswith(TMP_PREFIX):
        raise UsageError(f"object key {key!r} uses the reserved prefix {TMP_PREFIX!r}")


def _check_prefix(prefix: str) -> str:
    """A list prefix: like a key, but may be empty or end in ``/`` or mid-segment."""
    if prefix == "":
        return prefix
    if not isinstance(prefix, str) or "\x00" in prefix or prefix.startswith("/"):
        raise UsageError(f"list prefix {prefix!r} must be relative and without NUL")
    *whole, last = prefix.split("/")
    for segment in whole:
        _check_segment(prefix, segment)
    if last in (".", ".."):
        raise UsageError(f"list prefix {prefix!r} has a '.' or '..' segment")
    return prefix


def _check_sha256(sha256: str) -> str:
    if not isinstance(sha256, str) or not _HEX64.match(sha256.lower()):
        raise UsageError("sha256 must be 64 hex characters")
    return sha256.lower()


def _check_retain(retain_until: datetime | None) -> None:
    if retain_until is not None and retain_until.tzinfo is None:
        raise UsageError("retain_until must be timezone-aware")


def _chunks(f: BinaryIO) -> Iterator[bytes]:
    while block := f.read(READ_BLOCK):
        yield block


def _open_source(source: Path) -> BinaryIO:
    try:
        return open(source, "rb")  # noqa: SIM115 - the caller closes it
    except OSError as exc:
        raise InputError(f"cannot read {source}: {exc.strerror or exc}") from exc


def _same_or_conflict(url: str, key: str, size: int, sha256: str, found: ObjectInfo) -> PutResult:
    if found.size == size and found.sha256 == sha256:
        return PutResult(key=key, size=size, sha256=sha256, created=False)
    raise ObjectConflict(
        f"a different object already exists at {url}/{key}: "
        f"{found.size} bytes sha256 {found.sha256 or 'unknown'}, expected {size} bytes sha256 {sha256}",
        path=f"{url}/{key}",
        key=key,
        expected=(size, sha256),
        found=(found.size, found.sha256),
    )


class _as_stream:
    """``with _as_stream(source) as f``: an open file for a Path, a BytesIO for bytes."""

    def __init__(self, source: Path | bytes) -> None:
        self.source = source
        self.f: BinaryIO | None = None

    def __enter__(self) -> BinaryIO:
        if isinstance(self.source, bytes | bytearray | memoryview):
            self.f = io.BytesIO(self.source)
        elif isinstance(self.source, Path):
            self.f = _open_source(self.source)
        else:
            raise UsageError(f"put source must be a Path or bytes, not {type(self.source).__name__}")
        return self.f

    def __exit__(self, *exc: object) -> None:
        if self.f is not None:
            self.f.close()


def _stream_size(f: BinaryIO) -> int:
    pos = f.tell()
    end = f.seek(0, io.SEEK_END)
    f.seek(pos)
    return end - pos


def _unique(keys: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(keys))
