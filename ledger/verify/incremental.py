"""The checks of section 5 for a file that is still being written: a prefix, then
batches of lines as they come (``ledger tail --verify``)."""

from __future__ import annotations

import dataclasses

from .filecheck import _FileCheck
from .parallel import _scan_file
from .policy import Policy
from .report import FileReport
from .scan import _Chunk, _finish, _Scan, _scan_lines


class IncrementalCheck:
    """The checks of section 5 for one file, fed in pieces: a prefix of the file, then
    batches of lines as they are written. Same code as verify_file; the Merkle tree is a
    compact range (O(log n) memory). Unsealed is not an error here (the file is live)."""

    def __init__(self, path: str, policy: Policy) -> None:
        self.path = path
        self._check = _FileCheck(path, dataclasses.replace(policy, allow_unsealed=True))

    @property
    def report(self) -> FileReport:
        """What holds so far (first_error set once something does not)."""
        return self._check.report

    @property
    def lines(self) -> int:
        return self._check.lines

    @property
    def last_chain(self) -> bytes:
        return self._check.last_chain

    @property
    def sealed(self) -> bool:
        return self._check.sealed_line is not None

    def root(self) -> bytes:
        """MTH of the lines that held so far."""
        return self._check.acc.root()

    def scan_prefix(self, end: int, source: str | None = None, jobs: int = 0) -> bool:
        """Check bytes [0, end) of the file (or of ``source``). Precondition: nothing fed yet
        and ``end`` at a line boundary. False once a line fails (see ``report``)."""
        if self.lines:
            raise ValueError("scan_prefix must come first")
        return all(self._check.chunk(c) for c in _scan_file(source or self.path, end, jobs))

    def feed(self, lines: list[bytes]) -> bool:
        """Check the next complete lines (without LF). False once one fails."""
        out = _Chunk()
        st = _Scan(self._check.last_chain, self._check.lines == 0)
        _scan_lines(lines, st, out)
        _finish(st, out)
        return self._check.chunk(out)

    def fail(self, line: int | None, seq: int | None, reason: str, detail: str) -> None:
        """Record a failure found by the caller (e.g. a broken prev link across files)."""
        self._check.fail(line, seq, reason, detail)
