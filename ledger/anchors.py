"""Checkpoints that left the box: the local log must be consistent with each of them.

A consistency proof is worth something only against a checkpoint the verifier did
not get from the log itself (a log asked for both ends can forge both). Two
sources of such checkpoints:

* ``--trust FILE``: a signed note the auditor saved earlier;
* ``--witness URL``: the notes the writer shipped to object storage as it went
  (``<namespace>/checkpoints/<session>/<size>.checkpoint``, written with
  ``If-None-Match`` and, where configured, under Object Lock).

For each, the session with that origin must hold at least ``size`` lines whose
tree has that root, and the RFC 6962 consistency proof from that size to the
file's newest checkpoint must verify. A history rewritten after a host compromise,
even re-signed with the host's own keys, fails here.

``checkpoint_note`` builds the note that is shipped: the checkpoint text, then one
signed-note line per signature. Ed25519 lines are standard; HMAC and forward-secure
MACs are carried as lines named ``hmac-<key id>`` / ``fs-<seed id>-<epoch>`` whose
base64 payload starts with four bytes of the key id, which standard note verifiers
skip as unknown keys.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path

from . import format as fmt
from . import layout, merkle, notes
from .errors import EvidenceError, LedgerError
from .proofs import ProofError, SessionTree, parse_checkpoint_text
from .verify import VerifyReport

EM_DASH = "\u2014"


@dataclass
class Anchor:
    source: str
    ok: bool
    detail: str


def checkpoint_note(text: bytes, sigs: list) -> bytes:
    """The signed note of a checkpoint line's text and signatures (see module doc)."""
    lines = []
    for s in sigs:
        alg, key, sig = (s["alg"], s["key"], s["sig"]) if isinstance(s, dict) else (s.alg, s.key, s.sig)
        if alg == notes.CHECKPOINT_SIG_ALG:
            name = key.rpartition("+")[0]
            lines.append(f"{EM_DASH} {name} {sig}\n")
        elif alg == "hmac-sha256":
            payload = bytes.fromhex(key)[:4] + base64.b64decode(sig)
            lines.append(f"{EM_DASH} hmac-{key} {base64.b64encode(payload).decode()}\n")
        elif alg == "hmac-sha256-fs":
            _, seed_id, epoch = key.split(":")
            payload = bytes.fromhex(seed_id)[:4] + base64.b64decode(sig)
            lines.append(f"{EM_DASH} fs-{seed_id}-{epoch} {base64.b64encode(payload).decode()}\n")
    return text + b"\n" + "".join(lines).encode()


def _note_text(note: bytes) -> bytes:
    split = note.rfind(b"\n\n")
    return note[: split + 1] if split >= 0 else note


def _check_one(source: str, note: bytes, report: VerifyReport, verifiers: list) -> Anchor:
    try:
        text = _note_text(note)
        origin, size, root = parse_checkpoint_text(text)
        signed = ""
        if verifiers:
            opened = notes.open_note(note, verifiers)
            signed = f", signed by {', '.join(opened.verified)}"
    except (EvidenceError, ProofError) as exc:
        return Anchor(source, False, f"not a valid signed checkpoint: {exc}")
    match = [f for f in report.files if f.origin == origin and "://" not in f.path]
    if not match:
        return Anchor(source, False, f"no local session has origin {origin}: the log that made it is missing")
    path = match[0].path
    try:
        tree = SessionTree.load(path)
    except LedgerError as exc:
        return Anchor(source, False, f"{path}: {exc}")
    if tree.size < size:
        return Anchor(
            source, False, f"{path} has {tree.size} lines but a checkpoint of size {size} left the box (cut short)"
        )
    local_root = tree.root(size)
    if local_root != root:
        return Anchor(source, False, f"{path}: the first {size} lines hash to another root: history was rewritten")
    newest = tree.checkpoints[-1].size if tree.checkpoints else size
    if newest > size:
        proof = tree.consistency_path(size, newest)
        if not merkle.verify_consistency(size, newest, root, tree.root(newest), proof):
            return Anchor(source, False, f"{path}: no consistency from size {size} to {newest}")
    return Anchor(source, True, f"{path} extends {origin} at size {size} (to {newest}){signed}")


def check_trusted(report: VerifyReport, saved: list[bytes], verifiers: list) -> list[Anchor]:
    return [_check_one(f"trusted checkpoint {i + 1}", note, report, verifiers) for i, note in enumerate(saved)]


def _stored_checkpoints(store, namespace: str, session: str) -> list:
    """A session's shipped notes: ``<namespace>/checkpoints/<session>/`` of the store, or
    ``checkpoints/<session>/`` when the URL already names the namespace (``file:///cold/ns``,
    as ``verify`` takes a store URL)."""
    found = list(store.list(layout.checkpoints_prefix(namespace, session)))
    if not found and store.url.rstrip("/").endswith("/" + namespace):
        found = list(store.list(f"checkpoints/{session}/"))
    return found


def check_witness(report: VerifyReport, store, verifiers: list) -> list[Anchor]:
    """Every stored checkpoint of every local session in ``report``."""
    out = []
    for f in report.files:
        if not f.origin or "://" in f.path:
            continue
        _, namespace, session = f.origin.split("/", 2)
        for info in _stored_checkpoints(store, namespace, session):
            with store.open(info.key) as obj:
                note = obj.read(1 << 16)
            out.append(_check_one(f"{store.url.rstrip('/')}/{info.key}", note, report, verifiers))
    if not out:
        out.append(Anchor(f"witness {store.url}", False, "no stored checkpoint for any local session"))
    return out


def session_checkpoints(path: Path, start: int = 0) -> tuple[list[tuple[int, bytes]], int]:
    """(size, note) of each checkpoint or seal line from byte ``start``; and the offset reached.

    Only complete lines are read; the offset is where the next call resumes.
    """
    from .reader import decode_line

    found = []
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read()
    end = data.rfind(b"\n") + 1
    origin = None
    if start > 0:
        with open(path, "rb") as f:
            first = f.readline()
        origin = fmt.decode_opened(bytes(decode_line(first.rstrip(b"\n")).data)).origin
    for line in data[:end].split(b"\n")[:-1]:
        e = decode_line(line)
        if e.kind == fmt.KIND_OPENED:
            origin = fmt.decode_opened(bytes(e.data)).origin
        elif e.kind in fmt.SIGNED_KINDS and origin is not None:
            cp = fmt.decode_checkpoint(e.kind, bytes(e.data))
            # A seal's note carries its ``ledger-seal`` extension line: that is what it signs.
            text = fmt.signed_text(origin, cp, bytes.fromhex(cp.root))
            found.append((cp.size, checkpoint_note(text, cp.sigs)))
    return found, start + end
