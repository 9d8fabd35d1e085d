"""Pcap files on local disk: capture ids, reading a pcap as written, finding the pcaps of
a capture directory, and the eviction plan that keeps it within its budgets.

Split from ledger.capture (which re-exports every public name here): this part is
pure or reads files only; the manager and tcpdump's lifecycle stay there.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import struct
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import msgspec

from . import layout
from .errors import UsageError
from .events import CaptureEvicted

CAPTURE_ID_PATTERN = "^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}$"
PCAP_SUFFIX = layout.PCAP_SUFFIX

_CAPTURE_FILE_RE = re.compile(CAPTURE_ID_PATTERN[:-1] + re.escape(PCAP_SUFFIX) + "$")


class CaptureFile(msgspec.Struct, frozen=True, kw_only=True):
    """A sealed pcap on local disk."""

    capture_id: str
    path: str
    bytes: int
    mtime_ns: int
    offloaded: bool = False


class PcapInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A pcap file as written: size and sha256 of its bytes, complete records, torn tail."""

    bytes: int
    sha256: str
    packets: int | None  # None when the file does not start with a pcap header
    torn_bytes: int = 0


def new_capture_id(epoch_s: float | None = None) -> str:
    """``20261123T211500Z-1a2b3c4d``: sortable by start second, unique by 32 random bits."""
    t = time.gmtime(time.time() if epoch_s is None else epoch_s)
    return f"{time.strftime('%Y%m%dT%H%M%SZ', t)}-{secrets.token_hex(4)}"


def read_pcap(path: str | os.PathLike[str]) -> PcapInfo:
    """Hash a pcap in chunks and count its complete records (the bytes as they are)."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
        packets, torn = _count_records(f, size)
    return PcapInfo(bytes=size, sha256=h.hexdigest(), packets=packets, torn_bytes=torn)


_PCAP_ENDIAN = {
    b"\xd4\xc3\xb2\xa1": "<",  # microseconds, little-endian
    b"\xa1\xb2\xc3\xd4": ">",
    b"\x4d\x3c\xb2\xa1": "<",  # nanoseconds
    b"\xa1\xb2\x3c\x4d": ">",
}


def _count_records(f, size: int) -> tuple[int | None, int]:
    f.seek(0)
    header = f.read(24)
    endian = _PCAP_ENDIAN.get(header[:4]) if len(header) == 24 else None
    if endian is None:
        return None, 0
    incl = struct.Struct(endian + "I")
    pos, packets = 24, 0
    while pos < size:
        f.seek(pos + 8)
        raw = f.read(4)
        if len(raw) < 4 or pos + 16 + incl.unpack(raw)[0] > size:
            return packets, size - pos
        pos += 16 + incl.unpack(raw)[0]
        packets += 1
    return packets, 0


def _age_key(f: CaptureFile) -> tuple[str, int, str]:
    return (f.capture_id[:16], f.mtime_ns, f.capture_id)


def plan_evictions(files: Iterable[CaptureFile], max_files: int, max_bytes: int) -> list[CaptureEvicted]:
    """Which files to remove so that both budgets hold, in removal order.

    Precondition: each file's ``offloaded`` is filled in. Offloaded captures go
    first, then the rest; oldest first within each group. The reason is the budget
    still broken when the file is chosen (``max_files`` when both are).
    """
    files = list(files)
    count, total = len(files), sum(f.bytes for f in files)
    plan: list[CaptureEvicted] = []
    for f in sorted(files, key=lambda f: (not f.offloaded, _age_key(f))):
        if count <= max_files and total <= max_bytes:
            break
        reason: Literal["max_files", "max_bytes"] = "max_files" if count > max_files else "max_bytes"
        plan.append(
            CaptureEvicted(capture_id=f.capture_id, path=f.path, bytes=f.bytes, reason=reason, offloaded=f.offloaded)
        )
        count -= 1
        total -= f.bytes
    return plan


def default_capture_dir(root: str | os.PathLike[str], namespace: str) -> Path:
    """``<root>/<namespace>/captures``: where capture, demo, gc and captures all look."""
    return layout.captures_dir(root, namespace)


def scan_captures(capture_dir: str | os.PathLike[str]) -> list[CaptureFile]:
    """The pcaps named ``<capture id>.pcap`` in a directory (anything else is ignored), oldest first."""
    found: list[CaptureFile] = []
    try:
        entries = list(os.scandir(capture_dir))
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise UsageError(f"cannot read capture directory {capture_dir}: {exc.strerror}") from None
    for entry in entries:
        if not _CAPTURE_FILE_RE.match(entry.name):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        if entry.is_file(follow_symlinks=False):
            cid = entry.name[: -len(PCAP_SUFFIX)]
            found.append(CaptureFile(capture_id=cid, path=entry.path, bytes=st.st_size, mtime_ns=st.st_mtime_ns))
    return sorted(found, key=_age_key)
