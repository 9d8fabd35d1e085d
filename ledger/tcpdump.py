"""tcpdump as a child process: the exact argv, its stderr read in a thread, waiting for it.

Split from ledger.capture (which re-exports ``normalize_ip`` and ``build_argv``): the
manager decides when to capture; this module is how one tcpdump is run and heard.
"""

from __future__ import annotations

import ipaddress
import re
import subprocess
import threading

_CONTROL_RE = re.compile("[\x00-\x1f\x7f]")
_STDERR_KEEP = 4096


def normalize_ip(ip: object) -> str | None:
    """The canonical text of an IPv4/IPv6 address, or None if ``ip`` is not exactly one.

    Scoped IPv6 (``fe80::1%eth0``) is refused: the scope would reach tcpdump's filter.
    """
    if not isinstance(ip, str) or not 2 <= len(ip) <= 45:
        return None
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if getattr(addr, "scope_id", None):
        return None
    return str(addr)


def build_argv(tcpdump: str, interface: str, snaplen: int, path: str, ip: str) -> list[str]:
    """The exact tcpdump argv. Precondition: ``ip`` came from ``normalize_ip``.

    No ``-G``: the duration is ledger's own timer (see the module docstring), so the
    ``-w`` name is taken literally (only ``-G`` passes it through strftime).
    ``-U`` writes each packet out as it comes, so even a SIGKILL keeps what was seen.
    """
    if normalize_ip(ip) != ip:
        raise ValueError(f"not a normalised IP address: {ip!r}")
    return [
        tcpdump,
        "-i",
        interface,
        "-n",
        "-s",
        str(snaplen),
        "--immediate-mode",
        "-U",
        "-w",
        path,
        "-Z",
        "root",
        "host",
        ip,
    ]


def _one_line(raw: bytes, limit: int = 300) -> str:
    text = raw.decode("utf-8", "replace")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    # tcpdump's own complaint, if any, rather than its statistics.
    msg = next((ln for ln in lines if ln.startswith("tcpdump:") and "listening on" not in ln), "")
    msg = msg or (lines[-1] if lines else "")
    return _CONTROL_RE.sub("?", msg)[:limit]


def _exited(proc: subprocess.Popen, timeout: float) -> bool:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return False
    return True


class _StderrReader:
    """Reads tcpdump's stderr in a thread: the first bytes kept for a failure's cause,
    ``listening`` set at tcpdump's "listening on" line (or at EOF), ``done`` at EOF."""

    def __init__(self, pipe) -> None:
        self._pipe = pipe
        self._data = bytearray()
        self.listening = threading.Event()
        self.done = threading.Event()
        threading.Thread(target=self._read, name="tcpdump-stderr", daemon=True).start()

    def _read(self) -> None:
        try:
            while chunk := self._pipe.read1(4096):
                if len(self._data) < _STDERR_KEEP:
                    self._data += chunk[: _STDERR_KEEP - len(self._data)]
                if b"listening on" in self._data:
                    self.listening.set()
        except (OSError, ValueError):
            pass
        finally:
            self.listening.set()
            self.done.set()

    def text(self) -> bytes:
        return bytes(self._data)
