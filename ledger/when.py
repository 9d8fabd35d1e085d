"""One grammar for points in time given on the command line (``rotate-remote --before``,
``tail --since``), parsed to an instant: never compared as text.

Accepted, and nothing else:

* a span before now: a number and a unit, ``90d``, ``12h``, ``30m``, ``45s``, ``2w``
  (a decimal such as ``1.5d`` too);
* a date alone, ``2026-11-23``: midnight UTC at its start;
* an RFC 3339 date-time with its offset, ``2026-11-23T20:00:00Z``,
  ``2026-11-23T21:00:00.5+01:00`` (seconds may be left out; ``t``/space for ``T``).

A date-time without ``Z`` or an offset is refused: whether the operator meant UTC or
the host's local time cannot be known, and the answer decides which evidence a
``--before`` deletes. Words (``yesterday``), half dates (``2026-11``) and the other
forms ``datetime.fromisoformat`` would take (``20261123``, ``2026-W47``) are refused.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta, timezone

from .errors import UsageError

_SPAN = re.compile(r"^([0-9]{1,9}(?:\.[0-9]{1,9})?)\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_STAMP = re.compile(
    r"^([0-9]{4})-([0-9]{2})-([0-9]{2})"
    r"(?:[Tt ]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:\.([0-9]{1,9}))?)?"
    r"(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))?)?$"
)
# The form ledger stores in every line's ``ts`` (format.format_ts).
STORED_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"

HELP = "90d, 12h, 30m, 45s, 2w before now; a date (2026-11-23, midnight UTC); or RFC 3339 (2026-11-23T20:00:00Z)"


def parse_when(text: str, now: float | None = None, *, option: str = "time") -> datetime:
    """The instant ``text`` names, as an aware UTC datetime. Raises UsageError naming ``option``.

    ``now`` (epoch seconds) anchors the relative spans; default the current time.
    """
    t = text.strip()
    span = _SPAN.match(t)
    if span:
        ago = float(span[1]) * _UNITS[span[2]]
        try:
            return datetime.fromtimestamp(time.time() if now is None else now, UTC) - timedelta(seconds=ago)
        except (OverflowError, ValueError):
            raise UsageError(f"{option} {text!r} reaches before year 1") from None
    m = _STAMP.match(t)
    if m is None:
        raise UsageError(f"{option} {text!r} is not a time: use {HELP}")
    year, month, day, hour, minute, second, frac, z, sign, oh, om = m.groups()
    if hour is not None and z is None and sign is None:
        raise UsageError(f"{option} {text!r}: add Z or an offset (+01:00); times are compared in UTC")
    try:
        if sign is not None:
            if int(oh) > 23 or int(om) > 59:
                raise ValueError("offset out of range")
            offset = timedelta(hours=int(oh), minutes=int(om)) * (-1 if sign == "-" else 1)
            zone = timezone(offset)
        else:
            zone = UTC
        micro = int((frac or "0")[:6].ljust(6, "0"))
        when = datetime(
            int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0), micro, tzinfo=zone
        )
        return when.astimezone(UTC)
    except (OverflowError, ValueError):
        raise UsageError(f"{option} {text!r} is not a valid date or time: use {HELP}") from None


def stored_ts(when: datetime) -> str:
    """``when`` in the stored ``ts`` form, which sorts as text like the instants it names."""
    return when.astimezone(UTC).strftime(STORED_FORMAT)


def parse_stored(ts: str) -> datetime | None:
    """A stored ``ts`` (``2026-11-23T20:00:01.001234Z``) as an instant; None if not in that form."""
    try:
        return datetime.strptime(ts, STORED_FORMAT).replace(tzinfo=UTC)
    except (TypeError, ValueError):
        return None
