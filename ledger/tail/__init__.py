"""Follow a live ledger like ``tail -f``: ``follow(path, options) -> Iterator[TailItem]``.

Nothing here prints; the ``ledger tail`` command renders what comes back.

What is followed (``follow``):

* a session file: that file; its seal ends the stream (nothing can follow a seal);
* a namespace directory (one holding ``*.ndjson``, ``.lock`` or ``.last-seal.json``):
  its newest session, then each next one as the writer rotates;
* a root directory: every namespace below it (or only ``options.namespace``),
  including namespaces created while following.

The backlog (``options.lines``, the last N matching events) is found by reading
blocks backwards from the end of the newest session (``lines_backward``), so a
10 GB file costs what a small one does. In a directory the backlog reaches into
older sessions when the newest holds fewer than N matches.

Verification (``options.verify``): each followed session is verified from its line 0
(``TailVerifier``, which is ledger.verify's ``IncrementalCheck``; why from line 0:
see ``ledger.verify.incremental``), then each line as it arrives; each
``Verified`` item says which session was verified from which seq. Older sessions
reached by the backlog are verified whole with ``verify_file`` and their ``prev``
links checked; on rotation the new session's ``prev`` must name the session just
sealed. A break raises ``EvidenceError`` naming the file, the 1-based line and the
reason (SPEC.md section 5 reasons, plus ``truncated`` and ``unsealed`` for a session
replaced by a newer one without a seal).

The parts:

* ``items``: ``TailOptions`` and what ``follow`` yields;
* ``namespace``: one namespace (or one file) followed across rotations;
* ``backward``: reading a file backwards (the backlog of ``-n N``);
* ``watch``: the inotify and polling watchers.

Presentation (a one-line summary of an event, its colour family) is the CLI's: see
``ledger.cli.render``.
"""

from __future__ import annotations

import heapq
import os
import time
from collections.abc import Iterator
from pathlib import Path

from .. import format as fmt
from .. import layout
from ..errors import InputError, UsageError
from ..verify.incremental import TailVerifier
from .backward import BACK_BLOCK, last_boundary, lines_backward
from .items import (
    IDLE,
    Idle,
    Notice,
    Parsed,
    SessionChange,
    TailEvent,
    TailItem,
    TailOptions,
    Verified,
    parse_line,
    parse_since,
)
from .namespace import READ_MAX, Source
from .watch import POLL_ENV, POLL_INTERVAL_S, REFRESH_S, STOP, make_watcher, polling_notice

__all__ = [
    "BACK_BLOCK",
    "IDLE",
    "POLL_ENV",
    "POLL_INTERVAL_S",
    "READ_MAX",
    "REFRESH_S",
    "Idle",
    "Notice",
    "Parsed",
    "SessionChange",
    "TailEvent",
    "TailItem",
    "TailOptions",
    "TailVerifier",
    "Verified",
    "follow",
    "last_boundary",
    "lines_backward",
    "parse_line",
    "parse_since",
    "target_kind",
]


# ---- targets ----------------------------------------------------------------------------


def target_kind(path: str | os.PathLike[str]) -> str:
    """How ``follow`` reads ``path``: "file", "namespace" or "root" ("missing" if absent)."""
    p = Path(path)
    if p.is_file():
        return "file"
    if p.is_dir():
        return "namespace" if _is_namespace_dir(p) else "root"
    return "missing"


# A namespace directory without sessions yet (or with all archived) still holds these.
_WRITER_FILES = (layout.LOCK_FILE, layout.LAST_SEAL_FILE)


def _is_namespace_dir(d: Path) -> bool:
    try:
        return any(layout.is_session_name(e.name) or e.name in _WRITER_FILES for e in os.scandir(d))
    except OSError:
        return False


def _namespace_dirs(root: Path, only: str | None) -> list[Path]:
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError as exc:
        raise InputError(f"{root}: {exc.strerror}") from None
    return [
        root / e.name
        for e in entries
        if e.is_dir() and not e.name.startswith(".") and (only is None or e.name == only) and _valid_ns(e.name)
    ]


def _resolve(path: Path, opts: TailOptions) -> tuple[str, list[Source]]:
    if not path.exists():
        raise InputError(f"{path}: no such file or directory")
    if opts.namespace is not None and not _valid_ns(opts.namespace):
        raise UsageError(f"invalid namespace {opts.namespace!r}")
    if path.is_file():
        if opts.namespace is not None:
            raise UsageError("--namespace goes with a root directory, not a session file")
        return "file", [Source(opts, path.resolve().parent.name, path.parent, single=path)]
    if not path.is_dir():
        raise InputError(f"{path}: not a file or directory")
    if _is_namespace_dir(path):
        if opts.namespace is not None and opts.namespace != path.resolve().name:
            raise UsageError(f"{path} is the namespace {path.resolve().name}, not {opts.namespace}")
        return "namespace", [Source(opts, path.resolve().name, path)]
    if opts.namespace is not None:
        ns = path / opts.namespace
        if not ns.is_dir():
            raise InputError(f"{ns}: no such namespace")
        return "namespace", [Source(opts, opts.namespace, ns)]
    return "root", [Source(opts, d.name, d) for d in _namespace_dirs(path, None)]


def _valid_ns(ns: str) -> bool:
    try:
        fmt.check_namespace(ns)
    except ValueError:
        return False
    return True


# ---- follow -----------------------------------------------------------------------------


class _Changes:
    """Puts a SessionChange before the first event of each new session of a namespace."""

    def __init__(self) -> None:
        self.last: dict[str, str] = {}

    def __call__(self, items) -> Iterator[TailItem]:
        for item in items:
            if isinstance(item, TailEvent):
                before = self.last.get(item.namespace)
                if before != item.session:
                    self.last[item.namespace] = item.session
                    yield SessionChange(item.namespace, item.session, item.path, before)
            yield item


# The defaults of follow(): a frozen TailOptions, so one instance serves every call.
_DEFAULTS = TailOptions()


def follow(path: str | os.PathLike[str], options: TailOptions = _DEFAULTS) -> Iterator[TailItem]:
    """The last ``options.lines`` matching events of ``path``, then (``options.follow``)
    every new one as it is written, across rotations. Raises InputError/UsageError
    before the first item for a bad path, EvidenceError at a break (with ``verify``).

    Yields ``IDLE`` whenever it is about to wait; returns when ``options.follow`` is
    off, when a followed session file is sealed, or when ``options.stop_fd`` closes.
    """
    opts = options
    root = Path(path)
    mode, sources = _resolve(root, opts)
    watcher = None
    changes = _Changes()
    try:
        if opts.follow:
            dirs = [(s.dir, False) for s in sources]
            if mode == "root":
                dirs.append((root, True))
            watcher, why = make_watcher(dirs, poll=opts.poll, interval=opts.poll_interval_s, stop_fd=opts.stop_fd)
            if why:
                yield Notice(why)
        notes: list[TailItem] = []
        backlogs: list[list[TailEvent]] = []
        for src in sources:
            n, evs = src.backlog()
            notes.extend(n)
            backlogs.append(evs)
        if not opts.follow and all(s.cur is None for s in sources):
            raise InputError(f"{root}: no session files (*{layout.SESSION_SUFFIX}) found")
        yield from notes
        merged = backlogs[0] if len(backlogs) == 1 else list(heapq.merge(*backlogs, key=lambda e: e.ts or ""))
        if opts.lines is not None and len(merged) > opts.lines:
            merged = merged[len(merged) - opts.lines :]
        yield from changes(merged)
        if not opts.follow:
            return
        if all(s.cur is None for s in sources):
            yield Notice(f"{root}: no sessions yet; waiting for a writer")
        yield from _follow(opts, root if mode == "root" else None, sources, watcher, changes)
    finally:
        for src in sources:
            src.close()
        if watcher is not None:
            watcher.close()


def _follow(
    opts: TailOptions, root: Path | None, sources: list[Source], watcher, changes: _Changes
) -> Iterator[TailItem]:
    known = {s.dir for s in sources}
    hints: object = None  # the first pass checks everything
    last_full = time.monotonic()
    last_root = 0.0
    while True:
        now = time.monotonic()
        full = hints is None or now - last_full >= REFRESH_S
        if full:
            last_full = now
        for src in sources:
            hint = None if full else hints.get(src.dir, [])
            if hint == []:
                continue
            yield from changes(src.refresh(hint))
        if root is not None and (full and now - last_root >= REFRESH_S or (not full and root in hints)):
            last_root = now
            for d in _namespace_dirs(root, None):
                if d not in known:
                    known.add(d)
                    src = Source(opts, d.name, d)
                    why = watcher.add(d)
                    if why:
                        yield Notice(polling_notice(why, opts.poll_interval_s))
                    sources.append(src)
                    yield from changes(src.refresh(None))
        if sources and all(s.finished for s in sources):
            s = sources[0].cur
            yield Notice(f"{s.path}: session {s.session} is sealed; nothing can follow it")
            yield IDLE
            return
        yield IDLE
        hints = watcher.wait(REFRESH_S)
        if hints is STOP:
            return
