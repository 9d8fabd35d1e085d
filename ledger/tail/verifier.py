"""``TailVerifier``: SPEC.md section 5 for one session file, fed line by line as tail reads it.

The choice: **the followed session is verified from its line 0**, streamed once at
start with ledger.verify's own chunk scanner (in parallel for large files), then
incrementally as lines arrive. Starting mid-file would leave checkpoints unverifiable:
a checkpoint commits to MTH_n, and MTH_n cannot be recomputed without leaves 0..n-1;
with only the chain from an anchor, an edit that recomputes chain values after the
anchor goes unnoticed even with a key. Reading from line 0 costs one pass over the
session (bounded by the writer's ``rotate_bytes``, 64 MiB by default: a fraction of a
second) and only with ``verify``; without it nothing before the backlog is read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import format as fmt
from ..errors import EvidenceError
from ..verify import IncrementalCheck, Policy

if TYPE_CHECKING:
    from ..verify import FirstError

ANY_PREV = object()  # no expectation on prev


def failure(display: str, e: FirstError | None) -> EvidenceError:
    """A verification failure as tail raises it: "FILE: line N: reason: detail"."""
    where = f"line {e.line}: " if e and e.line is not None else ""
    what = f"{e.reason}: {e.detail}" if e else "does not verify"
    return EvidenceError(f"{display}: {where}{what}", path=display, line=e.line if e else None)


def _first_error(check: IncrementalCheck, display: str) -> EvidenceError:
    return failure(display, check.report.first_error)


class TailVerifier:
    """SPEC.md section 5 for one session file, fed line by line as it is read.

    Always starts at line 0 (see this module's docstring for why): ``verify_prefix``
    streams bytes [0, end) through ledger.verify.IncrementalCheck
    (shape, seq, chain, checkpoints' size, root, chain and, given keys, signatures),
    then ``feed`` checks each further batch of lines with the same code, keeping
    the Merkle tree as a compact range (O(log n) memory). Unsealed is not an error
    here: the session is live. ``expected_prev``, when given, is what line 0's
    ``prev`` must say (the session sealed just before this one).
    """

    def __init__(
        self, path: str, keys: tuple[bytes, ...] = (), expected_prev: object = ANY_PREV, jobs: int = 0
    ) -> None:
        self.path = path
        self.policy = Policy(keys=keys)
        self.jobs = jobs
        self._check = IncrementalCheck(path, self.policy)
        self._expected_prev = expected_prev

    @classmethod
    def with_policy(cls, path: str, policy: Policy, expected_prev: object = ANY_PREV, jobs: int = 0) -> TailVerifier:
        """Trusting every kind of key ``policy`` holds (HMAC, Ed25519 verifiers, forward-secure seeds)."""
        v = cls(path, expected_prev=expected_prev, jobs=jobs)
        v.policy = policy
        v._check = IncrementalCheck(path, policy)
        return v

    @property
    def keys(self) -> tuple[bytes, ...]:
        return self.policy.keys

    # state
    @property
    def lines(self) -> int:
        return self._check.lines

    @property
    def last_chain(self) -> bytes:
        return self._check.last_chain

    @property
    def sealed(self) -> bool:
        return self._check.sealed

    @property
    def checkpoints(self) -> int:
        return self._check.report.checkpoints

    @property
    def prev(self) -> fmt.PrevLink | None:
        return self._check.report.prev

    @property
    def opened(self) -> bool:
        return self._check.report.session is not None

    def summary(self) -> fmt.PrevLink:
        """What the next session's ``prev`` must say about this one (meaningful once sealed)."""
        r = self._check.report
        return fmt.PrevLink(
            session=r.session or "", size=self.lines, root=self._check.root().hex(), chain=self.last_chain.hex()
        )

    # checking
    def verify_prefix(self, end: int, source: str | None = None) -> None:
        """Check bytes [0, end) of the file (``source``: where to read it, default ``path``).

        Precondition: nothing fed yet; ``end`` is at a line boundary.
        """
        if self.lines:
            raise ValueError("verify_prefix must come first")
        if not self._check.scan_prefix(end, source, self.jobs):
            raise _first_error(self._check, self.path)
        self._check_prev()

    def feed(self, lines: list[bytes]) -> tuple[int, EvidenceError | None]:
        """Check the next lines (without their LF). Returns how many hold, and the
        error of the first that does not (None if all hold)."""
        if not lines:
            return 0, None
        before = self._check.lines
        if not self._check.feed(lines):
            return self._check.lines - before, _first_error(self._check, self.path)
        err = self._check_prev()
        if err is not None:
            return 0, err
        return len(lines), None

    def _check_prev(self) -> EvidenceError | None:
        if self._expected_prev is ANY_PREV or not self.opened:
            return None
        expected, self._expected_prev = self._expected_prev, ANY_PREV
        if self.prev == expected:
            return None
        name = expected.session if isinstance(expected, fmt.PrevLink) else "?"
        found = "null" if self.prev is None else f"{self.prev.session} ({self.prev.size} lines)"
        self._check.fail(1, 0, "prev_mismatch", f"prev is {found}, not sealed session {name} that precedes it")
        return _first_error(self._check, self.path)

    def recheck(
        self, end: int, source: str | None = None, lines: int | None = None, chain: bytes | None = None
    ) -> None:
        """Re-verify bytes [0, end) as they are now: raise if they no longer verify or no
        longer end in the chain value read before (an edit with recomputed hashes).
        ``lines``/``chain``: what [0, end) held when read (default: everything fed)."""
        lines = self.lines if lines is None else lines
        chain = self.last_chain if chain is None else chain
        fresh = TailVerifier.with_policy(self.path, self.policy, jobs=self.jobs)
        if not fresh._check.scan_prefix(end, source, self.jobs):
            err = _first_error(fresh._check, self.path)
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
