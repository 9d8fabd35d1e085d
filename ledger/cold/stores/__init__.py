"""Object stores for the cold tier: ``file://`` and ``s3://`` behind one small interface.

``open_store(url, options)`` returns a ``Store``. The contract every store keeps,
the values and the errors are in ``base``; each backend is one module (``file``,
``s3``), as transparency-dev/tessera keeps storage/posix and storage/aws apart.
Every name is importable from here, as it was from the one module this was.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from ...errors import UsageError
from .base import (
    MAX_KEY_BYTES,
    READ_BLOCK,
    TMP_PREFIX,
    DeleteResult,
    DigestMismatch,
    ObjectConflict,
    ObjectInfo,
    ObjectNotFound,
    PutResult,
    Store,
    StoreError,
    StoreOptions,
    StoreUnavailable,
    _checked_options,
    check_key,
)
from .file import FileStore

__all__ = [
    "DELETE_BATCH",
    "HEAD_FIRST_BYTES",
    "MAX_KEY_BYTES",
    "MAX_PUT_BYTES",
    "READ_BLOCK",
    "TMP_PREFIX",
    "DeleteResult",
    "DigestMismatch",
    "FileStore",
    "ObjectConflict",
    "ObjectInfo",
    "ObjectNotFound",
    "PutResult",
    "S3Store",
    "Store",
    "StoreError",
    "StoreOptions",
    "StoreUnavailable",
    "check_key",
    "open_store",
]

# The s3 backend loads botocore: imported on first use, so that reading the
# configuration (which holds StoreOptions) or a file:// store does not pay for it.
_S3_NAMES = ("S3Store", "DELETE_BATCH", "HEAD_FIRST_BYTES", "MAX_PUT_BYTES")


def __getattr__(name: str) -> Any:
    if name in _S3_NAMES:
        from . import s3

        return getattr(s3, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    from .s3 import BUCKET_NAME, S3Store

    bucket = parts.netloc
    if not BUCKET_NAME.match(bucket):
        shown = f" {bucket!r}" if ":" not in bucket else ""  # "user:secret" or "host:port": not echoed
        raise UsageError(f"invalid bucket name{shown} in s3:// store URL (3-63 of a-z, 0-9, '.', '-')")
    prefix = unquote(parts.path).strip("/")
    if prefix:
        check_key(prefix)
    return S3Store(bucket, prefix, opts)
