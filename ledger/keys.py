"""HMAC key files: 32 bytes written as 64 lowercase hex characters, mode 0600."""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

from .errors import KeyFileError

KEY_BYTES = 32
KEY_ENV = "LEDGER_HMAC_KEY_FILE"


def key_id(key: bytes) -> str:
    """The public name of a key: the first 16 hex characters of SHA-256(key)."""
    return hashlib.sha256(key).hexdigest()[:16]


def parse_key(text: bytes) -> bytes:
    """Decode key-file contents: 64 hex characters and at most one trailing newline."""
    if text.endswith(b"\n"):
        text = text[:-1]
    if len(text) != 2 * KEY_BYTES:
        raise KeyFileError(f"expected {2 * KEY_BYTES} hex characters, found {len(text)} bytes")
    try:
        return bytes.fromhex(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise KeyFileError("key is not hexadecimal") from None


def load_key_file(path: str | os.PathLike[str]) -> bytes:
    """Read a key file; any problem is a KeyFileError naming the file, never its content."""
    try:
        with open(path, "rb") as f:
            text = f.read(4 * KEY_BYTES)
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror}") from None
    try:
        return parse_key(text)
    except KeyFileError as exc:
        raise KeyFileError(f"bad key file {path}: {exc}") from None


def write_key_file(path: str | os.PathLike[str]) -> str:
    """Create a new random key at ``path`` (mode 0600, never overwriting); return its id."""
    key = secrets.token_bytes(KEY_BYTES)
    target = Path(path)
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError(f"{target} exists; refusing to overwrite a key") from None
    except OSError as exc:
        raise KeyFileError(f"cannot create key file {target}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as f:
        f.write(key.hex().encode("ascii") + b"\n")
        f.flush()
        os.fsync(f.fileno())
    return key_id(key)
