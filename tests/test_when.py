"""ledger/when.py: the one time grammar of `rotate-remote --before` and `tail --since`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ledger.errors import UsageError
from ledger.tail import parse_since
from ledger.when import parse_stored, parse_when, stored_ts

NOW = 1_795_000_000.0  # 2026-11-18T11:06:40Z
AT_NOW = datetime.fromtimestamp(NOW, UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90d", AT_NOW - timedelta(days=90)),
        ("12h", AT_NOW - timedelta(hours=12)),
        ("30m", AT_NOW - timedelta(minutes=30)),
        ("45s", AT_NOW - timedelta(seconds=45)),
        ("2w", AT_NOW - timedelta(weeks=2)),
        ("1.5d", AT_NOW - timedelta(days=1.5)),
        (" 10 m ", AT_NOW - timedelta(minutes=10)),  # tail took these before
        ("0s", AT_NOW),
        ("2026-11-23", datetime(2026, 11, 23, tzinfo=UTC)),  # a date alone: midnight UTC
        ("2026-11-23T20:00:00Z", datetime(2026, 11, 23, 20, tzinfo=UTC)),
        ("2026-11-23t20:00:00z", datetime(2026, 11, 23, 20, tzinfo=UTC)),
        ("2026-11-23 20:00Z", datetime(2026, 11, 23, 20, tzinfo=UTC)),
        ("2026-11-23T21:00:00+01:00", datetime(2026, 11, 23, 20, tzinfo=UTC)),
        ("2026-11-23T15:30:00-04:30", datetime(2026, 11, 23, 20, tzinfo=UTC)),
        ("2026-11-23T20:00:00.5Z", datetime(2026, 11, 23, 20, 0, 0, 500000, tzinfo=UTC)),
        ("2026-11-23T20:00:00.123456789Z", datetime(2026, 11, 23, 20, 0, 0, 123456, tzinfo=UTC)),
    ],
)
def test_accepted_forms_name_one_instant(text, expected):
    got = parse_when(text, NOW)
    assert got == expected and got.tzinfo is not None


@pytest.mark.parametrize(
    "text",
    [
        "",
        "yesterday",
        "garbage",
        "now",
        "10",
        "10x",
        "-5d",
        "d",
        "2026",
        "2026-11",
        "20261123",  # datetime.fromisoformat takes these three; an operator's typo is more likely
        "2026-W47",
        "2026-11-23T20",
        "2026-13-01",
        "2026-02-30",
        "2026-11-23T24:00:00Z",
        "2026-11-23T20:00:00+25:00",
        "2026-11-23Z",
        "0000-01-01",
        "99999999999w",
    ],
)
def test_anything_else_is_a_usage_error_naming_the_option(text):
    with pytest.raises(UsageError, match=r"^--before ") as exc:
        parse_when(text, NOW, option="--before")
    assert "\n" not in str(exc.value)


def test_a_date_time_without_a_zone_is_refused_not_guessed():
    with pytest.raises(UsageError, match="add Z or an offset"):
        parse_when("2026-11-23T20:00:00", NOW)


def test_stored_form_round_trips_and_sorts_like_the_instants():
    t = parse_when("2026-11-23T21:00:00.25+01:00")
    assert stored_ts(t) == "2026-11-23T20:00:00.250000Z"
    assert parse_stored(stored_ts(t)) == t
    assert parse_stored("2026-11-23") is None and parse_stored("garbage") is None
    assert stored_ts(parse_when("1d", NOW)) < stored_ts(parse_when("1h", NOW))


def test_tail_since_uses_the_same_grammar():
    assert parse_since("2026-11-23") == "2026-11-23T00:00:00.000000Z"
    assert parse_since("90d", NOW) == stored_ts(AT_NOW - timedelta(days=90))
    with pytest.raises(UsageError, match="^--since 'yesterday'"):
        parse_since("yesterday")
