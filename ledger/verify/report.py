"""What verification found: per file (``FileReport``, its ``FirstError``) and for a
whole run (``VerifyReport``). The CLI renders these; nothing here prints."""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import format as fmt
from ..errors import failure_text
from ..merkle import EMPTY_ROOT, CompactRange


@dataclass
class FirstError:
    """The first thing in a file that does not verify; prints as ``line N: reason: detail``
    (``reason: detail`` when it is not tied to a line), errors.failure_text's one shape."""

    line: int | None  # 1-based
    seq: int | None
    reason: str
    detail: str

    def __str__(self) -> str:
        return failure_text(self.line, self.reason, self.detail)

    def as_dict(self) -> dict:
        return {"line": self.line, "seq": self.seq, "reason": self.reason, "detail": self.detail}


@dataclass
class FileReport:
    path: str
    events: int = 0
    bytes: int = 0
    sealed: bool = False
    seal_reason: str | None = None
    checkpoints: int = 0
    signed_size: int = 0  # size of the last checkpoint that verified
    signers: list[str] = field(default_factory=list)
    signed_by: list[dict] = field(default_factory=list)  # per checkpoint: line, size, keys
    root: str = EMPTY_ROOT.hex()
    chain: str = ""
    signatures: str = "unchecked"
    torn_tail_bytes: int = 0
    first_error: FirstError | None = None
    session: str | None = None
    origin: str | None = None
    prev: fmt.PrevLink | None = None
    notes: list[str] = field(default_factory=list)
    # The tree of the lines that verified, for a writer resuming this session.
    tree: CompactRange | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.first_error is None

    def as_dict(self) -> dict:
        return {
            "path": self.path,
            "session": self.session,
            "events": self.events,
            "sealed": self.sealed,
            "seal_reason": self.seal_reason,
            "checkpoints": self.checkpoints,
            "signed_size": self.signed_size,
            "signers": self.signers,
            "signed_by": self.signed_by,
            "root": self.root,
            "chain": self.chain,
            "signatures": self.signatures,
            "torn_tail_bytes": self.torn_tail_bytes,
            "first_error": self.first_error.as_dict() if self.first_error else None,
            "notes": self.notes,
        }


@dataclass
class VerifyReport:
    files: list[FileReport]
    # capture_verify.CaptureCheck: the pcaps the verified sessions recorded (issue 11 item 2).
    captures: list = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # e.g. what was skipped, and why

    @property
    def ok(self) -> bool:
        return bool(self.files) and all(f.ok for f in self.files) and all(c.ok for c in self.captures)

    def as_dict(self) -> dict:
        return {
            "ok": self.ok,
            "files": [f.as_dict() for f in self.files],
            "captures": [c.as_dict() for c in self.captures],
            "notes": self.notes,
        }
