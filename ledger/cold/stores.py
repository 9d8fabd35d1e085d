"""Object stores for the cold tier: ``file://`` and ``s3://`` behind one small interface.

``open_store(url, options)`` returns a ``Store``. Keys are relative to the store's
prefix and checked before any I/O. Every object is write-once under a
deterministic key: ``put`` of identical bytes again reports ``created=False``,
of different bytes raises ``ObjectConflict``; nothing is ever overwritten.

S3 specifics (see field-notes.md, "Shipping to object storage"):

* One boto3 client per store, standard retries, boto3's own resolution of
  endpoint, region and credentials unless ``StoreOptions`` says otherwise.
* Each feature an S3-compatible endpoint may reject is a switch: conditional
  writes (``If-None-Match: *``), SHA-256 checksums, SSE, Object Lock.
* A PUT carries ``x-amz-checksum-sha256`` (when on) and ``sha256`` user metadata,
  so ``head`` can report the digest either way.
* ``delete_many`` sends DeleteObjects with at most 1,000 entries. On a versioned
  bucket a plain delete only adds a delete marker and the bytes stay: with
  ``versioned_deletes`` (on by default when Object Lock is configured) every
  version of each key is deleted, so a version that Object Lock protects is
  reported per key as ``AccessDenied`` instead of as deleted.

Errors: ``StoreError`` (not retryable), ``StoreUnavailable`` (retry later),
``ObjectNotFound`` (``open`` of an absent key), ``ObjectConflict`` and
``DigestMismatch`` (evidence problems). Messages are one line, name the bucket
or key, and never carry credentials or request dumps.

Stores are safe to share between threads.
"""

from __future__ import annotations

import base64
import binascii
import errno
import hashlib
import io
import logging
import os
import re
import secrets
import stat
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, BinaryIO, Literal, Protocol, cast
from urllib.parse import unquote, urlsplit

import msgspec
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    FlexibleChecksumError,
    HTTPClientError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ProfileNotFound,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from ..errors import EvidenceError, InputError, LedgerError, UsageError
from ..files import fsync_dir, sha256_file

log = logging.getLogger("ledger.cold.stores")

READ_BLOCK = 1 << 20
DELETE_BATCH = 1000  # S3's limit on keys per DeleteObjects request
HEAD_FIRST_BYTES = 8 << 20  # larger Path sources: HEAD before PUT, so a re-run does not re-upload
MAX_PUT_BYTES = 5 << 30  # single PUT limit; larger objects would need multipart upload
MAX_KEY_BYTES = 1024
TMP_PREFIX = ".ledger-tmp-"  # FileStore temp files; reserved, never a key segment

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


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


# ---- entry point ----------------------------------------------------------------------


def open_store(url: str, options: StoreOptions | None = None) -> Store:
    """Open ``s3://bucket[/prefix]`` or ``file:///dir``; anything else is a UsageError.

    Nothing is contacted or created here except the boto3 client.
    """
    opts = _checked_options(options or StoreOptions())
    if not isinstance(url, str) or "\x00" in url:
        raise UsageError("store URL must be a string without NUL")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("s3", "file"):
        raise UsageError(f"unsupported store URL scheme {scheme or '(none)'!r}: use s3://bucket/prefix or file:///dir")
    if "@" in parts.netloc or (scheme == "s3" and "@" in url):
        # never echo: a secret with a "/" in it moves the "@" into the path
        raise UsageError(
            f"{scheme}:// store URLs must not carry credentials (or '@'): use the environment or a profile"
        )
    if parts.query or parts.fragment:
        raise UsageError(f"{scheme}:// store URLs take no query or fragment")
    if scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path:
            raise UsageError("file:// store URL must name an absolute directory: file:///dir")
        return FileStore(Path(unquote(parts.path) or "/"))
    bucket = parts.netloc
    if not _BUCKET.match(bucket):
        shown = f" {bucket!r}" if ":" not in bucket else ""  # "user:secret" or "host:port": not echoed
        raise UsageError(f"invalid bucket name{shown} in s3:// store URL (3-63 of a-z, 0-9, '.', '-')")
    prefix = unquote(parts.path).strip("/")
    if prefix:
        check_key(prefix)
    return S3Store(bucket, prefix, opts)


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


# ---- file:// ----------------------------------------------------------------------------


class FileStore:
    """Objects as files under a root directory (0700 directories, 0600 files).

    ``put`` writes a temp file in the target directory, fsyncs it, then links it
    into place with ``os.link`` (which fails if the name exists), so a crash never
    leaves a half-written object under its key. A key cannot be both an object
    and a "directory" of other keys here (S3 allows that).
    """

    def __init__(self, root: Path) -> None:
        if not root.is_absolute():
            raise UsageError(f"file:// store needs an absolute path, got {str(root)!r}")
        self.root = Path(os.path.normpath(root))
        self.url = self.root.as_uri()

    def __repr__(self) -> str:
        return f"FileStore({self.url!r})"

    def close(self) -> None:
        """Nothing to release; present for symmetry with S3Store."""

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _fail(self, exc: OSError, what: str) -> StoreError:
        detail = exc.strerror or type(exc).__name__
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return StoreUnavailable(f"{what}: {detail}")
        if isinstance(exc, PermissionError):
            return StoreError(f"permission denied: {what}")
        return StoreError(f"{what}: {detail}")

    def put(
        self,
        key: str,
        source: Path | bytes,
        *,
        sha256: str,
        content_type: str = "application/octet-stream",
        retain_until: datetime | None = None,
    ) -> PutResult:
        """Store ``source`` under ``key`` once; content_type and retain_until are not kept."""
        final = self._path(key)
        sha = _check_sha256(sha256)
        _check_retain(retain_until)
        with _as_stream(source) as src:
            size = _stream_size(src)
            found = self._info(key, final, hashed=True)
            if found is not None:
                return _same_or_conflict(self.url, key, size, sha, found)
            try:
                self._makedirs(final.parent)
                tmp = final.parent / f"{TMP_PREFIX}{secrets.token_hex(8)}"
                written = self._write_tmp(tmp, src)
            except OSError as exc:
                raise self._fail(exc, f"put {self.url}/{key}") from exc
        try:
            if written != (size, sha):
                raise DigestMismatch(
                    f"{self.url}/{key}: source is {written[0]} bytes sha256 {written[1]}, "
                    f"caller said {size} bytes sha256 {sha}",
                    path=f"{self.url}/{key}",
                )
            try:
                os.link(tmp, final)
            except FileExistsError:
                found = self._info(key, final, hashed=True)
                if found is None:
                    raise StoreError(f"cannot put {self.url}/{key}: a directory of that name exists") from None
                return _same_or_conflict(self.url, key, size, sha, found)
            except OSError as exc:
                raise self._fail(exc, f"put {self.url}/{key}") from exc
        finally:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        fsync_dir(final.parent)
        return PutResult(key=key, size=size, sha256=sha, created=True)

    def _write_tmp(self, tmp: Path, src: BinaryIO) -> tuple[int, str]:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        h = hashlib.sha256()
        n = 0
        try:
            with os.fdopen(fd, "wb") as out:
                for block in _chunks(src):
                    h.update(block)
                    n += len(block)
                    out.write(block)
                out.flush()
                os.fsync(out.fileno())
        except BaseException:
            os.unlink(tmp)
            raise
        return n, h.hexdigest()

    def _makedirs(self, directory: Path) -> None:
        missing = []
        while not directory.is_dir():
            missing.append(directory)
            if directory.parent == directory:
                break
            directory = directory.parent
        for d in reversed(missing):
            try:
                os.mkdir(d, 0o700)
            except FileExistsError:
                if not d.is_dir():
                    raise StoreError(f"cannot create {d}: a file of that name exists") from None
                continue
            fsync_dir(d.parent)

    def _info(self, key: str, path: Path, *, hashed: bool) -> ObjectInfo | None:
        try:
            st = os.stat(path)
            if not stat.S_ISREG(st.st_mode):  # a directory of other keys, or something odd: no object
                return None
            digest = None
            if hashed:
                with open(path, "rb") as f:
                    digest = sha256_file(f)[1]
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise self._fail(exc, f"read {self.url}/{key}") from exc
        return ObjectInfo(key=key, size=st.st_size, sha256=digest, last_modified=st.st_mtime)

    def head(self, key: str) -> ObjectInfo | None:
        """Size, mtime and sha256 (by hashing the file) of ``key``, or None."""
        return self._info(key, self._path(key), hashed=True)

    def open(self, key: str) -> BinaryIO:
        path = self._path(key)
        try:
            # O_NONBLOCK: a FIFO in an object's place must not block the open.
            f = open(path, "rb", opener=lambda p, flags: os.open(p, flags | os.O_NONBLOCK))  # noqa: SIM115
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ObjectNotFound(f"no object {self.url}/{key}") from None
        except OSError as exc:
            raise self._fail(exc, f"open {self.url}/{key}") from exc
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            f.close()
            raise ObjectNotFound(f"no object {self.url}/{key}")
        os.set_blocking(f.fileno(), True)
        return f

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects whose key starts with ``prefix``, in key (code point) order, like S3."""
        p = _check_prefix(prefix)
        head = p.rpartition("/")[0]
        yield from self._walk(self.root / head if head else self.root, head, p)

    def _walk(self, directory: Path, rel: str, prefix: str) -> Iterator[ObjectInfo]:
        try:
            with os.scandir(directory) as it:
                entries = [(e.name + "/" if e.is_dir(follow_symlinks=False) else e.name, e) for e in it]
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:
            raise self._fail(exc, f"list {self.url}/{rel}") from exc
        for sort_name, entry in sorted(entries, key=lambda t: t[0]):
            if entry.name.startswith(TMP_PREFIX):
                continue
            key = f"{rel}/{entry.name}" if rel else entry.name
            if sort_name.endswith("/"):
                if (key + "/").startswith(prefix) or prefix.startswith(key + "/"):
                    yield from self._walk(Path(entry.path), key, prefix)
            elif key.startswith(prefix) and entry.is_file(follow_symlinks=False):
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                yield ObjectInfo(key=key, size=st.st_size, last_modified=st.st_mtime)

    def object_lock_enabled(self) -> bool:
        """A directory has no Object Lock."""
        return False

    def delete_many(self, keys: Sequence[str]) -> DeleteResult:
        """Unlink each key; absent keys count as deleted. Empty directories stay."""
        wanted = _unique(check_key(k) for k in keys)
        deleted: list[str] = []
        errors: list[dict[str, str]] = []
        dirs: set[Path] = set()
        for key in wanted:
            path = self.root / key
            try:
                os.unlink(path)
                dirs.add(path.parent)
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                pass
            except PermissionError as exc:
                errors.append({"key": key, "code": "AccessDenied", "message": exc.strerror or "permission denied"})
                continue
            except OSError as exc:
                code = errno.errorcode.get(exc.errno or 0, "OSError")
                errors.append({"key": key, "code": code, "message": exc.strerror or str(exc)})
                continue
            deleted.append(key)
        for d in dirs:
            fsync_dir(d)
        return DeleteResult(deleted=deleted, errors=errors, requests=0)


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


# ---- s3:// ------------------------------------------------------------------------------

_DENIED = {"AccessDenied", "403", "Forbidden", "AllAccessDisabled", "AccountProblem"}
_BAD_CREDENTIALS = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "TokenRefreshRequired",
    "InvalidSecurity",
}
_UNAVAILABLE = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "ServiceUnavailable",
    "InternalError",
    "OperationAborted",
}
_BAD_DIGEST = {"BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch"}


class S3Store:
    """Objects in ``s3://bucket/prefix`` on AWS S3 or an S3-compatible endpoint.

    ``client`` is the store's one boto3 client (register botocore event hooks on
    ``client.meta.events``).
    """

    def __init__(self, bucket: str, prefix: str, options: StoreOptions) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.options = options
        self.url = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
        self._base = f"{prefix}/" if prefix else ""
        self._bucket_seen = False
        self._lock_enabled: bool | None = None
        self.versioned_deletes = (
            options.versioned_deletes if options.versioned_deletes is not None else options.object_lock_mode is not None
        )
        self.client = self._make_client(options)
        self.endpoint = _redact_url(str(self.client.meta.endpoint_url))

    def __repr__(self) -> str:
        return f"S3Store({self.url!r}, endpoint={self.endpoint!r})"

    def _make_client(self, o: StoreOptions) -> Any:
        import boto3
        from botocore.config import Config

        s3: dict[str, str] = {}
        if o.path_style is not None:
            s3["addressing_style"] = "path" if o.path_style else "virtual"
        extra: dict[str, Any] = {}
        if not o.checksums:  # no CRC32 by default either: some endpoints reject the headers
            extra = {"request_checksum_calculation": "when_required", "response_checksum_validation": "when_required"}
        config = Config(
            # total attempts, first request included (retries' "max_attempts" would mean retries, i.e. one more)
            retries={"total_max_attempts": o.max_attempts, "mode": "standard"},
            connect_timeout=o.connect_timeout_s,
            read_timeout=o.read_timeout_s,
            s3=s3 or None,
            user_agent_extra="ledger-cold",
            **extra,
        )
        kwargs: dict[str, Any] = {"config": config}
        if o.region:
            kwargs["region_name"] = o.region
        if o.endpoint_url is not None:
            kwargs["endpoint_url"] = o.endpoint_url
        try:
            session = boto3.session.Session(profile_name=o.profile)
            return session.client("s3", **kwargs)
        except BotoCoreError as exc:
            raise StoreError(f"cannot set up an S3 client for {self.url}: {_botocore_detail(exc)}") from exc
        except ValueError as exc:  # e.g. an invalid endpoint URL
            raise StoreError(f"cannot set up an S3 client for {self.url}: {type(exc).__name__}") from exc

    def close(self) -> None:
        """Release the client's connection pool."""
        self.client.close()

    # -- helpers

    def _full(self, key: str) -> str:
        return self._base + key

    def _where(self, key: str | None = None) -> str:
        return f"{self.url}/{key}" if key else self.url

    def _error(self, exc: Exception, action: str, key: str | None = None) -> LedgerError:
        """One clear line for a botocore failure; never credentials or request dumps."""
        where = self._where(key)
        if isinstance(exc, ClientError):
            status, code = _status(exc), _code(exc)
            tries = int(exc.response.get("ResponseMetadata", {}).get("RetryAttempts") or 0) + 1
            if code == "NoSuchBucket":
                return StoreError(f"bucket {self.bucket} does not exist (at {self.endpoint})")
            if code in _BAD_CREDENTIALS:
                return StoreError(f"credentials rejected by {self.endpoint} for {where} ({code})")
            if code in _DENIED or status == 403:
                return StoreError(f"access denied to {where} ({action}, {code})")
            if code in _BAD_DIGEST:
                return DigestMismatch(f"{where}: the store says the bytes sent do not match their checksum ({code})")
            if code == "NotImplemented" or status == 501:
                return StoreError(
                    f"{self.endpoint} does not support this {action} request for {where} ({code}): "
                    "switch off the feature it rejects (sse, object lock, checksums, conditional writes)"
                )
            if code in _UNAVAILABLE or status >= 500 or status == 429:
                return StoreUnavailable(f"{action} {where}: {code} (HTTP {status}) after {tries} attempt(s)")
            return StoreError(f"{action} {where} failed: {code} (HTTP {status})")
        if isinstance(exc, BotoConnectionError | HTTPClientError):
            return StoreUnavailable(
                f"{action} {where}: cannot reach {self.endpoint} ({type(exc).__name__}) "
                f"after {self.options.max_attempts} attempt(s)"
            )
        if isinstance(exc, NoCredentialsError | PartialCredentialsError):
            return StoreError(f"no usable AWS credentials for {where} (environment, profile or config file)")
        return StoreError(f"{action} {where} failed: {_botocore_detail(exc)}")

    def _call(self, action: str, key: str | None, method: str, **params: Any) -> Any:
        try:
            return getattr(self.client, method)(Bucket=self.bucket, **params)
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, action, key) from exc

    def _check_bucket(self) -> None:
        """A HEAD 404 does not say whether the key or the bucket is missing: ask once."""
        if self._bucket_seen:
            return
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            status = _status(exc)
            if status == 404:
                raise StoreError(f"bucket {self.bucket} does not exist (at {self.endpoint})") from exc
            if status != 403:  # HeadBucket may be denied while object access is allowed
                raise self._error(exc, "head bucket") from exc
        except BotoCoreError as exc:
            raise self._error(exc, "head bucket") from exc
        self._bucket_seen = True

    # -- the interface

    def put(
        self,
        key: str,
        source: Path | bytes,
        *,
        sha256: str,
        content_type: str = "application/octet-stream",
        retain_until: datetime | None = None,
    ) -> PutResult:
        """PUT once under ``key``; identical bytes already there -> created=False.

        The source is hashed locally first (streamed), so a wrong ``sha256`` raises
        DigestMismatch on every endpoint, even where the server checks no checksum.
        """
        check_key(key)
        sha = _check_sha256(sha256)
        _check_retain(retain_until)
        o = self.options
        params: dict[str, Any] = {"Key": self._full(key), "ContentType": content_type, "Metadata": {"sha256": sha}}
        if o.checksums:
            params["ChecksumAlgorithm"] = "SHA256"
            params["ChecksumSHA256"] = base64.b64encode(bytes.fromhex(sha)).decode("ascii")
        if o.sse:
            params["ServerSideEncryption"] = o.sse
            if o.kms_key_id:
                params["SSEKMSKeyId"] = o.kms_key_id
        if o.object_lock_mode:
            if retain_until is None and o.object_lock_days <= 0:
                raise UsageError("object lock is on: give retain_until or set object_lock_days > 0")
            params["ObjectLockMode"] = o.object_lock_mode
            params["ObjectLockRetainUntilDate"] = retain_until or datetime.now(UTC) + timedelta(days=o.object_lock_days)
        if o.conditional_writes:
            params["IfNoneMatch"] = "*"

        with _as_stream(source) as body:
            size, digest = sha256_file(body)
            if digest != sha:
                raise DigestMismatch(
                    f"{self._where(key)}: source is {size} bytes sha256 {digest}, caller said sha256 {sha}",
                    path=self._where(key),
                )
            if size > MAX_PUT_BYTES:
                raise UsageError(f"{self._where(key)}: {size} bytes is over the single-PUT limit of 5 GiB")
            if not o.conditional_writes or size >= HEAD_FIRST_BYTES:
                found = self.head(key)
                if found is not None:
                    return self._adopt(key, size, sha, found)
            for attempt in (1, 2):
                body.seek(0)
                outcome = self._put_once(key, body, params, final=attempt == 2)
                if outcome == "created":
                    self._bucket_seen = True
                    return PutResult(key=key, size=size, sha256=sha, created=True)
                found = self.head(key)
                if found is not None:
                    return self._adopt(key, size, sha, found)
                # 412/409 but nothing there now (deleted meanwhile, or a racing write failed): try once more
        raise StoreUnavailable(f"put {self._where(key)}: the key kept changing under a concurrent writer")

    def _put_once(self, key: str, body: BinaryIO, params: dict[str, Any], *, final: bool) -> str:
        """'created', or 'exists' after a 412 / a first 409; raises otherwise."""
        try:
            self.client.put_object(Bucket=self.bucket, Body=body, **params)
            return "created"
        except ClientError as exc:
            code = _code(exc)
            if code == "PreconditionFailed" and self.options.conditional_writes:
                return "exists"
            if code == "ConditionalRequestConflict" and not final:
                return "exists"
            if code == "ConditionalRequestConflict":
                raise StoreUnavailable(f"put {self._where(key)}: concurrent writes to the same key (409)") from exc
            raise self._error(exc, "put", key) from exc
        except BotoCoreError as exc:
            raise self._error(exc, "put", key) from exc

    def _adopt(self, key: str, size: int, sha: str, found: ObjectInfo) -> PutResult:
        if found.sha256 is None and found.size == size:
            # Uploaded without checksum or metadata: hash the stored bytes to decide.
            with self.open(key) as f:
                found.sha256 = sha256_file(f)[1]
        return _same_or_conflict(self.url, key, size, sha, found)

    def head(self, key: str) -> ObjectInfo | None:
        """HEAD ``key``: size, sha256 (checksum, else ``sha256`` metadata), lock state; None if absent."""
        check_key(key)
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": self._full(key)}
        if self.options.checksums:
            params["ChecksumMode"] = "ENABLED"
        try:
            r = self.client.head_object(**params)
        except ClientError as exc:
            if _status(exc) != 404:
                raise self._error(exc, "head", key) from exc
            self._check_bucket()
            return None
        except BotoCoreError as exc:
            raise self._error(exc, "head", key) from exc
        self._bucket_seen = True
        retain = r.get("ObjectLockRetainUntilDate")
        return ObjectInfo(
            key=key,
            size=int(r["ContentLength"]),
            sha256=_sha256_of(r),
            last_modified=r["LastModified"].timestamp() if r.get("LastModified") else None,
            lock_mode=r.get("ObjectLockMode"),
            retain_until=retain.timestamp() if isinstance(retain, datetime) else None,
        )

    def open(self, key: str) -> BinaryIO:
        """Stream ``key``; with checksums on, botocore checks the SHA-256 at the end of the read."""
        check_key(key)
        params: dict[str, Any] = {"Key": self._full(key)}
        if self.options.checksums:
            params["ChecksumMode"] = "ENABLED"
        try:
            r = self._call("get", key, "get_object", **params)
        except StoreError as exc:
            if isinstance(exc.__cause__, ClientError) and _status(exc.__cause__) == 404:
                if _code(exc.__cause__) == "NoSuchBucket":
                    raise
                raise ObjectNotFound(f"no object {self._where(key)}") from exc.__cause__
            raise
        return cast(BinaryIO, _S3Reader(r["Body"], self, key))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """ListObjectsV2 under the store prefix, page by page; keys relative to it."""
        p = _check_prefix(prefix)
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self._full(p), PaginationConfig={"PageSize": 1000}
        )
        it = iter(pages)
        while True:
            try:
                page = next(it)
            except StopIteration:
                return
            except (ClientError, BotoCoreError) as exc:
                raise self._error(exc, "list", p or None) from exc
            for obj in page.get("Contents", ()):
                rel = obj["Key"][len(self._base) :]
                try:
                    check_key(rel)
                except UsageError:
                    log.debug("%s: skipping key %r, not one ledger could have written", self.url, obj["Key"])
                    continue
                modified = obj.get("LastModified")
                yield ObjectInfo(
                    key=rel, size=int(obj["Size"]), last_modified=modified.timestamp() if modified else None
                )

    def object_lock_enabled(self) -> bool:
        """Whether the bucket has Object Lock on (asked once per store).

        There a DELETE without a version id "succeeds" by adding a delete marker while
        the locked version stays: the caller must check locks itself to report them.
        A refusal to say counts as on, so such a caller checks rather than assumes.
        """
        if self._lock_enabled is None:
            try:
                r = self.client.get_object_lock_configuration(Bucket=self.bucket)
                enabled = r.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled"
            except ClientError as exc:
                if _code(exc) == "ObjectLockConfigurationNotFoundError":
                    enabled = False
                elif _code(exc) in _DENIED or _status(exc) == 403:
                    enabled = True
                else:
                    raise self._error(exc, "get object lock configuration") from exc
            except BotoCoreError as exc:
                raise self._error(exc, "get object lock configuration") from exc
            self._lock_enabled = enabled
        return self._lock_enabled

    def delete_many(self, keys: Sequence[str]) -> DeleteResult:
        """DeleteObjects, at most 1,000 entries per request; per-key errors reported.

        With ``versioned_deletes`` every version and delete marker of each key is
        deleted, so Object Lock refusals come back as ``AccessDenied`` for the key.
        Absent keys count as deleted. A request-level failure raises; the call is
        idempotent, so retry it whole.
        """
        wanted = _unique(check_key(k) for k in keys)
        if not wanted:
            return DeleteResult(deleted=[], errors=[], requests=0)
        targets = self._versions(wanted) if self.versioned_deletes else [{"Key": self._full(k)} for k in wanted]
        failed: dict[str, dict[str, str]] = {}
        requests = 0
        for start in range(0, len(targets), DELETE_BATCH):
            chunk = targets[start : start + DELETE_BATCH]
            r = self._call("delete", None, "delete_objects", Delete={"Objects": chunk, "Quiet": True})
            requests += 1
            for err in r.get("Errors", ()):
                rel = str(err.get("Key", ""))[len(self._base) :]
                failed.setdefault(
                    rel, {"key": rel, "code": str(err.get("Code", "")), "message": str(err.get("Message", ""))}
                )
        deleted = [k for k in wanted if k not in failed]
        errors = [failed[k] for k in wanted if k in failed]
        return DeleteResult(deleted=deleted, errors=errors, requests=requests)

    def _versions(self, keys: list[str]) -> list[dict[str, str]]:
        """Every (key, version) of ``keys``: one ListObjectVersions walk per directory of keys."""
        by_dir: dict[str, set[str]] = {}
        for k in keys:
            by_dir.setdefault(k.rpartition("/")[0], set()).add(self._full(k))
        out: list[dict[str, str]] = []
        for directory, full_keys in sorted(by_dir.items()):
            prefix = min(full_keys) if len(full_keys) == 1 else self._full(directory + "/" if directory else "")
            pages = self.client.get_paginator("list_object_versions").paginate(Bucket=self.bucket, Prefix=prefix)
            try:
                for page in pages:
                    for v in (*page.get("Versions", ()), *page.get("DeleteMarkers", ())):
                        if v["Key"] in full_keys:
                            out.append({"Key": v["Key"], "VersionId": v["VersionId"]})
            except (ClientError, BotoCoreError) as exc:
                raise self._error(exc, "list versions", directory or None) from exc
        return out


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code") or _status(exc))


def _sha256_of(head: dict[str, Any]) -> str | None:
    """The full-object SHA-256 checksum (base64) as hex, else the ``sha256`` metadata."""
    checksum = head.get("ChecksumSHA256")
    if checksum and "-" not in checksum and head.get("ChecksumType", "FULL_OBJECT") == "FULL_OBJECT":
        try:
            raw = base64.b64decode(checksum, validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) == 32:
            return raw.hex()
    meta = (head.get("Metadata") or {}).get("sha256", "").lower()
    return meta if _HEX64.match(meta) else None


def _botocore_detail(exc: Exception) -> str:
    """A botocore error's class and, for configuration errors, its (credential-free) text."""
    if isinstance(exc, ProfileNotFound | NoRegionError):
        return str(exc)
    return type(exc).__name__


def _redact_url(url: str) -> str:
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


class _S3Reader(io.RawIOBase):
    """A GetObject body as a file: read errors become StoreUnavailable / DigestMismatch."""

    def __init__(self, body: Any, store: S3Store, key: str) -> None:
        super().__init__()
        self._body = body
        self._store = store
        self._key = key

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        try:
            data = self._body.read(len(b))
        except FlexibleChecksumError as exc:
            where = self._store._where(self._key)
            raise DigestMismatch(f"{where}: the bytes read do not match the stored checksum", path=where) from exc
        except BotoCoreError as exc:
            raise self._store._error(exc, "read", self._key) from exc
        except OSError as exc:
            where = self._store._where(self._key)
            raise StoreUnavailable(f"read {where}: {exc.strerror or type(exc).__name__}") from exc
        n = len(data)
        b[:n] = data
        return n

    def readall(self) -> bytes:
        """``read()`` with no size: what the caller asked for, in 1 MiB steps."""
        out = bytearray()
        while block := self.read(READ_BLOCK):
            out += block
        return bytes(out)

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()
