"""Small file primitives several modules share: hashing a file, making a rename
durable, replacing a file atomically, and creating a secret file that must not
already exist."""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

READ_BLOCK = 1 << 20


def sha256_file(source: str | os.PathLike[str] | BinaryIO) -> tuple[int, str]:
    """(size, hex sha256) of a file, read in blocks from a path or from an open binary file."""
    if isinstance(source, str | os.PathLike):
        with open(source, "rb") as f:
            return sha256_file(f)
    h = hashlib.sha256()
    size = 0
    while block := source.read(READ_BLOCK):
        h.update(block)
        size += len(block)
    return size, h.hexdigest()


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync a directory: a rename or a new name in it survives a crash only after this."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create_exclusive(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to a new file (mode 0600) and fsync it; FileExistsError if it exists.

    For keys and seeds: an existing one is never overwritten. The bytes go to a
    temporary file in the same directory first, which is linked into place (exclusive:
    if the name exists, the other writer won): a write that fails (a full disk) leaves
    nothing behind, never an empty file under the name.
    """
    target = Path(path)
    if os.path.lexists(target):  # said first, even when the disk is full
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(target))
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(target.parent)


def replace_atomic(
    path: str | os.PathLike[str],
    data: bytes,
    mode: int = 0o600,
    *,
    write: Callable[[int, memoryview], int] = os.write,
) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old bytes or the new, never
    a mix, and the new ones survive once this returns: a temp file in the same directory
    (created exclusively, ``mode``), write, fsync, rename over ``path``, fsync of the
    directory (without it the rename itself can be lost).

    The temp name is unique per call and starts with a dot, so two callers never share
    one and no reader of the directory takes it for a session. On any failure the temp
    file is removed and the OSError names ``path``. ``write`` is the raw write, for the
    writer's tests that simulate a full disk.
    """
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        try:
            view = memoryview(data)
            while view:
                view = view[write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
        fsync_dir(target.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OSError(exc.errno, exc.strerror, str(target)) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
