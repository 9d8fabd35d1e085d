"""Reading a session file backwards, block by block from its end: the backlog of
``tail -n N`` costs what the N lines cost, whatever the size of the file."""

from __future__ import annotations

import os
from collections.abc import Iterator

from .. import format as fmt

BACK_BLOCK = 64 * 1024


def lines_backward(fd: int, end: int, block: int = BACK_BLOCK) -> Iterator[tuple[int, bytes | None]]:
    """(offset, line with its LF) of the complete lines in bytes [0, end), last first.

    Precondition: ``end`` is 0 or just after an LF. Reads blocks backwards from
    ``end``; a line longer than MAX_LINE_BYTES yields (offset it ends at, None)
    and stops, never buffered whole.
    """
    pos = end
    buf = b""
    while pos > 0:
        n = min(block, pos)
        pos -= n
        buf = os.pread(fd, n, pos) + buf
        if pos == 0:
            start = 0
        else:
            nl = buf.find(b"\n")
            if nl == len(buf) - 1:  # no complete line in buf yet: read more, faster
                if len(buf) > fmt.MAX_LINE_BYTES + 1:
                    yield pos + len(buf), None
                    return
                block = min(block * 2, 4 * 2**20)
                continue
            start = nl + 1
        parts = buf[start:].split(b"\n")
        parts.pop()  # buf ends in LF
        off = pos + len(buf)
        for part in reversed(parts):
            off -= len(part) + 1
            yield off, part + b"\n"
        buf = buf[:start]


def last_boundary(fd: int, size: int) -> int:
    """The offset just after the last LF in bytes [0, size) (0 if none)."""
    pos = size
    block = BACK_BLOCK
    while pos > 0:
        n = min(block, pos)
        pos -= n
        i = os.pread(fd, n, pos).rfind(b"\n")
        if i >= 0:
            return pos + i + 1
        block = min(block * 2, 4 * 2**20)
    return 0
