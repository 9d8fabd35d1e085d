"""Reading a file only when it is a regular file, never blocking on one that is not.

A FIFO, socket or device named as a key file, a config, a CA or a note, or planted as
``.last-seal.json`` or ``*.ndjson``, would block ``open()`` or never end. These open with
O_NONBLOCK, check the open file with fstat (no window to swap one in), and refuse
anything else with ``NotRegularFile``: an OSError, so callers that already turn an
OSError into one line (``cannot read key file K: not a regular file (a FIFO)``) need
no change. Pure stdlib.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger("ledger.files")


class NotRegularFile(OSError):
    """A path that is not a regular file, or a small file that is too large."""


def _what(mode: int) -> str:
    for test, what in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return what
    return "not a regular file"


def open_regular(path: str | os.PathLike[str]) -> BinaryIO:
    """Open ``path`` to read, blocking reads, only if it is a regular file (symlinks followed)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFile(errno.EINVAL, f"not a regular file ({_what(mode)})", os.fspath(path))
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return open(fd, "rb")


def read_small(path: str | os.PathLike[str], limit: int) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes; NotRegularFile otherwise."""
    with open_regular(path) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise NotRegularFile(errno.EFBIG, f"larger than {limit} bytes", os.fspath(path))
    return data


def regular_or_warn(path: Path) -> bool:
    """Whether ``path`` found in a directory is a regular file; if not, one logged warning."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return True  # gone or unreadable: opening it reports that
    if stat.S_ISREG(mode):
        return True
    log.warning("%s: %s, not a session file; skipped", path, _what(mode))
    return False
