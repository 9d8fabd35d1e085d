"""End to end: public verifiability (SPEC.md section 9) through the real writer and CLI.

Every ledger here is written by ``ledger.Ledger`` (the real writer thread); every
check that matters runs the real command in a subprocess
(``python -m ledger.cli ...``, a clean environment, no LEDGER_* variables).
What the CLI prints is judged by code written here from the SPEC text alone:
leaf hashes, RFC 6962 MTH / PATH / PROOF over lines read back from the file, the
C2SP key hash, and the naive signed-note verifier of tests/test_notes.py.

1. ``keygen NAME``: signer key file (0600, never overwritten), verifier key printed.
2. Checkpoints and seals carry HMAC and Ed25519 (and forward-secure) signatures;
   ``ledger checkpoint`` prints a standard signed note; ``verify --pubkey`` needs no secret.
3. Forward-secure sealing across three 1-second epochs: an attacker holding the
   writer's CURRENT state (and the host's HMAC and Ed25519 keys) cannot re-sign an
   edited earlier epoch; an epoch that does not match the line's time fails.
4. Key rotation: any trusted key verifies; ``signed_by`` names the keys per checkpoint.
5. ``prove inclusion`` / ``prove consistency`` / ``verify-proof`` offline, and every
   kind of altered proof rejected with one line on stderr.
6. ``--trust`` and ``--witness``: a history rewritten and re-signed with the host's own
   keys passes plain verification but not against a checkpoint that left the box; a
   truncated log fails against the stored checkpoints too.
7. Regressions: policies with only public keys across worker processes; FS signatures
   cannot be stripped; the summary names the key kinds checked.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import stat
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ledger import Ledger, fsseal, notes
from ledger.keys import key_id
from ledger.session import SessionBuilder

try:  # the independent mini-verifier, written from the C2SP text alone
    from test_notes import ref_open as _ref_open
except ImportError:  # pragma: no cover - fall back to the library
    _ref_open = None

NS = "edge-1"
EM_DASH = "\u2014"
SLOW = {"checkpoint_interval_s": 3600.0, "checkpoint_every": 10**6}  # checkpoints only when asked


# ---- running the CLI --------------------------------------------------------------------


@dataclass
class Run:
    args: tuple[str, ...]
    code: int
    out: bytes
    err: str

    def json(self) -> dict:
        return json.loads(self.out)

    def __str__(self) -> str:
        return f"ledger {' '.join(self.args)} -> {self.code}\nstdout: {self.out[:2000]!r}\nstderr: {self.err[:2000]}"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    env["NO_COLOR"] = "1"
    return env


def ledger(*args: object, cwd: Path | None = None, stdin: bytes | None = None) -> Run:
    argv = tuple(str(a) for a in args)
    p = subprocess.run(
        [sys.executable, "-m", "ledger.cli", *argv],
        input=stdin if stdin is not None else b"",
        capture_output=True,
        cwd=cwd,
        env=_env(),
        timeout=60,
    )
    return Run(argv, p.returncode, p.stdout, p.stderr.decode("utf-8", "replace"))


def ledger_many(calls: list[tuple], cwd: Path | None = None) -> list[Run]:
    """Run several commands at once (each is a tuple of arguments); results in order."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda args: ledger(*args, cwd=cwd), calls))


def assert_one_line_error(r: Run, code: int = 1) -> None:
    assert r.code == code, str(r)
    assert "Traceback" not in r.err, str(r)
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ledger: error: "), str(r)


# ---- independent references (SPEC sections 2 and 9, RFC 6962) ---------------------------


_HEAD = re.compile(rb'\A\{"v":1,"seq":(0|[1-9][0-9]*),"ts":"([^"]+)","kind":"((?:[^"\\]|\\.)+)","data":')
_TRAILER = re.compile(rb',"chain":"[0-9a-f]{64}"\}\n\Z')


def file_lines(path: Path) -> list[bytes]:
    data = path.read_bytes()
    lines = data.splitlines(keepends=True)
    assert all(_TRAILER.search(x) for x in lines)
    return lines


def event_of(line: bytes) -> bytes:
    """E_i: the line without its chain member (the last 77 bytes), closing brace put back."""
    return line[:-77] + b"}"


def parse_line(line: bytes) -> tuple[int, str, str, bytes]:
    """(seq, ts, kind, data as written)."""
    e = event_of(line)
    m = _HEAD.match(e)
    assert m, line
    return int(m[1]), m[2].decode(), m[3].decode(), e[m.end() : -1]


def ref_leaf(line: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + event_of(line)).digest()


def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(leaves: list[bytes]) -> bytes:
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaves[0]
    k = _k(n)
    return hashlib.sha256(b"\x01" + ref_mth(leaves[:k]) + ref_mth(leaves[k:])).digest()


def ref_path(m: int, leaves: list[bytes]) -> list[bytes]:
    """RFC 6962 section 2.1.1 PATH(m, D[n])."""
    n = len(leaves)
    if n == 1:
        return []
    k = _k(n)
    if m < k:
        return ref_path(m, leaves[:k]) + [ref_mth(leaves[k:])]
    return ref_path(m - k, leaves[k:]) + [ref_mth(leaves[:k])]


def ref_subproof(m: int, leaves: list[bytes], complete: bool) -> list[bytes]:
    """RFC 6962 section 2.1.2 SUBPROOF(m, D[n], b)."""
    n = len(leaves)
    if m == n:
        return [] if complete else [ref_mth(leaves)]
    k = _k(n)
    if m <= k:
        return ref_subproof(m, leaves[:k], complete) + [ref_mth(leaves[k:])]
    return ref_subproof(m - k, leaves[k:], False) + [ref_mth(leaves[:k])]


def checkpoint_text(origin: str, size: int, root: bytes) -> bytes:
    return f"{origin}\n{size}\n{base64.b64encode(root).decode()}\n".encode()


def signed_text(origin: str, size: int, root: bytes, data: dict) -> bytes:
    """What the signatures of the checkpoint or seal line with ``data`` cover: a seal adds
    the extension line ``ledger-seal <reason> <total drops>`` (SPEC 4.3)."""
    text = checkpoint_text(origin, size, root)
    if "reason" not in data:
        return text
    dropped = data.get("dropped") or 0
    total = dropped if isinstance(dropped, int) else sum(dropped.values())
    return text + f"ledger-seal {data['reason']} {total}\n".encode()


def signed_text_of(path: Path, origin: str, leaves: list[bytes], size: int) -> bytes:
    """The signed text of the checkpoint or seal of ``size`` in the session at ``path``."""
    [data] = [d for seq, _, d in checkpoint_lines(path) if seq == size]
    return signed_text(origin, size, ref_mth(leaves[:size]), data)


def ref_key_hash(name: str, public: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n\x01" + public).digest()[:4]


def open_note(note: bytes, vkeys: list[str]) -> list[str] | None:
    """Names of the trusted keys that signed ``note``, None if a verifier must reject it."""
    if _ref_open is not None:
        return _ref_open(note, vkeys)
    try:  # pragma: no cover
        return notes.open_note(note, [notes.Verifier.from_vkey(v) for v in vkeys]).verified
    except notes.NoteError:  # pragma: no cover
        return None


# ---- writing ledgers with the real writer -----------------------------------------------


@dataclass
class Keys:
    hmac: bytes
    alpha: notes.Signer
    beta: notes.Signer

    @property
    def valpha(self) -> str:
        return self.alpha.verifier_key()

    @property
    def vbeta(self) -> str:
        return self.beta.verifier_key()


def make_keys(d: Path) -> Keys:
    d.mkdir(parents=True, exist_ok=True)
    (d / "hmac.key").write_text(os.urandom(32).hex() + "\n")
    return Keys(
        hmac=bytes.fromhex((d / "hmac.key").read_text().strip()),
        alpha=notes.generate_signer("alpha"),
        beta=notes.generate_signer("beta"),
    )


def write_session(root: Path, k: Keys, plan: list[int], signers=None, **options) -> Path:
    """One session by the real writer: for each n in ``plan``, n events then a checkpoint;
    the seal on close. Returns the sealed file."""
    signers = (k.alpha,) if signers is None else signers
    with Ledger.open(root, namespace=NS, hmac_key=k.hmac, signers=signers, **{**SLOW, **options}) as led:
        i = 0
        for n in plan:
            for _ in range(n):
                assert led.record("app.event", {"n": i, "who": "caf\u00e9"})
                i += 1
            assert led.checkpoint(timeout=30)
        path = led.path
    return path


def ed25519_signer(signer: notes.Signer):
    return lambda text, now: notes.checkpoint_sig(signer, text)


def ts_seconds(ts: str) -> float:
    from datetime import UTC, datetime

    return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def rewrite_session(
    src: Path,
    dst: Path,
    *,
    keys: list[bytes],
    signers: list,
    edit: dict[int, bytes] | None = None,
    ts: dict[int, str] | None = None,
) -> bytes:
    """Rebuild a session line by line with SessionBuilder, re-hashing and re-signing every
    checkpoint, as whoever owns the host could. ``edit``: seq -> new data (JSON) of an
    event; ``ts``: seq -> new timestamp. Returns (and writes to ``dst``) the bytes."""
    edit, ts = edit or {}, ts or {}
    out = []
    builder = None
    for line in file_lines(src):
        seq, when, kind, data = parse_line(line)
        when = ts.get(seq, when)
        if seq == 0:
            origin = json.loads(data)["origin"]
            _, namespace, session = origin.split("/", 2)
            builder = SessionBuilder(namespace, session, keys, signers=signers)
        if kind in ("ledger.checkpoint", "session.sealed"):
            old = json.loads(data)
            now = ts_seconds(when)
            if kind == "ledger.checkpoint":
                out.append(builder.checkpoint_line(when, old.get("dropped"), now))
            else:
                extra = {
                    k: v for k, v in old.items() if k not in ("size", "root", "chain", "sigs", "reason", "dropped")
                }
                out.append(builder.seal_line(when, old["reason"], old["dropped"], now, **extra))
        else:
            out.append(builder.line(kind, edit.get(seq, data), when))
    data = b"".join(out)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(data)
    return data


def checkpoint_lines(path: Path) -> list[tuple[int, str, dict]]:
    """(seq, ts, data) of every checkpoint and seal line."""
    out = []
    for line in file_lines(path):
        seq, when, kind, data = parse_line(line)
        if kind in ("ledger.checkpoint", "session.sealed"):
            out.append((seq, when, json.loads(data)))
    return out


@pytest.fixture
def keys(tmp_path) -> Keys:
    return make_keys(tmp_path / "keys")


# ==== 1. keygen ===========================================================================


def test_keygen_writes_a_0600_signer_key_and_prints_its_verifier_key(tmp_path):
    r = ledger("keygen", "alpha", cwd=tmp_path)
    assert r.code == 0, str(r)
    key_file = tmp_path / "alpha.signer.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    vkey = r.out.decode().strip()
    assert r.out.decode().count("\n") == 1  # stdout: the verifier key and nothing else

    # The signer key, read as golang.org/x/mod/sumdb/note writes it.
    skey = key_file.read_text().strip()
    m = re.fullmatch(r"PRIVATE\+KEY\+alpha\+([0-9a-f]{8})\+([A-Za-z0-9+/]+={0,2})", skey)
    assert m, "signer key file is not PRIVATE+KEY+<name>+<hash>+<base64>"
    raw = base64.b64decode(m[2])
    assert raw[0] == 0x01 and len(raw) == 33
    public = Ed25519PrivateKey.from_private_bytes(raw[1:]).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    # The verifier key: <name>+<hex key hash>+base64(0x01 || public key), checked from the spec.
    name, hash8, key64 = vkey.split("+", 2)
    assert name == "alpha" and re.fullmatch(r"[0-9a-f]{8}", hash8)
    assert base64.b64decode(key64, validate=True) == b"\x01" + public
    assert bytes.fromhex(hash8) == ref_key_hash("alpha", public) == bytes.fromhex(m[1])
    # The secret never shows.
    seed_b64 = m[2]
    assert "PRIVATE" not in r.err and seed_b64 not in r.err and seed_b64.encode() not in r.out

    # It works end to end: a note signed with the key file opens with the printed key.
    signer = notes.load_signer_key_file(key_file)
    assert open_note(notes.sign_note(b"hello\n", [signer]), [vkey]) == ["alpha"]

    # Never overwritten; names with '+' or spaces refused; --out chooses the file.
    before = key_file.read_bytes()
    again, bad, other = ledger_many(
        [("keygen", "alpha"), ("keygen", "al+pha"), ("keygen", "beta", "--out", "sub.key")], cwd=tmp_path
    )
    assert_one_line_error(again, 2)
    assert key_file.read_bytes() == before
    assert_one_line_error(bad, 2)
    assert other.code == 0 and other.out.decode().startswith("beta+"), str(other)
    assert stat.S_IMODE((tmp_path / "sub.key").stat().st_mode) == 0o600


def test_keygen_fs_seed_writes_seed_and_writer_state(tmp_path):
    r = ledger("keygen", "--fs-seed", "audit.seed", "--fs-interval", "7", cwd=tmp_path)
    assert r.code == 0, str(r)
    seed_path, state_path = tmp_path / "audit.seed", tmp_path / "audit.seed.state"
    for p in (seed_path, state_path):
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
    seed = json.loads(seed_path.read_text())
    state = json.loads(state_path.read_text())
    raw = bytes.fromhex(seed["seed"])
    # From the spec: seed_id and k_0, recomputed here.
    sid = hashlib.sha256(b"ledger-fs-v1 id\x00" + raw).hexdigest()[:16]
    assert seed["seed_id"] == state["seed_id"] == sid
    assert state["epoch"] == 0 and state["interval_s"] == seed["interval_s"] == 7 and state["t0"] == seed["t0"]
    assert state["key"] == hashlib.sha256(b"ledger-fs-v1\x00" + raw).hexdigest()
    assert "seed" not in state  # the writer's file holds the current key only
    assert seed["seed"] not in r.err and state["key"] not in r.err and sid in r.err
    again = ledger("keygen", "--fs-seed", "audit.seed", cwd=tmp_path)
    assert_one_line_error(again, 2)
    assert json.loads(seed_path.read_text()) == seed


# ==== 2. Ed25519 on every checkpoint; notes; verify with the public key alone ==============


def test_every_checkpoint_and_seal_carries_hmac_and_ed25519(tmp_path, keys):
    path = write_session(tmp_path / "root", keys, [1, 2, 3])
    lines = file_lines(path)
    leaves = [ref_leaf(x) for x in lines]
    origin = json.loads(parse_line(lines[0])[3])["origin"]
    cps = checkpoint_lines(path)
    assert [seq for seq, _, _ in cps] == [2, 5, 9, 10]  # three checkpoints, then the seal
    public = keys.alpha.public_key
    for seq, _, data in cps:
        assert data["size"] == seq and bytes.fromhex(data["root"]) == ref_mth(leaves[:seq])
        text = signed_text(origin, seq, ref_mth(leaves[:seq]), data)
        assert text.endswith(b"\nledger-seal closed 0\n") == (seq == 10)
        by_alg = {s["alg"]: s for s in data["sigs"]}
        assert sorted(by_alg) == ["ed25519", "hmac-sha256"] and len(data["sigs"]) == 2
        h = by_alg["hmac-sha256"]
        assert h["key"] == hashlib.sha256(keys.hmac).hexdigest()[:16]
        assert base64.b64decode(h["sig"]) == hmac.new(keys.hmac, text, hashlib.sha256).digest()
        e = by_alg["ed25519"]
        assert e["key"] == f"alpha+{ref_key_hash('alpha', public).hex()}"
        blob = base64.b64decode(e["sig"], validate=True)
        assert blob[:4] == ref_key_hash("alpha", public) and len(blob) == 68
        Ed25519PublicKey.from_public_bytes(public).verify(blob[4:], text)  # raises if bad


def test_checkpoint_command_prints_a_standard_signed_note(tmp_path, keys):
    path = write_session(tmp_path / "root", keys, [1, 2, 3])
    unsigned = write_session(tmp_path / "plain", keys, [2], signers=())
    lines = file_lines(path)
    leaves = [ref_leaf(x) for x in lines]
    origin = json.loads(parse_line(lines[0])[3])["origin"]
    latest, at5, at2, missing, no_ed = ledger_many(
        [
            ("checkpoint", path),
            ("checkpoint", path, "--size", "5"),
            ("checkpoint", path, "--size", "2"),
            ("checkpoint", path, "--size", "4"),
            ("checkpoint", unsigned),
        ]
    )
    for r, size in ((latest, 10), (at5, 5), (at2, 2)):
        assert r.code == 0, str(r)
        text = signed_text_of(path, origin, leaves, size)
        sig = base64.b64encode(ref_key_hash("alpha", keys.alpha.public_key) + keys.alpha.sign(text))
        assert r.out == text + b"\n" + f"{EM_DASH} alpha ".encode() + sig + b"\n"
        assert open_note(r.out, [keys.valpha]) == ["alpha"]
        assert open_note(r.out, [keys.vbeta]) is None  # not signed by a trusted key
        assert open_note(r.out.replace(b"\n%d\n" % size, b"\n%d\n" % (size + 1)), [keys.valpha]) is None
    assert_one_line_error(missing, 2)
    assert "no checkpoint of size 4" in missing.err
    assert_one_line_error(no_ed, 2)
    assert "no Ed25519 signature" in no_ed.err


def test_verify_with_verifier_keys_alone_and_hmac_still_available(tmp_path, keys):
    path = write_session(tmp_path / "root", keys, [1, 2])
    (tmp_path / "hmac.key").write_text(keys.hmac.hex() + "\n")
    kid = key_id(keys.hmac)
    forged = tmp_path / "forged" / path.name  # edited, re-hashed, re-signed by another Ed25519 key
    rewrite_session(path, forged, keys=[], signers=[ed25519_signer(keys.beta)], edit={1: b'{"n":99}'})
    pub, wrong, hm, both, forged_pub, forged_hmac = ledger_many(
        [
            ("verify", path, "--pubkey", keys.valpha, "--json"),
            ("verify", path, "--pubkey", keys.vbeta, "--json"),
            ("verify", path, "--key-file", tmp_path / "hmac.key", "--json"),
            ("verify", path, "--key-file", tmp_path / "hmac.key", "--pubkey", keys.valpha, "--json"),
            ("verify", forged, "--pubkey", keys.valpha, "--json"),
            ("verify", forged, "--key-file", tmp_path / "hmac.key", "--json"),
        ]
    )
    alpha = keys.alpha.key_name()
    f = pub.json()["files"][0]
    assert pub.code == 0 and f["signatures"] == "verified" and f["sealed"], str(pub)
    assert f["signers"] == [alpha]
    assert [(s["line"], s["size"], s["keys"]) for s in f["signed_by"]] == [
        (3, 2, [alpha]),
        (6, 5, [alpha]),
        (7, 6, [alpha]),
    ]

    assert wrong.code == 1, str(wrong)
    err = wrong.json()["files"][0]["first_error"]
    assert (err["line"], err["reason"]) == (3, "bad_signature")

    assert hm.code == 0 and hm.json()["files"][0]["signers"] == [kid], str(hm)
    assert both.code == 0 and both.json()["files"][0]["signers"] == [kid, alpha], str(both)
    assert all(s["keys"] == [kid, alpha] for s in both.json()["files"][0]["signed_by"])

    # The forgery (chain and roots all consistent) fails with either real key.
    for r in (forged_pub, forged_hmac):
        assert r.code == 1, str(r)
        err = r.json()["files"][0]["first_error"]
        assert (err["line"], err["reason"]) == (3, "bad_signature")


# ==== 3. forward-secure sealing ===========================================================


@dataclass
class FsLog:
    dir: Path
    keys: Keys
    seed_file: Path
    state_file: Path
    seed: fsseal.FsSeed
    path: Path
    cps: list[tuple[int, str, dict]]  # (seq, ts, data) of the checkpoint lines and the seal
    idle_epoch: int  # the state file's epoch, read while the writer was idle
    idle_expected: int


def _sleep_until(t: float) -> None:
    while (left := t - time.time()) > 0:
        time.sleep(left)


@pytest.fixture(scope="module")
def fs_log(tmp_path_factory) -> FsLog:
    """Checkpoints in three consecutive 1-second epochs, an idle epoch, then the seal."""
    d = tmp_path_factory.mktemp("fs")
    keys = make_keys(d / "keys")
    r = ledger("keygen", "--fs-seed", "audit.seed", "--fs-state", "writer.state", "--fs-interval", "1", cwd=d)
    assert r.code == 0, str(r)
    seed = fsseal.load_fs_seed(d / "audit.seed")
    state = d / "writer.state"
    # Start just after an epoch boundary, so each epoch gets its checkpoint with time to spare.
    first = seed.epoch_at(time.time()) + 1
    _sleep_until(seed.t0 + first + 0.05)
    with Ledger.open(
        d / "root", namespace=NS, hmac_key=keys.hmac, signers=(keys.alpha,), fs_state_file=state, **SLOW
    ) as led:
        for e in range(first, first + 3):
            _sleep_until(seed.t0 + e + 0.05)
            for i in range(2):
                assert led.record("app.event", {"epoch": e, "i": i})
            assert led.checkpoint(timeout=30)
        # Idle through the next boundary: the writer must still drop the old key.
        _sleep_until(seed.t0 + first + 3 + 0.4)
        idle_epoch = json.loads(state.read_text())["epoch"]
        idle_expected = seed.epoch_at(time.time())
        path = led.path
    return FsLog(d, keys, d / "audit.seed", state, seed, path, checkpoint_lines(path), idle_epoch, idle_expected)


def _fs_sigs(data: dict) -> list[dict]:
    return [s for s in data["sigs"] if s["alg"] == "hmac-sha256-fs"]


def test_fs_writer_signs_each_epoch_and_ratchets_even_when_idle(fs_log):
    seed = fs_log.seed
    epochs = [seed.epoch_at(ts_seconds(ts)) for _, ts, _ in fs_log.cps]
    assert len(fs_log.cps) == 4 and epochs == sorted(epochs) and len(set(epochs[:3])) == 3
    for (_, _, data), e in zip(fs_log.cps, epochs, strict=True):
        (sig,) = _fs_sigs(data)
        assert sig["key"] == f"fs:{seed.seed_id}:{e}"  # the epoch of the line's own ts
    assert fs_log.idle_epoch == fs_log.idle_expected == epochs[2] + 1
    state = json.loads(fs_log.state_file.read_text())
    assert stat.S_IMODE(fs_log.state_file.stat().st_mode) == 0o600
    assert state["epoch"] >= epochs[-1] and set(state) == {"v", "alg", "seed_id", "epoch", "key", "t0", "interval_s"}
    assert state["key"] == fsseal.epoch_key(seed.seed, state["epoch"]).hex()


def test_fs_untouched_file_passes_with_the_seed_alone(fs_log):
    r = ledger("verify", fs_log.path, "--fs-seed", fs_log.seed_file, "--json")
    assert r.code == 0, str(r)
    f = r.json()["files"][0]
    assert f["signatures"] == "verified" and f["sealed"]
    labels = [s["keys"] for s in f["signed_by"]]
    assert labels == [[_fs_sigs(data)[0]["key"]] for _, _, data in fs_log.cps]


def _attacker_fs_signer(state_file: Path, label: str):
    """What whoever takes the host has: the writer state file (current key only)."""
    st = json.loads(state_file.read_text())
    key, epoch, sid = bytes.fromhex(st["key"]), st["epoch"], st["seed_id"]

    def sign(text: bytes, now: float) -> dict:
        e = epoch if label == "current" else int((now - st["t0"]) // st["interval_s"])
        mac = hmac.new(key, text, hashlib.sha256).digest()
        return {"alg": "hmac-sha256-fs", "key": f"fs:{sid}:{e}", "sig": base64.b64encode(mac).decode()}

    return sign


@pytest.mark.parametrize("label", ["current", "backdated"])
def test_fs_attacker_with_the_current_state_cannot_reseal_an_earlier_epoch(fs_log, tmp_path, label):
    k = fs_log.keys
    forged = tmp_path / "forged" / fs_log.path.name
    # Edit an event of the first epoch; re-hash and re-sign every checkpoint with the host's
    # HMAC and Ed25519 keys and the writer's current forward-secure key.
    signers = [ed25519_signer(k.alpha), _attacker_fs_signer(fs_log.state_file, label)]
    rewrite_session(fs_log.path, forged, keys=[k.hmac], signers=signers, edit={1: b'{"epoch":0,"i":666}'})
    (tmp_path / "hmac.key").write_text(k.hmac.hex() + "\n")
    first_cp = fs_log.cps[0][0] + 1  # 1-based line of the first epoch's checkpoint
    host, fs_only, everything = ledger_many(
        [
            ("verify", forged, "--pubkey", k.valpha, "--key-file", tmp_path / "hmac.key"),
            ("verify", forged, "--fs-seed", fs_log.seed_file, "--json"),
            (
                "verify",
                forged,
                "--fs-seed",
                fs_log.seed_file,
                "--pubkey",
                k.valpha,
                "--key-file",
                tmp_path / "hmac.key",
                "--json",
            ),
        ]
    )
    assert host.code == 0, str(host)  # the host's own keys cannot tell
    for r in (fs_only, everything):
        assert r.code == 1, str(r)
        err = r.json()["files"][0]["first_error"]
        assert (err["line"], err["reason"]) == (first_cp, "bad_signature"), str(r)
        assert "hmac-sha256-fs" in err["detail"]
        want = "does not match the line's time" if label == "current" else "does not verify"
        assert want in err["detail"], err


def _seed_signer(seed: fsseal.FsSeed, shift: dict[int, int] | None = None):
    """An honest forward-secure signer from the seed (the auditor could); ``shift`` moves the
    epoch used for lines of a given epoch (a genuine MAC, for another epoch)."""
    shift = shift or {}

    def sign(text: bytes, now: float) -> dict:
        e = seed.epoch_at(now)
        e = shift.get(e, e)
        mac = hmac.new(fsseal.epoch_key(seed.seed, e), text, hashlib.sha256).digest()
        return {"alg": "hmac-sha256-fs", "key": f"fs:{seed.seed_id}:{e}", "sig": base64.b64encode(mac).decode()}

    return sign


def test_fs_rewrite_helper_reproduces_the_writer_byte_for_byte(fs_log, tmp_path):
    k = fs_log.keys
    same = rewrite_session(
        fs_log.path,
        tmp_path / "same.ndjson",
        keys=[k.hmac],
        signers=[ed25519_signer(k.alpha), _seed_signer(fs_log.seed)],
    )
    assert same == fs_log.path.read_bytes()


def test_fs_signature_for_another_epoch_than_the_line_time_fails(fs_log, tmp_path):
    seed = fs_log.seed
    (mid_seq, mid_ts, _), (last_seq, _, _) = fs_log.cps[1], fs_log.cps[2]
    mid_epoch = seed.epoch_at(ts_seconds(mid_ts))
    shifted = tmp_path / "shifted" / fs_log.path.name
    rewrite_session(fs_log.path, shifted, keys=[], signers=[_seed_signer(seed, {mid_epoch: mid_epoch + 1})])
    # The third checkpoint's line claims the first epoch's time (and is MACed for it): backwards.
    backwards = tmp_path / "backwards" / fs_log.path.name
    rewrite_session(fs_log.path, backwards, keys=[], signers=[_seed_signer(seed)], ts={last_seq: fs_log.cps[0][1]})
    r1, r2, control = ledger_many(
        [
            ("verify", shifted, "--fs-seed", fs_log.seed_file, "--json"),
            ("verify", backwards, "--fs-seed", fs_log.seed_file, "--json"),
            ("verify", backwards, "--json"),  # no key: the chain itself is fine
        ]
    )
    assert r1.code == 1, str(r1)
    err = r1.json()["files"][0]["first_error"]
    assert (err["line"], err["reason"]) == (mid_seq + 1, "bad_signature")
    assert f"epoch {mid_epoch + 1} does not match the line's time (epoch {mid_epoch})" in err["detail"]
    assert r2.code == 1, str(r2)
    err = r2.json()["files"][0]["first_error"]
    assert (err["line"], err["reason"]) == (last_seq + 1, "bad_signature") and "backwards" in err["detail"]
    assert control.code == 0, str(control)


# ==== 4. key rotation =====================================================================


def test_rotation_any_trusted_key_and_signed_by_names_them(tmp_path, keys):
    root = tmp_path / "root"
    s1 = write_session(root, keys, [1], signers=(keys.alpha,))
    s2 = write_session(root, keys, [1, 1], signers=(keys.alpha, keys.beta))
    s3 = write_session(root, keys, [2], signers=(keys.beta,))
    trusted = tmp_path / "trusted.pub"
    trusted.write_text(f"# auditors' keys\n{keys.valpha}\n\n{keys.vbeta}\n")
    both, only_alpha, only_beta = ledger_many(
        [
            ("verify", root / NS, "--pubkey", trusted, "--json"),
            ("verify", root / NS, "--pubkey", keys.valpha, "--json"),
            ("verify", root / NS, "--pubkey", keys.vbeta, "--json"),
        ]
    )
    a, b = keys.alpha.key_name(), keys.beta.key_name()
    assert both.code == 0, str(both)
    files = {Path(f["path"]).name: f for f in both.json()["files"]}
    assert [Path(p).name for p in files] == [s1.name, s2.name, s3.name]
    assert [s["keys"] for s in files[s1.name]["signed_by"]] == [[a], [a]]
    assert [s["keys"] for s in files[s2.name]["signed_by"]] == [[a, b]] * 3
    assert [s["keys"] for s in files[s3.name]["signed_by"]] == [[b], [b]]
    assert [files[p.name]["signers"] for p in (s1, s2, s3)] == [[a], [a, b], [b]]

    assert only_alpha.code == 1, str(only_alpha)
    got = {Path(f["path"]).name: f for f in only_alpha.json()["files"]}
    assert got[s1.name]["first_error"] is None and got[s2.name]["first_error"] is None
    assert [s["keys"] for s in got[s2.name]["signed_by"]] == [[a]] * 3  # beta's unknown: ignored
    assert (got[s3.name]["first_error"]["line"], got[s3.name]["first_error"]["reason"]) == (4, "bad_signature")

    assert only_beta.code == 1, str(only_beta)
    got = {Path(f["path"]).name: f for f in only_beta.json()["files"]}
    assert got[s1.name]["first_error"]["reason"] == "bad_signature"
    assert got[s2.name]["first_error"] is None and got[s3.name]["first_error"] is None


# ==== 5. proofs ===========================================================================


@dataclass
class ProofLog:
    path: Path
    lines: list[bytes]
    leaves: list[bytes]
    origin: str
    sizes: list[int]  # checkpoint sizes, seal included


@pytest.fixture(scope="module")
def proof_log(tmp_path_factory) -> tuple[ProofLog, Keys]:
    d = tmp_path_factory.mktemp("proofs")
    keys = make_keys(d / "keys")
    path = write_session(d / "root", keys, [1, 2, 1, 3])
    lines = file_lines(path)
    origin = json.loads(parse_line(lines[0])[3])["origin"]
    sizes = [seq for seq, _, _ in checkpoint_lines(path)]
    assert sizes == [2, 5, 7, 11, 12]
    return ProofLog(path, lines, [ref_leaf(x) for x in lines], origin, sizes), keys


def expected_tlog_proof(log: ProofLog, keys: Keys, seq: int, size: int) -> bytes:
    text = signed_text_of(log.path, log.origin, log.leaves, size)
    sig = base64.b64encode(ref_key_hash("alpha", keys.alpha.public_key) + keys.alpha.sign(text))
    head = [b"c2sp.org/tlog-proof@v1", b"extra " + base64.b64encode(log.lines[seq]), b"index %d" % seq]
    head += [base64.b64encode(h) for h in ref_path(seq, log.leaves[:size])]
    return b"\n".join(head) + b"\n\n" + text + b"\n" + f"{EM_DASH} alpha ".encode() + sig + b"\n"


# (seq, size): line 0, the checkpoint line of size 2 inside a later tree, last leaves, a
# tree of one power of two, and the default (latest) checkpoint.
PAIRS = [(0, 2), (1, 2), (2, 5), (4, 7), (0, 11), (10, 11), (6, None)]


def test_prove_inclusion_and_verify_proof_offline(proof_log, tmp_path):
    log, keys = proof_log
    proofs = ledger_many(
        [("prove", "inclusion", log.path, "--seq", seq, *(("--size", size) if size else ())) for seq, size in PAIRS]
    )
    calls = []
    for i, ((seq, size), r) in enumerate(zip(PAIRS, proofs, strict=True)):
        assert r.code == 0, str(r)
        assert r.out == expected_tlog_proof(log, keys, seq, size or log.sizes[-1]), str(r)
        fresh = tmp_path / f"auditor-{i}"  # nothing but the proof file
        fresh.mkdir()
        (fresh / "event.proof").write_bytes(r.out)
        origin = ("--origin", log.origin) if i % 2 else ()
        calls.append((fresh, ("verify-proof", "event.proof", "--pubkey", keys.valpha, *origin, "--json")))
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda c: ledger(*c[1], cwd=c[0]), calls))
    for (seq, size), r in zip(PAIRS, results, strict=True):
        assert r.code == 0, str(r)
        got = r.json()
        size = size or log.sizes[-1]
        assert (got["ok"], got["origin"], got["index"], got["size"]) == (True, log.origin, seq, size)
        assert got["root"] == ref_mth(log.leaves[:size]).hex() and got["leaf"] == log.leaves[seq].hex()
        assert base64.b64decode(got["entry"]) == log.lines[seq] and got["verified"] == ["alpha"]
        assert f"OK: seq {seq} is in {log.origin} at size {size}, signed by alpha" in r.err


def test_prove_inclusion_json_and_stdin(proof_log, tmp_path):
    log, keys = proof_log
    r = ledger("prove", "inclusion", log.path, "--seq", "5", "--size", "11", "--json")
    assert r.code == 0, str(r)
    got = r.json()
    assert got["type"] == "inclusion" and (got["origin"], got["index"], got["size"]) == (log.origin, 5, 11)
    assert got["proof"] == [h.hex() for h in ref_path(5, log.leaves[:11])]
    assert got["root"] == ref_mth(log.leaves[:11]).hex() and got["leaf"] == log.leaves[5].hex()
    assert base64.b64decode(got["entry"]) == log.lines[5] and got["checkpoint_line"] == 12
    assert {s["alg"] for s in got["sigs"]} == {"hmac-sha256", "ed25519"}
    proof = expected_tlog_proof(log, keys, 5, 11)
    piped = ledger("verify-proof", "-", "--pubkey", keys.valpha, cwd=tmp_path, stdin=proof)
    assert piped.code == 0 and "OK: seq 5" in piped.err, str(piped)
    uncovered = ledger("prove", "inclusion", log.path, "--seq", "7", "--size", "7")
    assert_one_line_error(uncovered, 2)


@pytest.mark.parametrize("old,new", [(1, 2), (2, 5), (3, 7), (5, 11), (7, None), (12, None), (4, 4)])
def test_prove_consistency(proof_log, old, new):
    log, _ = proof_log
    if new == 4:  # no checkpoint of size 4: a usage error, not a proof
        assert_one_line_error(ledger("prove", "consistency", log.path, "--from", "2", "--to", "4"), 2)
        return
    to = ("--to", new) if new else ()
    text, js = ledger_many(
        [
            ("prove", "consistency", log.path, "--from", old, *to),
            ("prove", "consistency", log.path, "--from", old, *to, "--json"),
        ]
    )
    n = new or log.sizes[-1]
    expected = ref_subproof(old, log.leaves[:n], True)
    old_root, new_root = ref_mth(log.leaves[:old]), ref_mth(log.leaves[:n])
    assert text.code == 0, str(text)
    assert text.out.decode().splitlines() == [
        f"origin {log.origin}",
        f"old {old} {old_root.hex()}",
        f"new {n} {new_root.hex()}",
        *[f"proof {h.hex()}" for h in expected],
    ]
    assert js.code == 0, str(js)
    got = js.json()
    assert (got["type"], got["origin"], got["old_size"], got["new_size"]) == ("consistency", log.origin, old, n)
    assert (got["old_root"], got["new_root"]) == (old_root.hex(), new_root.hex())
    assert got["proof"] == [h.hex() for h in expected]


def _flip_hash(proof: bytes, which: int) -> bytes:
    lines = proof.split(b"\n")
    hashes = [i for i, x in enumerate(lines[3:], 3) if re.fullmatch(rb"[A-Za-z0-9+/]{43}=", x)]
    i = hashes[which]
    raw = bytearray(base64.b64decode(lines[i]))
    raw[7] ^= 0x01
    lines[i] = base64.b64encode(bytes(raw))
    return b"\n".join(lines)


def _edit_extra(proof: bytes, fn) -> bytes:
    lines = proof.split(b"\n")
    lines[1] = b"extra " + base64.b64encode(fn(base64.b64decode(lines[1][6:])))
    return b"\n".join(lines)


def _note_part(proof: bytes, fn) -> bytes:
    head, _, note = proof.partition(b"\n\n")
    return head + b"\n\n" + fn(note)


OTHER_ALPHA = notes.Signer("alpha", bytes(range(32))).verifier_key()  # same name, another key
BAD_PROOFS = {
    # name: (mutation of the proof bytes, extra arguments instead of the good key, exit code)
    "first_hash_flipped": (lambda p: _flip_hash(p, 0), None, 1),
    "last_hash_flipped": (lambda p: _flip_hash(p, -1), None, 1),
    "hash_dropped": (lambda p: p.replace(p.split(b"\n")[3] + b"\n", b"", 1), None, 1),
    "hash_added": (lambda p: p.replace(b"\n\n", b"\n" + p.split(b"\n")[3] + b"\n\n", 1), None, 1),
    "index_changed": (lambda p: p.replace(b"\nindex 4\n", b"\nindex 3\n"), None, 1),
    "entry_edited": (lambda p: _edit_extra(p, lambda e: e.replace(b'"n":', b'"n":1')), None, 1),
    "entry_cut": (lambda p: _edit_extra(p, lambda e: e[:-1]), None, 1),
    "checkpoint_size_changed": (lambda p: _note_part(p, lambda n: n.replace(b"\n11\n", b"\n10\n", 1)), None, 1),
    "signature_removed": (lambda p: _note_part(p, lambda n: n[: n.rindex(b"\n\n") + 2]), None, 1),
    "signature_altered": (
        lambda p: _note_part(p, lambda n: n[:-6] + (b"AAAA=\n" if n[-6:-2] != b"AAAA" else b"BBBB=\n")),
        None,
        1,
    ),
    "not_a_proof": (lambda p: b"hello\n\n" + p, None, 1),
    "wrong_key": (None, ("--pubkey", "BETA"), 1),
    "same_name_other_key": (None, ("--pubkey", OTHER_ALPHA), 1),
    "wrong_origin": (None, ("--pubkey", "ALPHA", "--origin", "ledger/edge-1/20261123T200000.000000Z-other"), 1),
    "malformed_key": (None, ("--pubkey", "alpha+0000+AAAA"), 2),
}


@pytest.fixture(scope="module")
def bad_proof_runs(proof_log, tmp_path_factory) -> dict[str, tuple[Run, bytes]]:
    """verify-proof on every altered proof, run together once (each from a fresh directory)."""
    log, keys = proof_log
    good = expected_tlog_proof(log, keys, 4, 11)
    assert ledger("prove", "inclusion", log.path, "--seq", "4", "--size", "11").out == good
    jobs = []
    for name, (mutate, args, _) in BAD_PROOFS.items():
        d = tmp_path_factory.mktemp(name)
        data = mutate(good) if mutate else good
        if mutate:
            assert data != good, name
        (d / "p.proof").write_bytes(data)
        args = args or ("--pubkey", "ALPHA")
        args = tuple({"ALPHA": keys.valpha, "BETA": keys.vbeta}.get(a, a) for a in args)
        jobs.append((name, d, ("verify-proof", "p.proof", *args), data))
    with ThreadPoolExecutor(max_workers=4) as pool:
        runs = list(pool.map(lambda j: ledger(*j[2], cwd=j[1]), jobs))
    good_dir = tmp_path_factory.mktemp("good")
    (good_dir / "p.proof").write_bytes(good)
    control = ledger("verify-proof", "p.proof", "--pubkey", keys.valpha, "--origin", log.origin, cwd=good_dir)
    assert control.code == 0, str(control)
    return {name: (r, data) for (name, _, _, data), r in zip(jobs, runs, strict=True)}


@pytest.mark.parametrize("name", list(BAD_PROOFS))
def test_verify_proof_rejects(bad_proof_runs, name):
    r, _ = bad_proof_runs[name]
    assert_one_line_error(r, BAD_PROOFS[name][2])
    assert r.out == b"" and "OK:" not in r.err


# ==== 6. checkpoints that left the box: --trust and --witness =============================


def test_trusted_checkpoint_catches_history_rewritten_with_the_host_keys(tmp_path, keys):
    path = write_session(tmp_path / "root", keys, [2, 3, 2])  # checkpoints 3, 7, 10; seal 11
    saved = ledger("checkpoint", path, "--size", "3")
    assert saved.code == 0, str(saved)
    note = tmp_path / "auditor" / "saved.note"
    note.parent.mkdir()
    note.write_bytes(saved.out)
    (tmp_path / "hmac.key").write_text(keys.hmac.hex() + "\n")
    host = [ed25519_signer(keys.alpha)]
    rewritten = tmp_path / "rewritten" / NS / path.name  # an event before size 3 changed
    rewrite_session(path, rewritten, keys=[keys.hmac], signers=host, edit={1: b'{"n":0,"who":"mallory"}'})
    later = tmp_path / "later" / NS / path.name  # only events after size 3 changed
    rewrite_session(path, later, keys=[keys.hmac], signers=host, edit={5: b'{"n":3,"who":"mallory"}'})
    hmac_file = tmp_path / "hmac.key"
    ok, plain, caught, prefix_kept = ledger_many(
        [
            ("verify", path, "--pubkey", keys.valpha, "--trust", note),
            ("verify", rewritten, "--pubkey", keys.valpha, "--key-file", hmac_file),
            ("verify", rewritten, "--pubkey", keys.valpha, "--key-file", hmac_file, "--trust", note, "--json"),
            ("verify", later, "--pubkey", keys.valpha, "--trust", note),
        ]
    )
    assert ok.code == 0 and "trusted checkpoint 1: consistent" in ok.err and "signed by alpha" in ok.err, str(ok)
    assert plain.code == 0, str(plain)  # (!) re-signed by the host's own keys: plain verify passes
    assert caught.code == 1, str(caught)
    got = caught.json()
    assert got["ok"] is False and got["files"][0]["first_error"] is None
    (anchor,) = got["anchors"]
    assert anchor["ok"] is False and "history was rewritten" in anchor["detail"]
    assert prefix_kept.code == 0, str(prefix_kept)  # the saved note pins the first 3 lines only


def test_trusted_checkpoint_must_be_signed_and_match_a_local_session(tmp_path, keys):
    path = write_session(tmp_path / "root", keys, [2, 1])
    other = write_session(tmp_path / "elsewhere", keys, [1])
    note_other = tmp_path / "other.note"
    r = ledger("checkpoint", other)
    assert r.code == 0, str(r)
    note_other.write_bytes(r.out)
    forged_note = tmp_path / "forged.note"  # the right tree, signed by a key not trusted
    cp = checkpoint_lines(path)[0]
    origin = json.loads(parse_line(file_lines(path)[0])[3])["origin"]
    forged_note.write_bytes(notes.sign_note(checkpoint_text(origin, cp[0], bytes.fromhex(cp[2]["root"])), [keys.beta]))
    missing, unsigned = ledger_many(
        [
            ("verify", path, "--pubkey", keys.valpha, "--trust", note_other),
            ("verify", path, "--pubkey", keys.valpha, "--trust", forged_note),
        ]
    )
    assert missing.code == 1 and "INCONSISTENT" in missing.err and "no local session has origin" in missing.err
    assert unsigned.code == 1 and "INCONSISTENT" in unsigned.err and "not a valid signed checkpoint" in unsigned.err


def test_witness_store_catches_rewritten_and_truncated_history(tmp_path, keys):
    from ledger.cold.archive import Archiver
    from ledger.cold.stores import open_store

    root, cold = tmp_path / "hot", tmp_path / "cold"
    path = write_session(root, keys, [2, 3, 2])  # checkpoints 3, 7, 10; seal 11
    original = path.read_bytes()
    store = open_store(f"file://{cold}")
    with Ledger.open(root, namespace=NS, hmac_key=keys.hmac, signers=(keys.alpha,), **SLOW) as host:
        archiver = Archiver(root, NS, store, host, [keys.hmac], hot_retention_s=10**9)
        try:
            report = archiver.run_once()
        finally:
            archiver.close()
    assert report.errors == [] and report.local_deleted == [] and path.read_bytes() == original

    # <namespace>/checkpoints/<session>/<size>.checkpoint: standard notes, same text as the line.
    stored_dir = cold / NS / "checkpoints" / path.stem
    stored = {int(p.name.removesuffix(".checkpoint")): p.read_bytes() for p in stored_dir.iterdir()}
    assert sorted(stored) == [3, 7, 10, 11]
    lines = file_lines(path)
    leaves = [ref_leaf(x) for x in lines]
    origin = json.loads(parse_line(lines[0])[3])["origin"]
    for size, note in stored.items():
        text = signed_text_of(path, origin, leaves, size)
        assert note.startswith(text + b"\n")
        assert open_note(note, [keys.valpha]) == ["alpha"]  # the HMAC line is an unknown key: skipped
        names = [x.split(" ")[1] for x in note[len(text) + 1 :].decode().splitlines()]
        assert sorted(names) == sorted(["alpha", f"hmac-{key_id(keys.hmac)}"])

    # The history rewritten and re-signed with the host's keys; the log cut short.
    bad = tmp_path / "bad"
    rewrite_session(
        path, bad / NS / path.name, keys=[keys.hmac], signers=[ed25519_signer(keys.alpha)], edit={4: b'{"n":2}'}
    )
    cut = tmp_path / "cut"
    (cut / NS).mkdir(parents=True)
    (cut / NS / path.name).write_bytes(b"".join(lines[:8]))  # the checkpoint of size 7, then one line
    url = f"file://{cold}"
    real, plain, rewritten, truncated, cut_alone = ledger_many(
        [
            ("verify", root, "--pubkey", keys.valpha, "--witness", url),
            ("verify", bad, "--pubkey", keys.valpha),
            ("verify", bad, "--pubkey", keys.valpha, "--witness", url),
            ("verify", cut, "--pubkey", keys.valpha, "--allow-unsealed", "--witness", url, "--json"),
            ("verify", cut, "--pubkey", keys.valpha, "--allow-unsealed"),
        ]
    )
    assert real.code == 0, str(real)
    assert real.err.count(": consistent: ") >= 4 and "INCONSISTENT" not in real.err
    assert plain.code == 0, str(plain)
    assert rewritten.code == 1, str(rewritten)
    verdicts = {
        int(m[1]): m[2]
        for m in re.finditer(r"/checkpoints/[^/]+/(\d+)\.checkpoint: (consistent|INCONSISTENT)", rewritten.err)
    }
    assert verdicts == {3: "consistent", 7: "INCONSISTENT", 10: "INCONSISTENT", 11: "INCONSISTENT"}, rewritten.err
    assert "history was rewritten" in rewritten.err
    assert cut_alone.code == 0, str(cut_alone)  # a prefix of a valid chain is valid on its own
    assert truncated.code == 1, str(truncated)
    anchors = {int(a["source"].rsplit("/", 1)[1].split(".")[0]): a for a in truncated.json()["anchors"]}
    assert anchors[3]["ok"] and anchors[7]["ok"]
    assert not anchors[10]["ok"] and not anchors[11]["ok"] and "cut short" in anchors[10]["detail"]


# ==== 7. bugs found ========================================================================


def test_verify_summary_says_ed25519_signatures_were_checked(tmp_path, keys):
    path = write_session(tmp_path / "root", keys, [1])
    r = ledger("verify", path, "--pubkey", keys.valpha)
    assert r.code == 0, str(r)
    assert "NOT checked" not in r.err, r.err


def test_fs_signature_cannot_be_stripped_when_other_keys_are_trusted(fs_log, tmp_path):
    k = fs_log.keys
    stripped = tmp_path / "stripped" / fs_log.path.name
    rewrite_session(fs_log.path, stripped, keys=[k.hmac], signers=[ed25519_signer(k.alpha)], edit={1: b'{"i":666}'})
    r = ledger("verify", stripped, "--fs-seed", fs_log.seed_file, "--pubkey", k.valpha, "--json")
    assert r.code == 1, str(r)
    assert r.json()["files"][0]["first_error"]["line"] == fs_log.cps[0][0] + 1


def _big_sessions(d: Path, signer: notes.Signer, hmac_key: bytes) -> None:
    """Two sealed sessions of about 9 MiB each (above verify.PARALLEL_MIN_BYTES together)."""
    prev = None
    pad = b'{"pad":"' + b"x" * 1000 + b'"}'
    ts = "2026-11-23T20:00:00.000000Z"
    for sid in ("20261123T200000.000000Z-big1", "20261123T200100.000000Z-big2"):
        b = SessionBuilder(NS, sid, [hmac_key], prev, signers=[ed25519_signer(signer)])
        out = [b.opened_line(ts)]
        for i in range(9000):
            out.append(b.line("app.event", pad, ts))
            if i % 3000 == 2999:
                out.append(b.checkpoint_line(ts))
        out.append(b.seal_line(ts, "closed", {}))
        (d / f"{sid}.ndjson").write_bytes(b"".join(out))
        prev = b.summary()


def test_parallel_verify_keeps_the_verifier_keys(tmp_path, keys):
    d = tmp_path / NS
    d.mkdir()
    _big_sessions(d, keys.alpha, keys.hmac)  # signed by alpha (and HMAC)
    r = ledger("verify", d, "--jobs", "2", "--pubkey", keys.vbeta, "--json")  # trusting only beta
    assert r.code == 1, str(r)
    assert all(f["first_error"]["reason"] == "bad_signature" for f in r.json()["files"])
