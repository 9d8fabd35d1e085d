"""Reading events back: session files of a namespace, line by line, as typed records.

For consumers that need the events, not the proof (projections, summaries): each
complete line is decoded once into ``StoredEvent`` with ``data`` kept as raw bytes.
A torn final line is never yielded. Integrity is ``verify``'s job; readers that
must not serve a changed history compare chain values (see ``projections``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgspec

from .layout import session_files
from .regular import regular_or_warn

BLOCK = 1 << 20


class StoredEvent(msgspec.Struct):
    v: int
    seq: int
    ts: str
    kind: str
    data: msgspec.Raw
    chain: str


_decode = msgspec.json.Decoder(StoredEvent).decode


def session_paths(namespace_dir: Path) -> list[Path]:
    """Session files of one namespace in session (time) order."""
    return [p for p in session_files(namespace_dir) if regular_or_warn(p)]  # a FIFO never blocks a reader


def iter_lines(path: Path, start_seq: int = 0) -> Iterator[tuple[int, bytes]]:
    """(line index, line without LF) for each complete line from ``start_seq`` on."""
    with open(path, "rb") as f:
        index = 0
        carry = b""
        while block := f.read(BLOCK):
            parts = (carry + block).split(b"\n")
            carry = parts.pop()
            for line in parts:
                if index >= start_seq:
                    yield index, line
                index += 1


def decode_line(line: bytes) -> StoredEvent:
    return _decode(line)
