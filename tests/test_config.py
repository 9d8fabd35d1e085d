"""The configuration, typed all the way down (issue 13).

* every table is one msgspec Struct converted once by load_config, unknown keys and
  out-of-range values refused: ``[writer]`` is WriterConfig, ``[capture]`` CaptureOptions;
* ``ledger.example.toml`` names every field of every table and its set values are the
  defaults (so it cannot drift), and its commented examples load too;
* ``signer_key_file`` / ``fs_state_file`` make the CLI's writer sign: a session written by
  ``ledger archive`` carries Ed25519 and forward-secure signatures, its shipped checkpoint
  notes open with a standard note verifier and ``ledger verify --pubkey`` passes.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from ledger import fsseal, notes
from ledger.capture import CaptureOptions
from ledger.cli.options import _capture_options, _writer
from ledger.cold.stores import StoreOptions
from ledger.config import ColdConfig, Config, WriterConfig, load_config
from ledger.errors import UsageError
from ledger.keys import load_key_file, write_key_file
from ledger.writer import Ledger

EXAMPLE = Path(__file__).resolve().parent.parent / "ledger.example.toml"
NS = "edge-1"


# ---- the example file ------------------------------------------------------------------


def _tables(cls: type = Config, name: str = "") -> dict[str, type]:
    """Table name ("" for the top level) -> the Struct that holds it."""
    out = {name: cls}
    for f in msgspec.structs.fields(cls):
        if isinstance(f.type, type) and issubclass(f.type, msgspec.Struct):
            out |= _tables(f.type, f"{name}.{f.name}".lstrip("."))
    return out


def _keys(cls: type) -> set[str]:
    return {
        f.name
        for f in msgspec.structs.fields(cls)
        if not (isinstance(f.type, type) and issubclass(f.type, msgspec.Struct))
    }


_KEY_LINE = re.compile(r"^(#\s?)?([a-z][a-z0-9_]*) = ")


def _example_keys() -> dict[str, dict[str, bool]]:
    """Table -> {key: set (True) or commented out (False)} as the example file names them."""
    found: dict[str, dict[str, bool]] = {"": {}}
    table = ""
    for line in EXAMPLE.read_text().splitlines():
        if m := re.match(r"^\[([a-z0-9_.]+)\]$", line):
            table = m.group(1)
            assert table not in found, f"[{table}] twice"
            found[table] = {}
        elif m := _KEY_LINE.match(line):
            assert m.group(2) not in found[table], f"{m.group(2)} twice in [{table}]"
            found[table][m.group(2)] = m.group(1) is None
    return found


def test_the_example_names_every_key_of_every_table():
    named = _example_keys()
    tables = _tables()
    assert set(named) == set(tables)
    for table, cls in tables.items():
        assert set(named[table]) == _keys(cls), f"[{table}]"


def test_the_example_sets_the_defaults_and_comments_out_only_what_has_none():
    assert load_config(EXAMPLE, env={}) == load_config(env={})
    computed = {("", "namespace"), ("capture", "capture_dir")}  # the host name, <root>/<ns>/captures
    tables = _tables()
    for table, keys in _example_keys().items():
        defaults = tables[table]()
        for key, is_set in keys.items():
            if not is_set:
                assert getattr(defaults, key) is None or (table, key) in computed, f"[{table}] {key} has a default"


def test_the_examples_commented_out_are_valid(tmp_path):
    text = re.sub(r"(?m)^# ?([a-z][a-z0-9_]* = )", r"\1", EXAMPLE.read_text())
    (tmp_path / "all.toml").write_text(text)
    cfg = load_config(tmp_path / "all.toml", env={})
    assert cfg.signer_key_file and cfg.fs_state_file and cfg.cold.store and cfg.cold.s3.sse == "aws:kms"
    assert cfg.capture.capture_dir == "/var/lib/ledger/edge-1.eu/captures"


# ---- the typed tables ------------------------------------------------------------------


def _load(tmp_path: Path, text: str, env: dict | None = None) -> Config:
    path = tmp_path / "ledger.toml"
    path.write_text(text)
    return load_config(path, env=env or {})


def test_every_table_is_its_struct(tmp_path):
    cfg = _load(
        tmp_path,
        '[writer]\ndurability = "always"\ncheckpoint_every = 10\n'
        '[capture]\nsnaplen = 96\ninterface = "eth0"\n[cold]\nstore = "file:///srv/cold"\n',
    )
    assert isinstance(cfg.writer, WriterConfig) and isinstance(cfg.capture, CaptureOptions)
    assert isinstance(cfg.cold, ColdConfig) and isinstance(cfg.cold.s3, StoreOptions)
    assert cfg.writer == WriterConfig(durability="always", checkpoint_every=10)
    assert (cfg.capture.snaplen, cfg.capture.interface) == (96, "eth0")


@pytest.mark.parametrize(
    "text",
    [
        "[writer]\ndurabilty = 'always'\n",  # a typo
        "[writer]\ndurability = 'sometimes'\n",
        "[writer]\nrotate_bytes = 10\n",
        "[writer]\nqueue_size = 0\n",
        "[capture]\nsnaplen = 10\n",
        "[capture]\ninterface = 'eth0; rm -rf /'\n",  # the anchored pattern: no prefix match
        '[capture]\ninterface = "eth0\\n"\n',  # $ must not match before a final newline
        "[capture]\ncapture_dir = ''\n",
        "[capture]\ntcpdump = 'x'\n",
        "signer_key_file = ''\n",
        'fs_state_file = "a\\u0000b"\n',
        "namespace = 'edge 1'\n",
        'namespace = "edge-1\\n"\n',
        'host_id = "edge-1\\n"\n',
        "[signer]\nkey = 'x'\n",
    ],
)
def test_a_bad_key_or_value_fails_at_load(tmp_path, text):
    with pytest.raises(UsageError, match=r"^config .*ledger\.toml: "):
        _load(tmp_path, text)


def test_capture_dir_defaults_to_the_namespace_directory(tmp_path):
    cfg = load_config(env={"LEDGER_ROOT": str(tmp_path), "LEDGER_NAMESPACE": NS})
    assert cfg.capture.capture_dir == str(tmp_path / NS / "captures")
    cfg = load_config(env={}, root=str(tmp_path / "other"), namespace=NS)  # the CLI's --root wins
    assert cfg.capture.capture_dir == str(tmp_path / "other" / NS / "captures")
    given = _load(tmp_path, f'root = "{tmp_path}"\n[capture]\ncapture_dir = "/srv/pcaps"\n')
    assert given.capture.capture_dir == "/srv/pcaps"


def test_the_signing_files_come_from_the_environment(tmp_path):
    env = {"LEDGER_SIGNER_KEY_FILE": "/k/signer.key", "LEDGER_FS_STATE_FILE": "/k/fs.state"}
    cfg = _load(tmp_path, 'signer_key_file = "/etc/other.key"\n', env)
    assert (cfg.signer_key_file, cfg.fs_state_file) == ("/k/signer.key", "/k/fs.state")


def test_the_cli_capture_options_are_the_table_with_the_command_options_over_it(tmp_path):
    cfg = _load(tmp_path, f'root = "{tmp_path}"\nnamespace = "{NS}"\n[capture]\nsnaplen = 96\nmax_files = 3\n')
    assert _capture_options(cfg) is cfg.capture
    opts = _capture_options(cfg, interface="lo", duration=5)
    assert (opts.snaplen, opts.max_files, opts.interface, opts.duration_s) == (96, 3, "lo", 5)
    with pytest.raises(UsageError):
        _capture_options(cfg, interface="lo; reboot")


def test_the_cli_writer_takes_the_writer_table(tmp_path):
    key = tmp_path / "hmac.key"
    write_key_file(key)
    cfg = _load(tmp_path, f'root = "{tmp_path}"\nnamespace = "{NS}"\n[writer]\ncheckpoint_every = 7\n')
    with _writer(cfg, (load_key_file(key),)) as led:
        assert led.config == WriterConfig(checkpoint_every=7)
    with Ledger.open(tmp_path, NS, load_key_file(key), config=cfg.writer, durability="always") as led:
        assert led.config == WriterConfig(checkpoint_every=7, durability="always")  # keywords win
    with pytest.raises(UsageError, match="invalid writer option"):
        Ledger.open(tmp_path, NS, load_key_file(key), config=cfg.writer, checkpoint_every=0)


# ---- the CLI signs with the configured keys ----------------------------------------------


def ledger(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    return subprocess.run(
        [sys.executable, "-m", "ledger.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**clean, **(env or {})},
    )


@pytest.fixture
def signed_site(tmp_path):
    """A root whose sessions are signed by a keygen-made Ed25519 key and forward-secure
    state, and a config naming both."""
    keys = tmp_path / "keys"
    keys.mkdir()
    r = ledger("keygen", "edge-1-signer", "--out", str(keys / "signer.key"), "--hmac", str(keys / "hmac.key"))
    assert r.returncode == 0, r.stderr
    vkey = r.stdout.splitlines()[-1]
    r = ledger("keygen", "--fs-seed", str(keys / "fs.seed"))
    assert r.returncode == 0, r.stderr
    root = tmp_path / "root"
    signer = notes.load_signer_key_file(keys / "signer.key")
    for i in range(2):
        kw = {"signers": (signer,), "fs_state_file": keys / "fs.seed.state", "checkpoint_every": 5}
        with Ledger.open(root, NS, load_key_file(keys / "hmac.key"), **kw) as led:
            for j in range(12):
                led.record("conn.closed", {"i": i, "j": j})
    config = tmp_path / "ledger.toml"
    config.write_text(
        f'root = "{root}"\nnamespace = "{NS}"\nhmac_key_file = "{keys / "hmac.key"}"\n'
        f'signer_key_file = "{keys / "signer.key"}"\nfs_state_file = "{keys / "fs.seed.state"}"\n'
        f'[cold]\nstore = "{(tmp_path / "cold").as_uri()}"\n'
    )
    return root, config, keys, vkey


def _shipped_notes(cold: Path) -> list[Path]:
    return sorted((cold / NS / "checkpoints").rglob("*.checkpoint"))


def test_archive_signs_with_the_configured_signer(signed_site, tmp_path):
    root, config, keys, vkey = signed_site
    for _ in range(2):  # the second pass ships the first pass's own session
        r = ledger("archive", "--config", str(config))
        assert r.returncode == 0, r.stderr
    sessions = sorted((root / NS).glob("*.ndjson"))
    archivers = [p for p in sessions if b'"kind":"archive.' in p.read_bytes()]
    assert archivers, "the first archive pass wrote no session"
    seal = archivers[0].read_bytes().splitlines()[-1]
    for alg in (b'"alg":"ed25519"', b'"alg":"' + fsseal.ALG.encode() + b'"'):
        assert alg in seal, seal

    verifier = notes.load_verifier_keys([vkey])
    shipped = _shipped_notes(tmp_path / "cold")
    assert any(archivers[0].stem in str(p) for p in shipped)
    for note in shipped:
        notes.open_note(note.read_bytes(), verifier)  # raises on a note no trusted key signed

    r = ledger(
        "verify", "--json", "--pubkey", vkey, "--fs-seed", str(keys / "fs.seed"),
        "--key-file", str(keys / "hmac.key"), str(root / NS),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    files = {Path(f["path"]).name: f for f in report["files"]}
    mine = files[archivers[0].name]
    assert mine["first_error"] is None and mine["sealed"], mine
    assert "edge-1-signer" in " ".join(mine["signers"]), mine["signers"]


def test_an_exposed_signer_key_is_refused_before_anything_is_written(signed_site):
    root, config, keys, _ = signed_site
    for name in ("signer.key", "fs.seed.state"):
        (keys / name).chmod(0o640)
        before = sorted(p.name for p in (root / NS).iterdir())
        r = ledger("archive", "--config", str(config))
        assert r.returncode == 2, r.stderr
        assert r.stderr.startswith("ledger: error: refusing to sign with an exposed key: ") and name in r.stderr
        assert sorted(p.name for p in (root / NS).iterdir()) == before
        (keys / name).chmod(0o600)
