"""The seal amendment (SPEC 4.3): a ``session.sealed`` line signs its seal text.

A seal's signatures cover the checkpoint text for its size followed by the extension
line ``ledger-seal <reason> <D>``. These tests play the insider who can write the file
but holds no key:

1. cut a session right after each of its checkpoints and replay that checkpoint's
   signatures as a seal, with every kind of signature (HMAC, Ed25519, forward-secure):
   the seal line fails as ``bad_signature``;
2. edit a seal's ``reason`` or drop count and recompute its chain value: the same;
3. a reason outside ``[a-z][a-z_]{0,31}`` is ``bad_checkpoint`` with or without a key;
4. the note of a seal (``ledger checkpoint``, the checkpoints shipped off the box,
   ``--trust``) carries the extension line and still opens as a C2SP signed note.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ledger import anchors, fsseal, notes, proofs
from ledger import format as fmt
from ledger.format import format_ts
from ledger.merkle import leaf_hash
from ledger.session import SessionBuilder
from ledger.verify import Policy, verify_file, verify_path

KEY = bytes(range(32))
NS = "edge-1"
SID = "20261123T200000.000000Z-se01"
T0 = 1_795_464_000  # 2026-11-23T20:00:00Z
SEED = bytes(range(100, 132))
FS = fsseal.FsSeed(SEED, T0 - 60, 3600)
SIGNER = notes.Signer("alpha", bytes(range(7, 39)))
SIZE, EVERY = 30, 5  # checkpoints at seq 5, 10, 15, 20, 25; the seal at seq 30


def ts(seq: int) -> str:
    return format_ts(T0 + seq)


def build(reason: str = "closed", dropped: int | dict = 0) -> list[bytes]:
    ratchet = fsseal.FsRatchet.from_seed(SEED, FS.t0, FS.interval_s)
    signers = [lambda text, now: notes.checkpoint_sig(SIGNER, text), ratchet.sign]
    b = SessionBuilder(NS, SID, [KEY], signers=signers)
    lines = [b.opened_line(ts(0))]
    for seq in range(1, SIZE):
        if seq % EVERY == 0:
            lines.append(b.checkpoint_line(ts(seq), now=T0 + seq))
        else:
            lines.append(b.line("conn.anomaly", b'{"i":%d}' % seq, ts(seq)))
    lines.append(b.seal_line(ts(SIZE), reason, dropped, now=T0 + SIZE))
    return lines


SESSION = build()
CHECKPOINT_SEQS = list(range(EVERY, SIZE, EVERY))
POLICIES = {
    "hmac": Policy(keys=(KEY,), jobs=1),
    "ed25519": Policy(verifiers=(SIGNER.verifier(),), jobs=1),
    "fs": Policy(fs_seeds=(FS,), jobs=1),
}


def rechain_last(lines: list[bytes]) -> list[bytes]:
    """Recompute the last line's chain value (anyone can: no key needed)."""
    event = fmt.event_of_line(lines[-1])
    prev = bytes.fromhex(fmt.chain_of_line(lines[-2]))
    return [*lines[:-1], fmt.make_line(event, fmt.next_chain(prev, leaf_hash(event)))]


def replay_as_seal(lines: list[bytes], cp_seq: int) -> list[bytes]:
    """Cut at the checkpoint of seq ``cp_seq`` and put a seal with its ``sigs`` there."""
    cp = json.loads(lines[cp_seq])
    data = json.dumps({**cp["data"], "reason": "closed", "dropped": 0}, separators=(",", ":")).encode()
    event = fmt.encode_event(cp_seq, cp["ts"], fmt.KIND_SEALED, data)
    return rechain_last([*lines[:cp_seq], fmt.make_line(event, fmt.ZERO_CHAIN)])


def write(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"".join(lines))
    return path


def first_error(path: Path, policy: Policy) -> tuple[int | None, str | None]:
    e = verify_file(path, policy).first_error
    return (e.line, e.reason) if e else (None, None)


def test_the_genuine_session_verifies_with_every_kind_of_key(tmp_path):
    path = write(tmp_path / "s.ndjson", SESSION)
    for name, policy in POLICIES.items():
        report = verify_file(path, policy)
        assert report.ok and report.sealed, (name, report.first_error)


def test_seal_text_is_the_checkpoint_text_and_one_extension_line():
    root = bytes(32)
    text = fmt.seal_text("ledger/a/b", 7, root, "rotated", {"queue_full": 3, "invalid": 2})
    assert text == fmt.checkpoint_text("ledger/a/b", 7, root) + b"ledger-seal rotated 5\n"
    assert fmt.seal_text("o", 1, root, "closed", None).endswith(b"\nledger-seal closed 0\n")
    with pytest.raises(ValueError):
        fmt.seal_text("o", 1, root, "Closed", 0)


@pytest.mark.parametrize("alg", sorted(POLICIES))
@pytest.mark.parametrize("cp_seq", CHECKPOINT_SEQS)
def test_checkpoint_signature_replayed_as_a_seal_fails_at_the_seal(tmp_path, alg, cp_seq):
    path = write(tmp_path / "replayed.ndjson", replay_as_seal(SESSION, cp_seq))
    # The chain, root and size of the forged seal are all right: only the signature is not.
    assert first_error(path, Policy(jobs=1)) == (None, None)
    assert first_error(path, POLICIES[alg]) == (cp_seq + 1, "bad_signature")


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b'"reason":"closed"', b'"reason":"rotated"'),
        (b'"dropped":{"queue_full":4}', b'"dropped":{"queue_full":0}'),
        (b'"dropped":{"queue_full":4}', b'"dropped":4'),  # the same total: still the same text
    ],
)
def test_edited_seal_reason_or_drop_count(tmp_path, old, new):
    lines = build(dropped={"queue_full": 4})
    edited = rechain_last([*lines[:-1], lines[-1].replace(old, new)])
    assert edited[-1] != lines[-1]
    path = write(tmp_path / "edited.ndjson", edited)
    same_total = new == b'"dropped":4'
    for name, policy in POLICIES.items():
        expected = (None, None) if same_total else (SIZE + 1, "bad_signature")
        assert first_error(path, policy) == expected, name


@pytest.mark.parametrize("reason", ["Closed", "has space", "", "x" * 33, "1st", "é"])
def test_seal_reason_outside_the_grammar_is_bad_checkpoint(tmp_path, reason):
    lines = SESSION[:-1]
    seal = json.loads(SESSION[-1])
    data = json.dumps({**seal["data"], "reason": reason}, separators=(",", ":"), ensure_ascii=False).encode()
    event = fmt.encode_event(SIZE, seal["ts"], fmt.KIND_SEALED, data)
    path = write(tmp_path / "r.ndjson", rechain_last([*lines, fmt.make_line(event, fmt.ZERO_CHAIN)]))
    assert first_error(path, Policy(jobs=1)) == (SIZE + 1, "bad_checkpoint")
    assert first_error(path, POLICIES["hmac"]) == (SIZE + 1, "bad_checkpoint")


def test_the_seal_note_carries_the_extension_and_opens(tmp_path):
    path = write(tmp_path / "s.ndjson", SESSION)
    cp = proofs.find_checkpoint(path)
    assert cp.size == SIZE and cp.text().endswith(b"\nledger-seal closed 0\n")
    note = notes.note_from_sigs(cp.text(), cp.sigs)
    opened = notes.open_note(note, [SIGNER.verifier()])
    assert opened.verified == ["alpha"] and opened.text == cp.text()
    assert proofs.parse_checkpoint_text(opened.text)[1] == SIZE
    # An inclusion proof against the seal verifies with the verifier key alone.
    p = proofs.inclusion(path, 3)
    tlog = proofs.encode_tlog_proof(p, notes.note_from_sigs(p.checkpoint_text(), p.sigs))
    assert proofs.verify_tlog_proof(tlog, [SIGNER.verifier()]).index == 3


def test_shipped_seal_notes_carry_the_extension_and_pass_as_trusted(tmp_path):
    ns = tmp_path / NS
    ns.mkdir()
    path = write(ns / f"{SID}.ndjson", SESSION)
    found, _ = anchors.session_checkpoints(path)
    assert [size for size, _ in found] == [*CHECKPOINT_SEQS, SIZE]
    seal_note = found[-1][1]
    assert b"\nledger-seal closed 0\n\n" in seal_note
    assert b"ledger-seal" not in found[-2][1]
    report = verify_path([path], POLICIES["hmac"])
    for size, note in found:
        [anchor] = anchors.check_trusted(report, [note], [SIGNER.verifier()])
        assert anchor.ok, (size, anchor.detail)
    # Through the CLI too, with the note saved to a file.
    saved = tmp_path / "seal.note"
    saved.write_bytes(seal_note)
    run = subprocess.run(
        [sys.executable, "-m", "ledger.cli", "verify", "--pubkey", SIGNER.verifier().vkey(), "--trust", saved, path],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
