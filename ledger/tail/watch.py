"""Waiting for a followed file to change: one inotify watch per directory, or polling.

inotify (``inotify_simple``): a blocking read on the inotify descriptor wakes within a
fraction of a millisecond, where watchfiles' Rust loop polls its event set every
``step`` ms. Where inotify cannot be set up, or when forced (``LEDGER_TAIL_POLL=1``),
every wait is a full re-check after the poll interval (50 ms). Either way everything
is re-checked once a second (``REFRESH_S``), so a lost event (queue overflow) costs at
most a second.
"""

from __future__ import annotations

import os
import select
from pathlib import Path

try:  # Linux only; polling is the fallback
    import inotify_simple
except ImportError:  # pragma: no cover - exercised on platforms without it
    inotify_simple = None

POLL_ENV = "LEDGER_TAIL_POLL"
POLL_INTERVAL_S = 0.05
REFRESH_S = 1.0  # everything is re-checked at least this often, whatever the events say

if inotify_simple is not None:
    _F = inotify_simple.flags
    IN_MODIFY, IN_CLOSE_WRITE, IN_CREATE, IN_MOVED_TO = _F.MODIFY, _F.CLOSE_WRITE, _F.CREATE, _F.MOVED_TO
    _DIR_MASK = (
        _F.MODIFY | _F.CLOSE_WRITE | _F.CREATE | _F.MOVED_TO | _F.MOVED_FROM | _F.DELETE | _F.DELETE_SELF | _F.MOVE_SELF
    )
    _ROOT_MASK = _F.CREATE | _F.MOVED_TO | _F.ONLYDIR
    _Q_OVERFLOW = _F.Q_OVERFLOW
else:  # pragma: no cover
    IN_MODIFY, IN_CLOSE_WRITE, IN_CREATE, IN_MOVED_TO = 0x2, 0x8, 0x100, 0x80
    _DIR_MASK = _ROOT_MASK = _Q_OVERFLOW = 0

STOP = object()


class _PollWatcher:
    """No events: every wait is a full re-check after ``interval`` seconds."""

    kind = "polling"

    def __init__(self, interval: float, stop_fd: int | None) -> None:
        self.interval = interval
        self._poll = select.poll()
        if stop_fd is not None:
            self._poll.register(stop_fd, 0)

    def add(self, directory: Path, root: bool = False) -> str | None:
        return None

    def wait(self, timeout: float) -> object:
        if self._poll.poll(min(timeout, self.interval) * 1000):
            return STOP
        return None

    def close(self) -> None:
        pass


class _InotifyWatcher:
    """One watch per directory; ``wait`` returns {directory: [(name, mask), ...]}."""

    kind = "inotify"

    def __init__(self, stop_fd: int | None, interval: float) -> None:
        self.interval = interval
        self.degraded = False
        self._ino = inotify_simple.INotify()
        self._dirs: dict[int, Path] = {}
        self._poll = select.poll()
        self._poll.register(self._ino.fileno(), select.POLLIN)
        self._stop_fd = stop_fd
        if stop_fd is not None:
            self._poll.register(stop_fd, 0)

    def add(self, directory: Path, root: bool = False) -> str | None:
        """Watch one more directory; if that fails, fall back to polling everything."""
        try:
            wd = self._ino.add_watch(directory, _ROOT_MASK if root else _DIR_MASK)
        except OSError as exc:
            if self.degraded:
                return None
            self.degraded = True
            return f"cannot watch {directory} with inotify: {exc.strerror or exc}"
        self._dirs[wd] = directory
        return None

    def wait(self, timeout: float) -> object:
        if self.degraded:
            timeout = min(timeout, self.interval)
        ready = self._poll.poll(timeout * 1000)
        if not ready or self.degraded and not any(fd == self._stop_fd for fd, _ in ready):
            if self.degraded and ready:
                self._ino.read(timeout=0)  # drop them: everything is re-checked
            return None
        if any(fd == self._stop_fd for fd, _ in ready):
            return STOP
        hints: dict[Path, list[tuple[str, int]]] = {}
        for ev in self._ino.read(timeout=0):
            if ev.mask & _Q_OVERFLOW:
                return None
            d = self._dirs.get(ev.wd)
            if d is not None:
                hints.setdefault(d, []).append((ev.name, ev.mask))
        return hints

    def close(self) -> None:
        self._ino.close()


def make_watcher(
    directories: list[tuple[Path, bool]], *, poll: bool | None, interval: float, stop_fd: int | None
) -> tuple[object, str | None]:
    """A watcher of ``directories`` ((directory, is the root), a root only sees new
    namespaces): inotify where it can be set up, else polling every ``interval`` seconds;
    the reason when polling. ``poll``: force polling; None lets ``LEDGER_TAIL_POLL`` decide.
    ``stop_fd``: ``wait`` returns ``STOP`` once this descriptor reports an error."""
    forced = poll if poll is not None else os.environ.get(POLL_ENV, "") not in ("", "0")
    if forced:
        return _PollWatcher(interval, stop_fd), None
    if inotify_simple is None:
        why = "inotify_simple is not installed"
    else:
        try:
            w = _InotifyWatcher(stop_fd, interval)
        except OSError as exc:
            why = f"inotify unavailable: {exc.strerror or exc}"
        else:
            for d, root in directories:
                why = w.add(d, root)
                if why:
                    w.close()
                    break
            else:
                return w, None
    return _PollWatcher(interval, stop_fd), polling_notice(why, interval)


def polling_notice(why: str, interval: float) -> str:
    """The notice that says why and how often the files are polled."""
    return f"{why}; polling every {interval * 1000:.0f} ms"
