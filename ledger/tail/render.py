"""Presentation of tail's events for a terminal: a one-line summary, a colour family and
escaped control characters. Pure text; the CLI colours and prints it.

Nothing in the library imports this module: only ``ledger tail`` uses it, through the
re-exports in ``ledger.tail`` until it moves into the CLI package.
"""

from __future__ import annotations

import re

import msgspec

from .. import format as fmt
from .items import TailEvent

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_FAMILIES = {
    "capture": "capture",
    "upload": "upload",
    "deletion": "deletion",
    "delete": "deletion",
    "session": "session",
    "checkpoint": "checkpoint",
}


def family(kind: str | None) -> str:
    """capture, upload, deletion, session, checkpoint or other (for colouring)."""
    if not kind:
        return "other"
    if kind == fmt.KIND_CHECKPOINT:
        return "checkpoint"
    return _FAMILIES.get(kind.split(".", 1)[0].split(":", 1)[0], "other")


def clean(text: str) -> str:
    """Control characters shown escaped: data must not drive the terminal."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m[0]):02x}", text)


def _short(value: object, width: int = 60) -> str:
    s = value if isinstance(value, str) else msgspec.json.encode(value).decode("utf-8", "replace")
    s = clean(s)
    return s if len(s) <= width else s[: width - 1] + "…"


def summary(ev: TailEvent, width: int = 240) -> str:
    """A one-line summary of an event's data."""
    if ev.data is None:
        return _short(ev.raw.decode("utf-8", "replace").rstrip("\n"), width)
    try:
        data = msgspec.json.decode(ev.data)
    except msgspec.DecodeError:
        return _short(ev.data.decode("utf-8", "replace"), width)
    if not isinstance(data, dict):
        return _short(data, width)
    if ev.kind == fmt.KIND_OPENED:
        prev = data.get("prev")
        parts = [f"session {_short(data.get('session'))}"]
        if isinstance(prev, dict):
            parts.append(f"prev {_short(prev.get('session'))} ({_short(prev.get('size'))} lines)")
        else:
            parts.append("first session of the namespace")
        if data.get("quarantined"):
            parts.append(f"QUARANTINED {_short(data['quarantined'])}: {_short(data.get('quarantine_reason'), 120)}")
        return _short(" · ".join(parts), width)
    if ev.kind in fmt.SIGNED_KINDS:
        parts = []
        if ev.kind == fmt.KIND_SEALED:
            parts.append(f"reason {_short(data.get('reason'))}")
        parts.append(f"size {_short(data.get('size'))}")
        parts.append(f"root {_short(str(data.get('root', ''))[:16])}…")
        keys = [_short(s.get("key"), 16) for s in data.get("sigs") or () if isinstance(s, dict)]
        parts.append(f"signed by {', '.join(keys) or 'nobody'}")
        dropped = fmt.dropped_total(data.get("dropped")) if _is_dropped(data.get("dropped")) else 0
        if dropped:
            parts.append(f"DROPPED {dropped}")
        return _short(" · ".join(parts), width)
    text = " ".join(f"{clean(str(k))}={_short(v)}" for k, v in data.items())
    return text if len(text) <= width else text[: width - 1] + "…"


def _is_dropped(d: object) -> bool:
    return isinstance(d, int) or (isinstance(d, dict) and all(isinstance(v, int) for v in d.values()))
