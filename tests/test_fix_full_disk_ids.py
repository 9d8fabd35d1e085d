"""Identity and key files on a full disk: a failed write leaves nothing behind.

A real 4 MiB tmpfs filled with dd (skipped with the reason when it cannot be mounted).
Before the fix, ``<root>/.ledger-id`` was left empty and the root was refused for good
("not a valid identity") even after space came back; keygen left empty key files.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from test_archive_safety import NS, ledger_cli

from ledger.errors import UsageError
from ledger.identity import ID_FILE, root_identity


@pytest.fixture
def full(tmp_path):
    mnt = tmp_path / "full"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {r.stderr.decode().strip()}")
    try:
        (mnt / "root").mkdir()
        (mnt / "keys").mkdir()
        subprocess.run(["dd", "if=/dev/zero", f"of={mnt / 'fill'}", "bs=64k"], capture_output=True)
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def _names(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


def test_root_identity_on_a_full_disk_leaves_no_file_and_works_once_space_is_back(full, tmp_path):
    root = full / "root"
    with pytest.raises(UsageError, match="cannot create the root identity"):
        root_identity(root)
    assert _names(root) == []
    key_file = tmp_path / "hmac.key"
    assert ledger_cli("keygen", "--hmac", str(key_file)).returncode == 0
    store = (tmp_path / "cold").as_uri()
    r = ledger_cli("archive", "--root", str(root), "--namespace", NS, "--key-file", str(key_file), "--store", store)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and str(root / ID_FILE) in r.stderr, r.stderr
    assert _names(root) == []

    (full / "fill").unlink()  # space is back
    ident = root_identity(root)
    assert ident.startswith("root-") and root_identity(root) == ident
    assert _names(root) == [ID_FILE]


@pytest.mark.parametrize(
    "args",
    [["--hmac", "{d}/hmac.key"], ["edge", "--out", "{d}/edge.signer.key"], ["--fs-seed", "{d}/fs.seed"]],
    ids=["hmac", "signer", "fs-seed"],
)
def test_keygen_on_a_full_disk_leaves_no_key_file(full, args):
    keys = full / "keys"
    argv = [a.format(d=keys) for a in args]
    r = ledger_cli("keygen", *argv)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith("ledger: error: ") and "No space left" in r.stderr
    assert _names(keys) == []
    (full / "fill").unlink()
    r = ledger_cli("keygen", *argv)
    assert r.returncode == 0, r.stderr
    assert all((keys / p).stat().st_size > 0 for p in _names(keys))
    again = ledger_cli("keygen", *argv)  # never overwritten
    assert again.returncode == 2 and "exists" in again.stderr, again.stderr


def test_keygen_fs_seed_whose_state_does_not_fit_leaves_no_seed(full):
    keys = full / "keys"
    fill = full / "fill"
    with open(fill, "r+b") as f:  # one page free: the seed fits, its writer state does not
        f.truncate(fill.stat().st_size - 4096)
    r = ledger_cli("keygen", "--fs-seed", str(keys / "fs.seed"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "sealing state" in r.stderr, r.stderr
    assert _names(keys) == []
