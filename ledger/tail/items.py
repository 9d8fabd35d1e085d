"""What ``follow()`` is asked for (``TailOptions``) and what it yields (``TailItem``),
and which lines an option set lets through."""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import NamedTuple

from ..errors import UsageError
from ..verify import Policy, parse_header
from ..when import parse_when, stored_ts
from .watch import POLL_INTERVAL_S

# ---- what follow() yields -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TailEvent:
    """One stored line. ``raw`` is the line exactly as stored, LF included.

    ``seq``, ``ts``, ``kind`` and ``data`` (raw JSON bytes) are None for a line not
    in the v1 shape (only possible without ``verify``).
    """

    raw: bytes
    seq: int | None
    ts: str | None
    kind: str | None
    data: bytes | None
    namespace: str
    session: str
    path: Path


@dataclass(frozen=True, slots=True)
class SessionChange:
    """The next event comes from another session of ``namespace`` (None: the first shown)."""

    namespace: str
    session: str
    path: Path
    previous: str | None


@dataclass(frozen=True, slots=True)
class Verified:
    """A session checked from seq 0 up to ``lines`` lines; later lines are checked as read."""

    namespace: str
    session: str
    path: Path
    lines: int
    checkpoints: int
    sealed: bool
    keys: int  # trusted HMAC keys
    whole: bool  # an older session verified whole (verify_file), not followed
    verifiers: int = 0  # trusted Ed25519 verifier keys
    fs_seeds: int = 0  # trusted forward-secure seeds; all three 0 = signatures not checked


@dataclass(frozen=True, slots=True)
class Notice:
    """Something the operator should know that is not an event (never evidence of tamper)."""

    message: str


class Idle:
    """follow() has nothing more for now and is about to wait: a good time to flush."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "IDLE"


IDLE = Idle()
TailItem = TailEvent | SessionChange | Verified | Notice | Idle


@dataclass(frozen=True)
class TailOptions:
    """What to show and how to follow. ``lines=None`` means no limit (use with ``since``)."""

    lines: int | None = 10
    follow: bool = False
    kinds: tuple[str, ...] = ()  # fnmatch globs on the kind; any may match
    since: str | None = None  # a ts as stored (see parse_since); older events are skipped
    namespace: str | None = None  # with a root directory: follow only this namespace
    verify: bool = False
    keys: tuple[bytes, ...] = ()  # trusted HMAC keys (with verify)
    verifiers: tuple = ()  # trusted Ed25519 verifier keys, ledger.notes.Verifier (with verify)
    fs_seeds: tuple = ()  # trusted forward-secure seeds, ledger.fsseal.FsSeed (with verify)
    poll: bool | None = None  # force polling; None: LEDGER_TAIL_POLL decides
    poll_interval_s: float = POLL_INTERVAL_S
    stop_fd: int | None = None  # follow() ends when this fd reports an error (a closed pipe)
    jobs: int = 0  # worker processes for verifying large files (0 = one per core)

    def __post_init__(self) -> None:
        if self.lines is not None and self.lines < 0:
            raise UsageError("lines must be >= 0")
        if (self.keys or self.verifiers or self.fs_seeds) and not self.verify:
            raise UsageError("keys are only used with verify")
        if self.poll_interval_s <= 0:
            raise UsageError("poll interval must be positive")

    def trust(self) -> Policy:
        """The keys ``verify`` trusts, as ``ledger verify`` takes them (unsealed is the
        followed session's business: see TailVerifier)."""
        return Policy(keys=self.keys, verifiers=self.verifiers, fs_seeds=self.fs_seeds)


# ---- parsing -------------------------------------------------------------------------


class Parsed(NamedTuple):
    """The header fields of a line in the v1 shape, ``data`` as raw JSON bytes."""

    seq: int
    ts: str
    kind: str
    data: bytes


def parse_since(text: str, now: float | None = None) -> str:
    """``--since``: the shared time grammar (ledger/when.py), as a ts in the stored form,
    which sorts as text like the instants it names. Raises UsageError."""
    return stored_ts(parse_when(text, now, option="--since"))


def parse_line(raw: bytes) -> Parsed | None:
    """seq, ts, kind and raw data of a line (LF optional), or None if not in the v1 shape.

    Uses the verifier's header pattern; checks shape only, not the chain.
    """
    head = parse_header(raw)
    if head is None:
        return None
    seq, ts, kind, start, end = head
    return Parsed(seq, ts, kind, raw[start:end])


def matches(p: Parsed | None, opts: TailOptions) -> bool:
    """Whether a line passes ``kinds`` and ``since`` (a line not in the v1 shape: only when neither is set)."""
    if p is None:
        return not opts.kinds and opts.since is None
    if opts.since is not None and p.ts < opts.since:
        return False
    return not opts.kinds or any(fnmatchcase(p.kind, g) for g in opts.kinds)
