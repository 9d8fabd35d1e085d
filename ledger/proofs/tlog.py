"""C2SP tlog-proof@v1: one entry, its inclusion proof and the signed checkpoint, as text.

The text (c2sp.org/tlog-proof@v1; the entry goes in the spec's ``extra`` line,
base64 of the entry's line exactly as written, LF included)::

    c2sp.org/tlog-proof@v1
    extra <base64(line)>
    index <seq>
    <base64(hash)>            one per line, leaf's sibling first
    <empty line>
    <signed checkpoint note>

``verify_tlog_proof`` checks, in order: the proof's syntax; the note's signatures
(notes.open_note); the checkpoint text; the origin; the entry's shape and seq; the
inclusion of the entry's leaf hash in the checkpoint's root.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from .. import format as fmt
from ..errors import EvidenceError
from ..merkle import leaf_hash, root_from_inclusion_proof
from ..notes import OpenedNote, Verifier, open_note
from .tree import InclusionProof, _b64, has_trailer

TLOG_PROOF_HEADER = b"c2sp.org/tlog-proof@v1"
# A tree of fewer than 2**64 leaves has inclusion paths of at most 64 hashes.
MAX_PROOF_HASHES = 64

_SEQ = re.compile(rb'\A\{"v":1,"seq":(0|[1-9][0-9]{0,18}),')
_DECIMAL = re.compile(rb"\A(0|[1-9][0-9]{0,18})\Z")
_INDEX = re.compile(rb"\Aindex (0|[1-9][0-9]{0,18})\Z")
_B64_HASH = re.compile(rb"\A[A-Za-z0-9+/]{43}=\Z")
_B64 = re.compile(rb"\A(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?\Z")


class ProofError(EvidenceError):
    """A proof does not verify. ``reason``: malformed, origin_mismatch, bad_entry,
    index_mismatch, bad_proof (wrong length or index out of range), root_mismatch."""

    def __init__(self, message: str, *, reason: str, path: str = "", line: int | None = None) -> None:
        super().__init__(message, path=path, line=line)
        self.reason = reason


# ---- checkpoint text -------------------------------------------------------------------


def parse_checkpoint_text(text: bytes) -> tuple[str, int, bytes]:
    """(origin, size, root) of a C2SP tlog-checkpoint body; raises ProofError(malformed).

    At least three non-empty lines, text ending in LF: a non-empty origin, the size
    in decimal without leading zeros, base64 of a 32-byte root; extension lines
    (non-empty) are allowed and ignored.
    """
    if not text.endswith(b"\n"):
        raise ProofError("checkpoint text does not end in a newline", reason="malformed")
    lines = text[:-1].split(b"\n")
    if len(lines) < 3 or not all(lines):
        raise ProofError("checkpoint needs origin, size and root on non-empty lines", reason="malformed")
    try:
        origin = lines[0].decode("utf-8")
    except UnicodeDecodeError:
        raise ProofError("checkpoint origin is not UTF-8", reason="malformed") from None
    if not _DECIMAL.match(lines[1]):
        raise ProofError("checkpoint size is not a decimal without leading zeros", reason="malformed")
    if not _B64_HASH.match(lines[2]):
        raise ProofError("checkpoint root is not base64 of 32 bytes", reason="malformed")
    return origin, int(lines[1]), base64.b64decode(lines[2], validate=True)


# ---- tlog-proof@v1 ----------------------------------------------------------------------


@dataclass(frozen=True)
class TlogProof:
    """The parts of a tlog-proof, parsed but not verified."""

    index: int
    path: list[bytes]
    note: bytes  # the signed checkpoint, verbatim
    extra: bytes | None = None  # for ledger: the entry's line as written


@dataclass(frozen=True)
class TlogProofResult:
    """What a verified tlog-proof shows."""

    origin: str
    size: int
    root: bytes
    index: int
    entry: bytes  # the line as written
    event: bytes  # E_index, the bytes the leaf hash is over
    leaf: bytes
    verified: list[str]  # names of the trusted keys that signed the checkpoint
    unknown: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "ok": True,
            "origin": self.origin,
            "size": self.size,
            "root": self.root.hex(),
            "index": self.index,
            "entry": _b64(self.entry),
            "leaf": self.leaf.hex(),
            "verified": self.verified,
            "unknown": self.unknown,
        }


def _note_text(note: bytes) -> bytes:
    split = note.rfind(b"\n\n")
    return note[: split + 1] if split >= 0 else b""


def encode_tlog_proof(p: InclusionProof, note: bytes) -> bytes:
    """The tlog-proof@v1 text of ``p`` with its signed checkpoint ``note``.

    Precondition: the note's text is p's checkpoint text (checked; ValueError).
    """
    if _note_text(note) != p.checkpoint_text():
        raise ValueError("the note is not a signed checkpoint of this proof's tree")
    lines = [TLOG_PROOF_HEADER, b"extra " + base64.b64encode(p.entry), b"index %d" % p.index]
    lines += [base64.b64encode(h) for h in p.path]
    return b"\n".join(lines) + b"\n\n" + note


def parse_tlog_proof(data: bytes) -> TlogProof:
    """Parse tlog-proof@v1 text (syntax only); raises ProofError(malformed)."""
    split = data.find(b"\n\n")
    if split < 0:
        raise ProofError("no empty line before the checkpoint", reason="malformed")
    head, note = data[:split].split(b"\n"), data[split + 2 :]
    if head[0] != TLOG_PROOF_HEADER:
        raise ProofError("first line is not c2sp.org/tlog-proof@v1", reason="malformed")
    rest = head[1:]
    extra = None
    if rest and rest[0].startswith(b"extra "):
        extra = _parse_extra(rest[0])
        rest = rest[1:]
    m = _INDEX.match(rest[0]) if rest else None
    if m is None:
        raise ProofError("no 'index <n>' line", reason="malformed")
    path = _parse_hashes(rest[1:])
    if not note:
        raise ProofError("no checkpoint after the empty line", reason="malformed")
    return TlogProof(index=int(m.group(1)), path=path, note=note, extra=extra)


def _parse_extra(line: bytes) -> bytes:
    """The bytes of an ``extra <base64>`` line. Precondition: it starts with ``extra ``."""
    value = line[len(b"extra ") :]
    if not value or not _B64.match(value):
        raise ProofError("extra is not base64", reason="malformed")
    return base64.b64decode(value, validate=True)


def _parse_hashes(lines: list[bytes]) -> list[bytes]:
    """The proof's hashes, one base64 hash a line, at most MAX_PROOF_HASHES."""
    if len(lines) > MAX_PROOF_HASHES:
        raise ProofError(f"more than {MAX_PROOF_HASHES} proof hashes", reason="malformed")
    if not all(_B64_HASH.match(h) for h in lines):
        raise ProofError("a proof line is not base64 of a 32-byte hash", reason="malformed")
    return [base64.b64decode(h, validate=True) for h in lines]


def verify_tlog_proof(data: bytes, verifiers: Iterable[Verifier], origin: str | None = None) -> TlogProofResult:
    """Verify a ledger tlog-proof against trusted Ed25519 note keys.

    1. parse the proof; 2. open the checkpoint note (notes.NoteError on a bad or
    missing trusted signature); 3. parse the checkpoint text; 4. its origin equals
    ``origin`` when given; 5. ``extra`` is a complete ledger line whose seq is the
    index; 6. leaf_hash(E_index) with the path gives the checkpoint's root.
    Every failure raises an EvidenceError (ProofError or NoteError).
    """
    proof = parse_tlog_proof(data)  # 1
    opened: OpenedNote = open_note(proof.note, list(verifiers))  # 2
    cp_origin, size, root = parse_checkpoint_text(opened.text)  # 3
    if origin is not None and cp_origin != origin:  # 4
        raise ProofError(f"checkpoint origin {cp_origin!r} is not {origin!r}", reason="origin_mismatch")
    entry, event = _entry_event(proof)  # 5
    leaf = leaf_hash(event)
    _verify_inclusion(leaf, proof.index, size, proof.path, root)  # 6
    return TlogProofResult(
        origin=cp_origin,
        size=size,
        root=root,
        index=proof.index,
        entry=entry,
        event=event,
        leaf=leaf,
        verified=opened.verified,
        unknown=opened.unknown,
    )


def _entry_event(proof: TlogProof) -> tuple[bytes, bytes]:
    """(the entry's line, E_index): ``extra`` holds one complete ledger line whose seq
    is the proof's index; ProofError(bad_entry or index_mismatch) if not."""
    entry = proof.extra
    if entry is None or entry.count(b"\n") != 1 or not has_trailer(entry):
        raise ProofError("extra does not hold one complete ledger line", reason="bad_entry")
    event = fmt.event_of_line(entry)
    m = _SEQ.match(event)
    if m is None:
        raise ProofError("entry does not start with a ledger v1 header", reason="bad_entry")
    if int(m.group(1)) != proof.index:
        raise ProofError(f"entry has seq {int(m.group(1))}, proof index is {proof.index}", reason="index_mismatch")
    return entry, event


def _verify_inclusion(leaf: bytes, index: int, size: int, path: list[bytes], root: bytes) -> None:
    """transparency-dev's VerifyInclusion: ``path`` leads from ``leaf`` at ``index`` to
    ``root`` of a tree of ``size``; ProofError(bad_proof or root_mismatch) if not."""
    calculated = root_from_inclusion_proof(leaf, index, size, path)
    if calculated is None:
        raise ProofError(
            f"inclusion proof of {len(path)} hashes does not fit index {index} in size {size}",
            reason="bad_proof",
        )
    if calculated != root:
        raise ProofError("inclusion proof does not lead to the checkpoint's root", reason="root_mismatch")
