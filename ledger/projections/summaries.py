"""Session summaries: what a session folded through its seal was, to notice a rewrite.

Each summary (size, root, chain: what the next session's ``prev`` names) is computed
from the file's bytes by the verifier's keyless checks, never copied from the file's
own fields, and kept with the identity of the file from before it was read.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from ..format import TRAILER_LEN, ZERO_CHAIN
from ..merkle import Accumulator
from ..verify import Policy, verify_file
from .views import _enc, _Txn


class Folded(msgspec.Struct):
    """A session folded through its seal: its summary (what the next session's ``prev``
    names) as a keyless verification of its bytes gave it, what that verification
    found wrong if anything, and the identity of its file before it was read (all
    zero when it came from the cold store): an unchanged identity lets catch-up skip
    verifying it again."""

    size: int
    root: str
    chain: str
    problem: str = ""
    file_bytes: int = 0
    mtime_ns: int = 0
    ctime_ns: int = 0
    ino: int = 0


_folded_dec = msgspec.json.Decoder(Folded)
_changed_dec = msgspec.json.Decoder(list[str])
_sha256 = hashlib.sha256
Identity = tuple[int, int, int, int]
NO_FILE: Identity = (0, 0, 0, 0)


@dataclass
class _Changes:
    """Rewrites of folded sessions: those recorded before this pass and those it finds.
    With ``keep``, each found is recorded in the transaction that folds the new bytes,
    so views rebuilt from rewritten bytes never exist without the record of it."""

    recorded: list[str]
    keep: bool
    found: list[str] = field(default_factory=list)
    sealed: set[str] = field(default_factory=set)  # sessions folded through their seal

    @property
    def all(self) -> list[str]:
        return self.recorded + self.found

    def add(self, t: _Txn, line: str) -> None:
        self.found.append(line)
        if self.keep:
            t.txn.put(b"changed", _enc.encode(self.all), db=t.dbs["meta"])


def _identity(path: Path) -> Identity:
    """What changes when a file is rewritten: size, mtime, and ctime and inode, which
    an editor restoring the mtime (touch -r) cannot set back."""
    st = path.stat()
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino


def summarize(path: Path, ident: Identity) -> Folded:
    """The summary of a session file, from its bytes: the keyless checks of SPEC
    section 5 (the C helper's speed; one process, no workers forked beside LMDB)."""
    r = verify_file(path, Policy(jobs=1))
    e = r.first_error
    problem = "" if e is None else f"{e.reason} at line {e.line}" if e.line else e.reason
    return Folded(r.events, r.root, r.chain, problem, *ident)


class _Summary:
    """Size, root and chain of lines streamed from the cold store, computed from their
    bytes (SPEC 2.3); local files are summarized by ``summarize`` instead."""

    __slots__ = ("tree", "chain")

    def __init__(self) -> None:
        self.tree = Accumulator()
        self.chain = ZERO_CHAIN

    def add(self, line: bytes) -> None:
        """Line i without its LF: E_i is the line minus the chain member, plus the brace."""
        leaf = _sha256(b"\x00" + line[:-TRAILER_LEN] + b"}").digest()
        self.chain = _sha256(self.chain + leaf).digest()
        self.tree.append(leaf)

    def folded(self) -> Folded:
        return Folded(self.tree.size, self.tree.root().hex(), self.chain.hex())


def _same_summary(a: Folded, b: Folded) -> bool:
    return (a.size, a.root, a.chain, a.problem) == (b.size, b.root, b.chain, b.problem)


def _compare(name: str, old: Folded, new: Folded) -> str | None:
    """One line when session ``name``, folded through its seal before, now differs."""
    if not _same_summary(old, new):
        now = f"{new.size} lines, root {new.root[:16]}.." + (f" ({new.problem})" if new.problem else "")
        return f"session {name} changed after it was folded: {old.size} lines, root {old.root[:16]}.. then, {now} now"
    return None
