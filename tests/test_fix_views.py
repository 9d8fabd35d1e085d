"""A physically damaged .views LMDB is moved aside and rebuilt, never fatal.

Real session files, a real ``file://`` store and moto over HTTP, the real LMDB file
damaged on disk (random bytes over its pages, or truncated so that mmap would SIGBUS),
the ``ledger`` command run as an operator runs it.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from test_archive_safety import NS, backend, cli_env, keyed, ledger_cli  # noqa: F401
from test_cold import make_sessions

from ledger.projections import Projector
from ledger.viewcheck import meta_problem


def _scribble(data: Path) -> None:
    with open(data, "r+b") as f:
        f.seek(8192)
        f.write(random.Random(8192).randbytes(20480 - 8192))


def _truncate(data: Path) -> None:
    with open(data, "r+b") as f:
        f.truncate(8192)


def _archived(backend, tmp_path, keyed):  # noqa: F811
    key_file, key = keyed
    root = tmp_path / "hot"
    make_sessions(root, 3, key=key)
    backend.open()
    env = cli_env(backend)
    common = ["--root", str(root), "--namespace", NS]
    r = ledger_cli("archive", *common, "--key-file", str(key_file), "--store", backend.url(), env=env)
    assert r.returncode == 0, r.stderr
    batches = ledger_cli("batches", *common, "--json").stdout
    assert batches.count('"batch_id"') == 3
    return root, common, env, batches


def _sessions(root: Path) -> list[str]:
    return sorted(p.name for p in (root / NS).glob("*.ndjson"))


@pytest.mark.parametrize("damage", [_scribble, _truncate], ids=["random-pages", "truncated"])
def test_archive_moves_a_damaged_view_aside_and_rebuilds_it(backend, tmp_path, keyed, damage):  # noqa: F811
    key_file, _ = keyed
    root, common, env, batches = _archived(backend, tmp_path, keyed)
    damage(root / NS / ".views" / "data.mdb")
    r = ledger_cli("archive", *common, "--key-file", str(key_file), "--store", backend.url(), env=env)
    assert r.returncode == 0, r.stderr
    warnings = [line for line in r.stderr.splitlines() if line.startswith("ledger: warning:")]
    assert len(warnings) == 1 and "moved aside" in warnings[0] and "Traceback" not in r.stderr, r.stderr
    aside = list((root / NS).glob(".views.corrupt-*"))
    assert len(aside) == 1 and (aside[0] / "data.mdb").exists()  # kept as evidence
    assert ledger_cli("verify", str(root / NS), "--key-file", str(key_file)).returncode == 0
    assert ledger_cli("batches", *common, "--json").stdout.count('"batch_id"') == 4


@pytest.mark.parametrize("damage", [_scribble, _truncate], ids=["random-pages", "truncated"])
def test_rebuild_and_batches_repair_a_damaged_view(backend, tmp_path, keyed, damage):  # noqa: F811
    root, common, env, batches = _archived(backend, tmp_path, keyed)
    damage(root / NS / ".views" / "data.mdb")
    r = ledger_cli("rebuild", *common, "--store", backend.url(), env=env)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("ledger: warning:") == 1 and "3 batches" in r.stderr, r.stderr
    assert ledger_cli("batches", *common, "--json").stdout == batches

    _truncate(root / NS / ".views" / "data.mdb")  # the rebuilt file may not use the pages scribbled on
    r = ledger_cli("batches", *common, "--json", env={**env, "LEDGER_STORE": backend.url()})
    assert r.returncode == 0 and r.stdout == batches, r.stderr
    assert len(list((root / NS).glob(".views.corrupt-*"))) == 2


def test_a_damaged_view_without_a_store_is_refused_in_one_line(tmp_path, keyed, backend):  # noqa: F811
    key_file, _ = keyed
    root, common, env, _ = _archived(backend, tmp_path, keyed)
    _truncate(root / NS / ".views" / "data.mdb")
    before = _sessions(root)
    r = ledger_cli("rebuild", *common, env=env)
    assert r.returncode == 2 and "not here" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.count("ledger: error:") == 1
    assert _sessions(root) == before


def test_meta_check_catches_truncation_and_accepts_healthy_views(tmp_path):
    root = tmp_path / "hot"
    make_sessions(root, 2)
    with Projector(root, NS) as views:
        views.catch_up()
        assert views.repaired is None
    data = root / NS / ".views" / "data.mdb"
    assert meta_problem(data) is None
    _truncate(data)
    assert "last used page" in meta_problem(data)
    with Projector(root, NS) as views:
        assert views.repaired and "moved aside" in views.repaired
        views.catch_up()
        assert views.position() is not None
