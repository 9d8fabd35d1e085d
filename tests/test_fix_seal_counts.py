"""A seal or checkpoint with a negative drop count is bad_checkpoint, even when every
signature over it verifies: ``"dropped":{"queue_full":9,"invalid":-5}`` would let a
signed total hide drops (9 - 5 = 4)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger import format as fmt
from ledger.session import SessionBuilder
from ledger.verify import Policy, verify_file

KEY = bytes(range(32))
TS = "2026-11-30T12:00:00.000000Z"


def _session(path: Path, checkpoint_dropped, seal_dropped) -> Path:
    session = "20261130T120000.000000Z-0000abcd"
    b = SessionBuilder("ns", session, [KEY])
    lines = [b.opened_line(TS)]
    lines += [b.line("conn.anomaly", b'{"i":%d}' % i, TS) for i in range(3)]
    lines.append(b.checkpoint_line(TS, checkpoint_dropped))
    lines.append(b.line("conn.anomaly", b'{"i":3}', TS))
    lines.append(b.seal_line(TS, "closed", seal_dropped))
    path.write_bytes(b"".join(lines))
    return path


@pytest.mark.parametrize(
    "checkpoint_dropped, seal_dropped, ok",
    [
        ({"queue_full": 9}, {"queue_full": 9, "invalid": 0}, True),
        (None, 0, True),
        (None, {"queue_full": 9, "invalid": -5}, False),
        (None, -1, False),
        ({"invalid": -5}, {"queue_full": 9}, False),
    ],
)
def test_negative_drop_counts_are_bad_checkpoint(tmp_path, checkpoint_dropped, seal_dropped, ok):
    path = _session(tmp_path / "s.ndjson", checkpoint_dropped, seal_dropped)
    report = verify_file(path, Policy(keys=(KEY,), jobs=1))
    if ok:
        assert report.ok and report.sealed, report.as_dict()
        return
    assert report.first_error is not None and report.first_error.reason == "bad_checkpoint", report.as_dict()


def test_the_structs_refuse_a_negative_count():
    data = b'{"size":1,"root":"%s","chain":"%s","sigs":[],"reason":"closed","dropped":{"a":-1}}' % (
        b"0" * 64,
        b"0" * 64,
    )
    with pytest.raises(Exception, match=r"Expected `int` >= 0"):
        fmt.decode_checkpoint(fmt.KIND_SEALED, data)
