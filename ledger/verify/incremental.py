"""The checks of section 5 for a file that is still being written: a prefix, then
batches of lines as they come (``ledger tail --verify``).

The choice: **a followed session is verified from its line 0**, streamed once at
start with the chunk scanner of ``verify_file`` (in parallel for large files), then
incrementally as lines arrive. Starting mid-file would leave checkpoints unverifiable:
a checkpoint commits to MTH_n, and MTH_n cannot be recomputed without leaves 0..n-1;
with only the chain from an anchor, an edit that recomputes chain values after the
anchor goes unnoticed even with a key. Reading from line 0 costs one pass over the
session (bounded by the writer's ``rotate_bytes``, 64 MiB by default: a fraction of a
second) and only with ``verify``; without it tail reads nothing before its backlog.
"""

from __future__ import annotations

import dataclasses

from .. import format as fmt
from ..errors import EvidenceError, VerificationFailed
from .filecheck import _FileCheck
from .parallel import _scan_file
from .policy import Policy
from .report import FileReport, FirstError
from .scan import _Chunk, _finish, _Scan, _scan_lines

ANY_PREV = object()  # no expectation on line 0's prev
_TRUST_NOTHING = Policy()


def failure(display: str, e: FirstError | None) -> EvidenceError:
    """A verification failure as a reader that checks as it goes raises it:
    "FILE: line N: reason: detail"."""
    if e is None:
        return EvidenceError(f"{display}: does not verify", path=display)
    return VerificationFailed(display, e.line, e.reason, e.detail)


class IncrementalCheck:
    """SPEC.md section 5 for one file, fed in pieces: ``verify_prefix`` checks bytes
    [0, end) (shape, seq, chain, checkpoints' size, root, chain and, given trusted keys,
    signatures), then ``feed`` checks each further batch of lines with the same code as
    ``verify_file``, keeping the Merkle tree as a compact range (O(log n) memory).
    Unsealed is not an error here: the file is live.

    ``policy``: the keys trusted (its ``allow_unsealed`` is ignored). ``expected_prev``,
    when given, is what line 0's ``prev`` must say (the session sealed just before this
    one). ``jobs``: worker processes for a large prefix (0 = one per core).
    ``TailVerifier`` is the same class, under the name tail used.
    """

    def __init__(
        self, path: str, policy: Policy = _TRUST_NOTHING, expected_prev: object = ANY_PREV, jobs: int = 0
    ) -> None:
        self.path = path
        self.policy = policy
        self.jobs = jobs
        self._check = _FileCheck(path, dataclasses.replace(policy, allow_unsealed=True))
        self._expected_prev = expected_prev

    # ---- what holds so far

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

    @property
    def checkpoints(self) -> int:
        return self._check.report.checkpoints

    @property
    def prev(self) -> fmt.PrevLink | None:
        return self._check.report.prev

    @property
    def opened(self) -> bool:
        return self._check.report.session is not None

    def root(self) -> bytes:
        """MTH of the lines that held so far."""
        return self._check.acc.root()

    def summary(self) -> fmt.PrevLink:
        """What the next session's ``prev`` must say about this one (meaningful once sealed)."""
        return fmt.PrevLink(
            session=self.report.session or "", size=self.lines, root=self.root().hex(), chain=self.last_chain.hex()
        )

    # ---- checking

    def verify_prefix(self, end: int, source: str | None = None) -> None:
        """Check bytes [0, end) of the file (``source``: where to read it, default ``path``).
        Raises EvidenceError at the first line that does not hold.

        Precondition: nothing fed yet; ``end`` is at a line boundary.
        """
        if self.lines:
            raise ValueError("verify_prefix must come first")
        if not self._scan_prefix(end, source):
            raise self._error()
        err = self._check_prev()
        if err is not None:
            raise err

    def feed(self, lines: list[bytes]) -> tuple[int, EvidenceError | None]:
        """Check the next complete lines (without their LF). Returns how many hold, and
        the error of the first that does not (None if all hold)."""
        if not lines:
            return 0, None
        before = self.lines
        out = _Chunk()
        st = _Scan(self.last_chain, before == 0)
        _scan_lines(lines, st, out)
        _finish(st, out)
        if not self._check.chunk(out):
            return self.lines - before, self._error()
        err = self._check_prev()
        if err is not None:
            return 0, err
        return len(lines), None

    def recheck(
        self, end: int, source: str | None = None, lines: int | None = None, chain: bytes | None = None
    ) -> None:
        """Re-verify bytes [0, end) as they are now: raise if they no longer verify or no
        longer end in the chain value read before (an edit with recomputed hashes).
        ``lines``/``chain``: what [0, end) held when read (default: everything fed)."""
        lines = self.lines if lines is None else lines
        chain = self.last_chain if chain is None else chain
        fresh = IncrementalCheck(self.path, self.policy, jobs=self.jobs)
        if not fresh._scan_prefix(end, source):
            err = fresh._error()
            raise EvidenceError(f"{err} (changed after it was read)", path=err.path, line=err.line)
        if fresh.lines < lines:
            line = fresh.lines + 1
            raise EvidenceError(
                f"{self.path}: line {line}: truncated: only {fresh.lines} of the {lines} lines read are left",
                path=self.path,
                line=line,
            )
        if fresh.last_chain != chain or fresh.lines != lines:
            raise EvidenceError(
                f"{self.path}: line {lines}: chain_mismatch: lines 1-{lines} were rewritten after they "
                "were read (chain values recomputed); the edit is at or before this line",
                path=self.path,
                line=lines,
            )

    def _scan_prefix(self, end: int, source: str | None) -> bool:
        return all(self._check.chunk(c) for c in _scan_file(source or self.path, end, self.jobs))

    def _error(self) -> EvidenceError:
        return failure(self.path, self.report.first_error)

    def _check_prev(self) -> EvidenceError | None:
        """Once line 0 is read: its prev must be the one expected (checked once)."""
        if self._expected_prev is ANY_PREV or not self.opened:
            return None
        expected, self._expected_prev = self._expected_prev, ANY_PREV
        if self.prev == expected:
            return None
        name = expected.session if isinstance(expected, fmt.PrevLink) else "?"
        found = "null" if self.prev is None else f"{self.prev.session} ({self.prev.size} lines)"
        self._check.fail(1, 0, "prev_mismatch", f"prev is {found}, not sealed session {name} that precedes it")
        return self._error()


# The name ``ledger tail`` used for it (ledger.tail re-exports it).
TailVerifier = IncrementalCheck
