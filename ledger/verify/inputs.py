"""Opening what is verified: a regular file and nothing else (a FIFO, socket or device
would block or never end), gzip told by its magic bytes, streams read with ``read(n)``
alone."""

from __future__ import annotations

import os
import stat

from ..errors import InputError

GZIP_MAGIC = b"\x1f\x8b"  # a session's first byte is '{': the two never collide


def not_regular(path: str | os.PathLike[str]) -> str | None:
    """What ``path`` is when it is not a regular file (a FIFO, socket or device would block
    or never end), or None. Follows symlinks; a missing path is None (open() reports it)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    for test, what in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device")):
        if test(mode):
            return what
    return "a block device" if stat.S_ISBLK(mode) else "not a regular file"


def _open_regular(p: str):
    """Open ``p`` for reading without ever blocking: O_NONBLOCK, then refuse anything but a
    regular file (stat then open would leave a window for a FIFO to be swapped in)."""
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except IsADirectoryError:
        raise InputError(f"{p}: is a directory") from None
    except OSError as exc:
        raise InputError(f"{p}: {exc.strerror}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        if stat.S_ISDIR(mode):
            raise InputError(f"{p}: is a directory")
        raise InputError(f"{p}: {not_regular(p) or 'not a regular file'}, not a session file; refusing to read it")
    os.set_blocking(fd, True)
    return open(fd, "rb")


class _Prefixed:
    """``prefix`` followed by ``stream``, for ``read(n)`` alone."""

    def __init__(self, prefix: bytes, stream) -> None:
        self.prefix = prefix
        self.stream = stream

    def read(self, n: int = -1) -> bytes:
        if self.prefix:
            out, self.prefix = (
                (self.prefix, b"") if n < 0 or n >= len(self.prefix) else (self.prefix[:n], self.prefix[n:])
            )
            return out if n < 0 or len(out) == n else out + self.stream.read(n - len(out))
        return self.stream.read(n)


class _CountingReader:
    def __init__(self, stream) -> None:
        self.stream = stream
        self.count = 0

    def read(self, n: int) -> bytes:
        data = self.stream.read(n)
        self.count += len(data)
        return data
