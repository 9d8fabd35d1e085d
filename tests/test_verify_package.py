"""The shape of ledger.verify after issue 13: the names other modules import from it,
the job count as a call argument, the named trailer length, the module sizes."""

from __future__ import annotations

import importlib
import multiprocessing
from pathlib import Path

import pytest

import ledger.verify as verify_mod
from ledger import format as fmt
from ledger.format import format_ts
from ledger.session import SessionBuilder
from ledger.verify import Policy, parallel, verify_file, verify_path

KEY = bytes(range(32))
NS = "edge-1"
SID = "20261123T200000.000000Z-pkg"

# What ledger's modules, tools and tests import from ledger.verify today.
IMPORTED = [
    "BLOCK_SIZE",
    "GZIP_MAGIC",
    "PARALLEL_MIN_BYTES",
    "FileReport",
    "FirstError",
    "IncrementalCheck",
    "Policy",
    "VerifyReport",
    "check_last_seal",
    "check_prev_links",
    "decompose",
    "not_regular",
    "parse_header",
    "prev_link",
    "scan_chunk",
    "session_files",
    "verify_file",
    "verify_gzip",
    "verify_path",
    "verify_reader",
    "verify_stream",
    "_Chunk",
    "_Scan",
    "_Special",
    "_scan_lines",
    "_scan_blocks",
    "_finish",
    "_FileCheck",
    "_speedups",
]


def session(path: Path, events: int = 3000) -> Path:
    b = SessionBuilder(NS, SID, [KEY])
    lines = [b.opened_line(format_ts(0))]
    for i in range(1, events):
        lines.append(b.line("conn.anomaly", b'{"i":%d,"pad":"%s"}' % (i, b"x" * 40), format_ts(i)))
        if i % 500 == 0:
            lines.append(b.checkpoint_line(format_ts(i)))
    lines.append(b.seal_line(format_ts(events), "closed", 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(lines))
    return path


def test_every_imported_name_is_still_there():
    missing = [name for name in IMPORTED if not hasattr(verify_mod, name)]
    assert not missing
    assert verify_mod.scan_chunk is verify_mod.scan.scan_chunk
    assert verify_mod._speedups is verify_mod.scan._speedups


def test_no_module_of_the_package_is_over_500_lines():
    here = Path(verify_mod.__file__).parent
    sizes = {p.name: len(p.read_text().splitlines()) for p in here.glob("*.py")}
    assert len(sizes) > 1 and max(sizes.values()) <= 500, sizes
    for name in sizes:
        importlib.import_module(f"ledger.verify.{name[:-3]}" if name != "__init__.py" else "ledger.verify")


def test_trailer_length_is_named():
    assert fmt.TRAILER_LEN == len(b',"chain":"') + 64 + len(b'"}') == 76
    assert fmt.CHAIN_HEX_BACK == 66
    line = fmt.make_line(b'{"v":1}', bytes(range(32)))
    assert fmt.chain_of_line(line) == bytes(range(32)).hex()
    assert fmt.event_of_line(line) == b'{"v":1}'


def test_jobs_is_a_call_argument(tmp_path, monkeypatch):
    """``jobs`` given to verify_file wins over the Policy's (kept for old callers)."""
    path = session(tmp_path / NS / f"{SID}.ndjson")
    monkeypatch.setattr(parallel, "PARALLEL_MIN_BYTES", 4096)
    calls = []
    real = parallel._boundaries
    monkeypatch.setattr(parallel, "_boundaries", lambda *a: calls.append(a) or real(*a))
    policy = Policy(keys=(KEY,))
    serial = verify_file(path, policy, jobs=1)
    assert serial.ok and serial.sealed and not calls
    assert verify_file(path, Policy(keys=(KEY,), jobs=2), jobs=1).as_dict() == serial.as_dict() and not calls
    assert verify_file(path, policy, jobs=2).as_dict() == serial.as_dict() and calls
    calls.clear()
    assert verify_file(path, Policy(keys=(KEY,), jobs=2)).as_dict() == serial.as_dict() and calls


@pytest.mark.parametrize("jobs", [1, 2])
def test_verify_path_takes_jobs(tmp_path, monkeypatch, jobs):
    for i in range(3):
        session(tmp_path / f"ns{i}" / f"{SID}.ndjson", 300)
    monkeypatch.setattr(parallel, "PARALLEL_MIN_BYTES", 64 * 2**10)  # each small, all together not
    forks = []
    real = multiprocessing.get_context
    monkeypatch.setattr(parallel.multiprocessing, "get_context", lambda *a: forks.append(a) or real(*a))
    report = verify_path([tmp_path], Policy(keys=(KEY,), allow_unsealed=True), jobs=jobs)
    assert report.ok and len(report.files) == 3
    assert bool(forks) == (jobs > 1)
