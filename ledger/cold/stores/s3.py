"""The ``s3://`` store: objects in a bucket on AWS S3 or an S3-compatible endpoint.

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
"""

from __future__ import annotations

import base64
import io
import logging
import re
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, cast

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    FlexibleChecksumError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from ...errors import LedgerError, UsageError
from ...files import sha256_file
from .base import (
    READ_BLOCK,
    DeleteResult,
    DigestMismatch,
    ObjectInfo,
    ObjectNotFound,
    PutResult,
    StoreError,
    StoreOptions,
    StoreUnavailable,
    _as_stream,
    _check_prefix,
    _check_retain,
    _check_sha256,
    _same_or_conflict,
    _unique,
    check_key,
)
from .s3_codes import (
    _BAD_CREDENTIALS,
    _BAD_DIGEST,
    _DENIED,
    _UNAVAILABLE,
    _botocore_detail,
    _code,
    _redact_url,
    _sha256_of,
    _status,
)

log = logging.getLogger("ledger.cold.stores")  # the name it had before the split

DELETE_BATCH = 1000  # S3's limit on keys per DeleteObjects request
HEAD_FIRST_BYTES = 8 << 20  # larger Path sources: HEAD before PUT, so a re-run does not re-upload
MAX_PUT_BYTES = 5 << 30  # single PUT limit; larger objects would need multipart upload

BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


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
