"""Deterministic generator of the sample sessions and tamper set in ``fixtures/``.

Run from anywhere (the project must be importable: installed, or run from the repo):

    python tools/make_fixtures.py            # (re)writes <repo>/fixtures/
    python tools/make_fixtures.py --out DIR  # writes the same tree into DIR

Every byte is fixed: the HMAC key is ``bytes(range(32))``, timestamps count from
2026-11-23T20:00:00Z, session ids are ``20261123T200000.000000Z-fx01`` and the like,
and lines are built by ``ledger.session.SessionBuilder`` exactly as the writer would.
Running it twice gives byte-identical output. It makes:

* ``test.key``: the key as 64 hex characters and LF (a test key: never use it elsewhere);
* ``sealed.ndjson``: 41 lines (seq 0..40), checkpoints at seq 10, 20, 30 (lines 11, 21,
  31), the seal at seq 40 (line 41);
* ``unsealed.ndjson``: 25 lines, checkpoints at lines 11 and 21, no seal;
* ``torn-tail.ndjson``: 15 complete lines, then half of line 16 without its LF;
* ``multi/edge-1/<s1>.ndjson`` and ``<s2>.ndjson``: two sealed sessions of one
  namespace, s2's ``prev`` being ``SessionBuilder.summary()`` of s1;
* ``tamper/*.ndjson``: copies of ``sealed.ndjson`` each damaged one way (byte flip,
  deleted / duplicated / swapped / inserted line, truncation, a line after the seal,
  edits re-hashed without the key or re-signed with another key, a checkpoint's
  signature replayed as a seal, a seal's reason or drop count edited);
* ``expected.json``: every case: file, arguments, expected exit code, expected first
  bad line (1-based, null for file-level failures) and reason, and why. Paths in
  ``file`` and ``args`` are relative to ``fixtures/``: run each case from that folder as
  ``ledger verify --json ARGS... FILE``.

The expected verdicts are written down here from the format rules (SPEC.md section 5)
and the known layout of each file, not by running the verifier: tests/test_verify.py
checks that the verifier agrees.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from ledger import format as fmt  # noqa: E402
from ledger.format import format_ts  # noqa: E402
from ledger.merkle import leaf_hash  # noqa: E402
from ledger.session import SessionBuilder  # noqa: E402

KEY = bytes(range(32))
# The attacker's key for the re-signed cases: anything but KEY.
WRONG_KEY = bytes(range(0x80, 0xA0))
NAMESPACE = "edge-1"
T0 = 1_795_464_000  # 2026-11-23T20:00:00Z

SEALED_ID = "20261123T200000.000000Z-fx01"
UNSEALED_ID = "20261123T201000.000000Z-fx02"
TORN_ID = "20261123T202000.000000Z-fx03"
MULTI_IDS = ("20261123T210000.000000Z-fx11", "20261123T211000.000000Z-fx12")

KINDS = ("conn.anomaly", "capture.sealed", "archive.batch", "tls/handshake:v2")
NOTES = ("", "ü✓", 'quote " and backslash \\', "tab\tand\u2028line sep")


def ts(session_offset_s: int, seq: int) -> str:
    """A fixed, strictly increasing timestamp: ``seq`` seconds and a few µs after the start."""
    return format_ts(T0 + session_offset_s + seq + seq * 1234 / 1e6)


def event_data(seq: int, note: str | None = None) -> bytes:
    """The JSON data of an ordinary event (fixed, a little varied: non-ASCII, escapes, nesting)."""
    obj: dict = {
        "i": seq,
        "cn": f"client-{seq % 3}",
        "ip": f"10.0.0.{seq}",
        "note": NOTES[seq % len(NOTES)] if note is None else note,
    }
    if seq % 5 == 3:
        obj["extra"] = {"ports": [443, 8443], "ok": True, "ratio": 0.25, "none": None}
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def build(
    session: str,
    *,
    size: int,
    every: int,
    offset_s: int = 0,
    keys: tuple[bytes, ...] = (KEY,),
    seal: bool = True,
    prev: fmt.PrevLink | None = None,
    edit_seq: int | None = None,
    resign_from: int | None = None,
) -> tuple[SessionBuilder, list[bytes]]:
    """Lines of one session: seq 0 opened, a checkpoint at every multiple of ``every``,
    ordinary events between, and (``seal``) the seal at seq ``size``.

    ``edit_seq`` changes that event's data; from seq ``resign_from`` on, checkpoints
    are signed with WRONG_KEY instead of ``keys`` (an attacker who kept the genuine
    prefix and re-signed the rest).
    """
    b = SessionBuilder(NAMESPACE, session, list(keys), prev=prev)
    lines = [b.opened_line(ts(offset_s, 0))]
    for seq in range(1, size):
        if resign_from is not None and seq == resign_from:
            b.keys = [WRONG_KEY]
        if seq % every == 0:
            dropped = {"queue_full": 2} if seq // every == 2 else None
            lines.append(b.checkpoint_line(ts(offset_s, seq), dropped=dropped))
        else:
            note = "EDITED by an attacker" if seq == edit_seq else None
            lines.append(b.line(KINDS[seq % len(KINDS)], event_data(seq, note), ts(offset_s, seq)))
    if seal:
        lines.append(b.seal_line(ts(offset_s, size), "closed", {"queue_full": 2}))
    return b, lines


def forged_line(after: bytes, seq: int, offset_s: int = 0) -> bytes:
    """A well-formed line an attacker without the key can make: seq ``seq``, chained on ``after``."""
    event = fmt.encode_event(seq, ts(offset_s, seq), "conn.anomaly", b'{"forged":true}')
    prev_chain = bytes.fromhex(fmt.chain_of_line(after))
    return fmt.make_line(event, fmt.next_chain(prev_chain, leaf_hash(event)))


def rechain(lines: list[bytes]) -> list[bytes]:
    """Recompute every stored chain value (what anyone can do without the key)."""
    out, chain = [], fmt.ZERO_CHAIN
    for line in lines:
        event = fmt.event_of_line(line)
        chain = fmt.next_chain(chain, leaf_hash(event))
        out.append(fmt.make_line(event, chain))
    return out


def replay_as_seal(lines: list[bytes], cp_seq: int) -> list[bytes]:
    """The session cut at the checkpoint of seq ``cp_seq``, that checkpoint's line replaced
    by a seal reusing its signatures (what anyone who can write the file can do)."""
    cp = json.loads(lines[cp_seq])
    data = {**cp["data"], "reason": "closed", "dropped": 0}
    data_json = json.dumps(data, separators=(",", ":")).encode("utf-8")
    event = fmt.encode_event(cp_seq, cp["ts"], fmt.KIND_SEALED, data_json)
    prev_chain = bytes.fromhex(fmt.chain_of_line(lines[cp_seq - 1]))
    return lines[:cp_seq] + [fmt.make_line(event, fmt.next_chain(prev_chain, leaf_hash(event)))]


def flip_in_line(line: bytes, needle: bytes, bit: int = 0x01) -> bytes:
    """Flip one bit of the first byte of the first ``needle`` inside ``line``."""
    at = line.index(needle)
    return line[:at] + bytes([line[at] ^ bit]) + line[at + 1 :]


def cases_and_files() -> tuple[dict[str, bytes], list[dict]]:
    files: dict[str, bytes] = {}
    cases: list[dict] = []
    key_args = ["--key-file", "test.key"]

    def case(file: str, exit_code: int, line: int | None, reason: str | None, why: str, args=None, **extra):
        cases.append(
            {
                "file": file,
                "args": key_args if args is None else args,
                "exit": exit_code,
                "first_error_line": line,
                "reason": reason,
                "why": why,
                **extra,
            }
        )

    files["test.key"] = KEY.hex().encode("ascii") + b"\n"

    # ---- valid sessions -----------------------------------------------------------
    _, sealed = build(SEALED_ID, size=40, every=10)
    assert len(sealed) == 41
    files["sealed.ndjson"] = b"".join(sealed)
    case("sealed.ndjson", 0, None, None, "41 lines, checkpoints at lines 11, 21, 31, sealed at line 41", events=41)
    case(
        "sealed.ndjson",
        0,
        None,
        None,
        "no key: the chain and tree are checked, signatures are not (and the report says so)",
        args=[],
        events=41,
        signatures="unchecked",
    )

    _, unsealed = build(UNSEALED_ID, size=25, every=10, offset_s=600, seal=False)
    files["unsealed.ndjson"] = b"".join(unsealed)
    case("unsealed.ndjson", 1, None, "unsealed", "no session.sealed: fails by default (it may have been cut short)")
    case(
        "unsealed.ndjson",
        0,
        None,
        None,
        "accepted as live or crashed when asked; signed through size 20",
        args=[*key_args, "--allow-unsealed"],
        events=25,
        signed_size=20,
    )

    _, torn = build(TORN_ID, size=16, every=10, offset_s=1200, seal=False)
    partial = torn[15][: len(torn[15]) // 2]
    files["torn-tail.ndjson"] = b"".join(torn[:15]) + partial
    case("torn-tail.ndjson", 1, None, "unsealed", "unsealed, with half a line after the last LF")
    case(
        "torn-tail.ndjson",
        0,
        None,
        None,
        "a crash artifact: 15 complete lines verify; the torn tail is counted, never verified",
        args=[*key_args, "--allow-unsealed"],
        events=15,
        torn_tail_bytes=len(partial),
    )

    s1, multi1 = build(MULTI_IDS[0], size=15, every=5, offset_s=3600)
    _, multi2 = build(MULTI_IDS[1], size=12, every=5, offset_s=4200, prev=s1.summary())
    files[f"multi/{NAMESPACE}/{MULTI_IDS[0]}.ndjson"] = b"".join(multi1)
    files[f"multi/{NAMESPACE}/{MULTI_IDS[1]}.ndjson"] = b"".join(multi2)
    case("multi", 0, None, None, "a namespace of two sealed sessions; the second's prev names the first")

    # ---- tamper set: each a copy of sealed.ndjson damaged one way -----------------
    def tamper(name: str, lines: list[bytes] | bytes, line: int | None, reason: str, why: str, **kw) -> None:
        files[f"tamper/{name}"] = lines if isinstance(lines, bytes) else b"".join(lines)
        case(f"tamper/{name}", 1, line, reason, why, **kw)

    t = list(sealed)
    t[4] = flip_in_line(t[4], b"client-")  # line 5: "client-1" -> "blient-1"
    tamper(
        "byte-flip.ndjson",
        t,
        5,
        "chain_mismatch",
        "one bit flipped inside line 5's data: its leaf, so its chain, changes",
    )

    t = sealed[:6] + sealed[7:]
    tamper("deleted-line.ndjson", t, 7, "seq_mismatch", "line 7 (seq 6) removed: line 7 now holds seq 7")

    t = sealed[:12] + [sealed[11]] + sealed[12:]
    tamper("duplicated-line.ndjson", t, 13, "seq_mismatch", "line 12 (seq 11) written twice: line 13 repeats seq 11")

    t = list(sealed)
    t[15], t[16] = t[16], t[15]
    tamper("swapped-lines.ndjson", t, 16, "seq_mismatch", "lines 16 and 17 swapped: line 16 holds seq 16")

    t = sealed[:23] + [forged_line(sealed[22], 23)] + sealed[23:]
    tamper(
        "inserted-line.ndjson",
        t,
        25,
        "seq_mismatch",
        "a forged line with seq 23 and a valid chain inserted as line 24: it passes, "
        "but the genuine seq 23 that follows on line 25 does not",
    )

    tamper(
        "truncated.ndjson",
        sealed[:25],
        None,
        "unsealed",
        "cut after line 25 (a line boundary before the seal): a valid prefix, so only the missing seal shows",
    )
    case(
        "tamper/truncated.ndjson",
        0,
        None,
        None,
        "the same cut file is indistinguishable from a live session when unsealed files are allowed",
        args=[*key_args, "--allow-unsealed"],
        events=25,
        signed_size=20,
    )

    tamper(
        "after-seal.ndjson",
        sealed + [forged_line(sealed[40], 41)],
        42,
        "after_seal",
        "a well-chained line 42 appended after session.sealed",
    )

    t = list(sealed)
    t[14] = t[14].replace(b'"ip":"10.0.0.14"', b'"ip":"10.6.6.6"')
    t = rechain(t)
    tamper(
        "rehashed-edit-no-key.ndjson",
        t,
        21,
        "root_mismatch",
        "line 15 edited and every chain value recomputed (no key needed): the chain holds, "
        "but the checkpoint at line 21 commits to the original tree",
    )

    _, t = build(SEALED_ID, size=40, every=10, edit_seq=14, resign_from=14)
    tamper(
        "rehashed-edit-wrong-key.ndjson",
        t,
        21,
        "bad_signature",
        "line 15 edited, the rest regenerated and re-signed with another key (the genuine prefix, "
        "checkpoint at line 11 included, kept): the first checkpoint after the edit (line 21) fails",
    )
    case(
        "tamper/rehashed-edit-wrong-key.ndjson",
        0,
        None,
        None,
        "without a key a re-hashed, re-signed edit is internally consistent: only a key can catch it",
        args=[],
        events=41,
        signatures="unchecked",
    )

    tamper(
        "seal-replay.ndjson",
        replay_as_seal(sealed, 30),
        31,
        "bad_signature",
        "cut after the checkpoint at line 31, which is replaced by a seal carrying that checkpoint's "
        "signatures: a seal signs its seal text, never the plain checkpoint text",
    )

    t = list(sealed)
    t[40] = t[40].replace(b'"reason":"closed"', b'"reason":"rotated"')
    tamper(
        "seal-reason-edited.ndjson",
        rechain(t),
        41,
        "bad_signature",
        "the seal's reason edited and its chain value recomputed: the reason is signed",
    )

    t = list(sealed)
    t[40] = t[40].replace(b'"dropped":{"queue_full":2}', b'"dropped":{"queue_full":0}')
    tamper(
        "seal-dropped-edited.ndjson",
        rechain(t),
        41,
        "bad_signature",
        "the seal's drop count edited and its chain value recomputed: the drop total is signed",
    )

    _, t = build(SEALED_ID, size=40, every=10, keys=(WRONG_KEY,), edit_seq=14)
    tamper(
        "resigned-wrong-key.ndjson",
        t,
        11,
        "bad_signature",
        "the whole session regenerated with line 15 edited and signed with another key: "
        "the first checkpoint (line 11) already fails",
    )
    return files, cases


def write_all(out: Path) -> list[Path]:
    files, cases = cases_and_files()
    files["expected.json"] = (
        json.dumps(
            {
                "about": "Run each case from this folder: ledger verify --json ARGS... FILE. "
                "first_error_line is 1-based (null: a file-level failure or none). Made by tools/make_fixtures.py.",
                "key_file": "test.key",
                "cases": cases,
            },
            indent=1,
            ensure_ascii=False,
        )
        + "\n"
    ).encode("utf-8")
    written = []
    for rel, data in sorted(files.items()):
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_bytes() != data:
            path.write_bytes(data)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "fixtures", help="output folder (default: <repo>/fixtures)")
    args = parser.parse_args(argv)
    written = write_all(args.out)
    print(f"wrote {len(written)} files under {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
