"""Reading S3's answers: error codes grouped by what they mean for the caller, the
HTTP status, a HEAD's SHA-256, and an endpoint URL safe to print."""

from __future__ import annotations

import base64
import binascii
from typing import Any
from urllib.parse import urlsplit

from botocore.exceptions import ClientError, NoRegionError, ProfileNotFound

from .base import _HEX64

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
