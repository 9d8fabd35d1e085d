"""HMAC key files: 32 bytes written as 64 lowercase hex characters, mode 0600."""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

from .errors import KeyFileError
from .files import create_exclusive
from .regular import open_regular

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


def exposed(path: str | os.PathLike[str], what: str = "key file") -> str | None:
    """Why a secret file is exposed (readable by group or others), or None. A command that
    signs refuses such a file; one that only verifies warns (the CLI decides which)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None  # loading it reports the problem
    if mode & 0o044:
        return f"{what} {path} is readable by group or others (mode {mode & 0o777:04o}): chmod 600 {path}"
    return None


def load_key_file(path: str | os.PathLike[str]) -> bytes:
    """Read a key file; any problem is a KeyFileError naming the file, never its content."""
    try:
        with open_regular(path) as f:
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
    create_secret_file(path, key.hex().encode("ascii") + b"\n")
    return key_id(key)


def create_secret_file(
    path: str | os.PathLike[str], data: bytes, what: str = "key", file_what: str = "key file"
) -> None:
    """files.create_exclusive with the errors a key command reports (KeyFileError, one line)."""
    target = Path(path)
    try:
        create_exclusive(target, data)
    except FileExistsError:
        raise KeyFileError(f"{target} exists; refusing to overwrite a {what}") from None
    except OSError as exc:
        raise KeyFileError(f"cannot create {file_what} {target}: {exc.strerror}") from None
