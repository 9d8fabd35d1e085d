"""The embedded single writer: ``Ledger.open(...).record(kind, data)``.

Producers (any thread, any asyncio task) only check a few types and put a tuple on
a ``SimpleQueue``: ``record()`` never waits on the disk and never raises on I/O.
One writer thread owns the file, the chain and the Merkle tree. It takes
everything queued, encodes and hashes it, writes the batch with one ``write``,
and fsyncs according to the durability mode (group commit). It writes signed
checkpoints, rotates sessions (seal, then a new session whose ``prev`` names the
sealed one) and seals on close.

Nothing is silently lost: every event either lands in the file or is counted as
dropped by reason, and the counts go into the next checkpoint and the seal.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import logging
import os
import queue
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from . import format as fmt
from . import fsseal, hot, layout, metrics, notes
from .config import WriterConfig, default_namespace
from .errors import LedgerError, UsageError
from .files import fsync_dir, replace_atomic
from .keys import key_id
from .recovery import CrashRecovery
from .session import SessionBuilder

log = logging.getLogger("ledger.writer")

DROP_REASONS = ("queue_full", "closed", "writer_failed", "invalid", "too_large", "disk_full")
# The names are ledger.layout's; kept here under the names embedders and tests import.
LAST_SEAL = layout.LAST_SEAL_FILE
LOCK_FILE = layout.LOCK_FILE
QUARANTINE_SUFFIX = layout.QUARANTINE_SUFFIX
# The writer's drop counts, rewritten in place (pwrite of a fixed-size record, so a
# full disk cannot refuse it) at every drop: crash recovery puts them in the seal.
DROPS_FILE = layout.DROPS_FILE
DROPS_BYTES = hot.DROPS_BYTES
# The seal records live in the hot tier's module, so the cold tier reads them without
# importing the writer; re-exported for the code that imports them from here.
SEALS_DIR = layout.SEALS_DIR
SealRecord = hot.SealRecord
read_seal_record = hot.read_seal_record
# A full disk (or quota): the writer counts events as dropped (disk_full) and tries
# again after PROBE_MIN_S, doubling up to PROBE_MAX_S; any other write error stops it.
_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
PROBE_MIN_S = 0.05
PROBE_MAX_S = 2.0

# Module-level so tests can slow or break the disk without touching the class.
_write = os.write
_fsync = os.fsync


class _Barrier:
    """A flush() or checkpoint() waiting for the batch that holds it to be durable."""

    __slots__ = ("done", "ok", "checkpoint")

    def __init__(self, checkpoint: bool = False) -> None:
        self.done = threading.Event()
        self.ok = False
        self.checkpoint = checkpoint


_CLOSE = object()
_encoder = msgspec.json.Encoder()


class _Clock:
    """RFC 3339 timestamps without strftime per event: the seconds part is cached."""

    def __init__(self) -> None:
        self._sec = -1
        self._prefix = ""

    def ts(self, t: float) -> bytes:
        sec = int(t)
        if sec != self._sec:
            self._sec = sec
            self._prefix = fmt.format_ts(sec)[:19].encode()
        return b"%b.%06dZ" % (self._prefix, int((t - sec) * 1e6))


class Ledger(CrashRecovery):
    """A running writer for one namespace. Use ``Ledger.open``; close it (or use ``with``)."""

    def __init__(self) -> None:  # use Ledger.open
        raise TypeError("use Ledger.open(root, namespace=..., hmac_key=...)")

    # ---- opening --------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        root: str | os.PathLike[str],
        namespace: str | None = None,
        hmac_key: bytes | None = None,
        *,
        extra_keys: tuple[bytes, ...] = (),
        signers: tuple = (),
        fs_state_file: str | os.PathLike[str] | None = None,
        config: WriterConfig | None = None,
        **options: Any,
    ) -> Ledger:
        """Lock the namespace, recover its newest session, open a new one, start the writer.

        ``signers`` (ledger.notes.Signer) add Ed25519 signatures to every checkpoint and
        seal; ``fs_state_file`` (made by ``ledger keygen --fs-seed``) adds a forward-secure
        ``hmac-sha256-fs`` signature whose key ratchets forward every epoch. The writer's
        options are ``config`` (a ``WriterConfig``, the configuration's ``[writer]``) and
        keyword ``options`` (``checkpoint_every=250``), which win over it.
        """
        namespace = fmt.check_namespace(namespace or default_namespace())  # the full host name
        if not isinstance(hmac_key, bytes | bytearray) or len(hmac_key) < 16:
            raise UsageError("hmac_key must be at least 16 bytes (ledger keygen --hmac FILE makes one)")
        try:
            if config is None or options:
                given = msgspec.structs.asdict(config) if config is not None else {}
                config = msgspec.convert(given | options, WriterConfig)
        except msgspec.ValidationError as exc:
            raise UsageError(f"invalid writer option: {exc}") from None
        self = object.__new__(cls)
        self._fs_path = Path(fs_state_file) if fs_state_file is not None else None
        self._fs = fsseal.load_fs_state(self._fs_path) if self._fs_path is not None else None
        sign_fns = [functools.partial(_ed25519_sig, s) for s in signers]
        if self._fs is not None:
            sign_fns.append(self._fs_sign)
        self._sign_fns = sign_fns
        self._init(Path(root), namespace, [bytes(hmac_key), *extra_keys], config)
        return self

    def _fs_sign(self, text: bytes, now: float) -> dict:
        """Sign with the current epoch's key, after persisting any move forward."""
        fsseal.tick(self._fs_path, self._fs, now)
        return self._fs.sign(text, now)

    def _fs_tick(self, now: float) -> None:
        # At every epoch boundary, even when idle: an older key must not stay on the host.
        if self._fs is not None and self._fs.epoch_at(now) > self._fs.epoch:
            fsseal.tick(self._fs_path, self._fs, now)

    def _init(self, root: Path, namespace: str, keys: list[bytes], config: WriterConfig) -> None:
        self.root = root
        self.namespace = namespace
        self.config = config
        self.dir = layout.namespace_dir(root, namespace)
        self._keys = keys
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._qsize = self._queue.qsize
        self._put = self._queue.put
        self._closed = False
        self._finalized = False  # the writer has taken its last item from the queue
        self._failed: BaseException | None = None
        self._full = False  # the disk was full: no session open, probing for room
        self._drop_lock = threading.Lock()
        self.dropped: dict[str, int] = dict.fromkeys(DROP_REASONS, 0)
        self._drops_fd = -1
        self._drops_session = ""
        self._drops_mac = hot.DropsMac(namespace, keys[0])
        self._kinds_ok: set[str] = set()
        self._seal_listeners: list = []
        self._events = 0
        self._bytes = 0
        self._sessions = 0
        self._batches = 0
        self._unwritten = 0  # events encoded but not yet written
        self._batch_items: list = []  # the batch being written
        self._item_pos = 0  # the first item of that batch not yet taken in
        self._closing = False  # close() was taken from the queue
        self._waiting: list[_Barrier] = []
        self._pending_sync = False
        self._last_sync = 0.0
        self._probe_delay = PROBE_MIN_S
        self._probe_at = 0.0
        self._fd = -1
        self._builder: SessionBuilder | None = None
        self.path: Path | None = None
        self._clock = _Clock()
        self._make_dirs()
        self._lock_fd = self._lock()
        try:
            self.recovered = self._recover()
            for reason, n in self.recovered.get("carried_dropped", {}).items():
                self.dropped[reason] = self.dropped.get(reason, 0) + n
            self._open_drops()
            self._open_session(self.recovered.get("prev"), self.recovered.get("opened_extra"))
        except BaseException as exc:
            if self._drops_fd >= 0:
                os.close(self._drops_fd)
            self._release_lock()
            if isinstance(exc, OSError):
                where = exc.filename or self.dir
                raise LedgerError(f"cannot open a session in {self.dir}: {where}: {exc.strerror or exc}") from None
            raise
        self._thread = threading.Thread(target=self._run, name=f"ledger-writer-{namespace}", daemon=True)
        self._thread.start()

    def _make_dirs(self) -> None:
        for d in (self.root, self.dir):
            try:
                d.mkdir(mode=0o700, exist_ok=True)
            except OSError as exc:
                raise UsageError(f"cannot create {d}: {exc.strerror}") from None

    # ---- sessions -------------------------------------------------------------------

    def _open_session(self, prev: fmt.PrevLink | None, opened_extra: dict | None = None) -> None:
        """Create the next session and write its line 0. On failure (a full disk) the file
        is removed again, so no empty or half-written session is left for a verifier to
        count, and the OSError names its path."""
        now = time.time()
        session = fmt.new_session_id(now)
        newest = max((p.stem for p in layout.session_files(self.dir) if p.stem[:8].isdigit()), default="")  # ids only
        if session <= newest:  # the clock went backwards: keep ids sorted anyway
            session = fmt.new_session_id(_session_time(newest) + 1e-6)
        builder = SessionBuilder(self.namespace, session, self._keys, prev, opened_extra, self._sign_fns)
        path = layout.session_path(self.dir, session)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
        line = builder.opened_line(self._clock.ts(now))
        try:
            _write_all(fd, line)
            if self.config.durability != "none":
                _fsync(fd)
                fsync_dir(self.dir)
        except BaseException as exc:
            os.close(fd)
            try:
                path.unlink()
                fsync_dir(self.dir)
            except OSError as cleanup:
                log.error("ledger %s: could not remove the failed session %s (%s)", self.namespace, path, cleanup)
            if isinstance(exc, OSError):
                raise OSError(exc.errno, exc.strerror, str(path)) from None
            raise
        self._fd, self._builder, self.path = fd, builder, path
        self._session_bytes = len(line)
        self._session_sha = hashlib.sha256(line)
        self._session_started = now
        self._last_checkpoint_time = now
        self._sessions += 1
        self._events += 1
        self._bytes += len(line)
        with self._drop_lock:  # from now on the counts belong to this session
            self._drops_session = session
            self._persist_drops_locked()

    def _seal(self, reason: str) -> bytes:
        b = self._builder
        now = time.time()
        return b.seal_line(self._clock.ts(now), reason, self._drop_snapshot(), now)

    def _finish_session(self) -> None:
        """After the seal line is on disk: remember the link, close the file, tell listeners."""
        summary = self._builder.summary()
        os.close(self._fd)
        self._fd = -1
        self._write_last_seal(summary)
        _write_seal_record(self.dir, summary, self._session_bytes, self._session_sha.hexdigest())
        for listener in list(self._seal_listeners):
            try:
                listener(self.path)
            except Exception:  # noqa: BLE001 - a listener must never stop the writer
                log.exception("ledger %s: seal listener failed", self.namespace)

    def add_seal_listener(self, listener) -> None:
        """Call ``listener(path)`` on the writer thread after each seal is durable.

        Listeners must return at once (e.g. set an Event): the writer waits for them.
        """
        self._seal_listeners.append(listener)

    @property
    def current_session(self) -> str | None:
        return self._builder.session if self._builder is not None else None

    # ---- producers --------------------------------------------------------------------

    def record(self, kind: str, data: Mapping[str, Any] | msgspec.Struct) -> bool:
        """Queue one event; True if queued, False if dropped (counted). Never blocks.

        Raises TypeError for a non-str kind or data that is neither a dict nor a
        msgspec Struct, and ValueError for a kind outside the allowed characters:
        those are programming errors, reported at once in the caller.
        """
        if kind not in self._kinds_ok:
            self._check_kind(kind)
        if not isinstance(data, dict | msgspec.Struct):
            raise TypeError(f"data must be a dict or a msgspec.Struct, not {type(data).__name__}")
        if self._failed is not None:
            self._drop("writer_failed")
            return False
        if self._closed:
            self._drop("closed")
            return False
        if self._full:
            self._drop("disk_full")
            return False
        if self._qsize() >= self.config.queue_size:
            self._drop("queue_full")
            return False
        self._put((kind, data, time.time()))
        if self._finalized:
            # close() got past its last drain while we were between the check and the
            # put: nobody will write this event, so count it here (never lose it silently).
            self._count_stragglers("writer_failed" if self._failed is not None else "closed")
            return False
        return True

    def _check_kind(self, kind: object) -> None:
        if not isinstance(kind, str):
            raise TypeError(f"kind must be a str, not {type(kind).__name__}")
        if not fmt.check_kind(kind) or kind in (fmt.KIND_OPENED, fmt.KIND_CHECKPOINT, fmt.KIND_SEALED):
            raise ValueError(f"invalid or reserved event kind {kind!r}")
        if len(self._kinds_ok) < 4096:
            self._kinds_ok.add(kind)

    def _drop(self, reason: str, n: int = 1) -> None:
        with self._drop_lock:
            before = self.dropped[reason]
            self.dropped[reason] = after = before + n
            self._persist_drops_locked()
        metrics.DROPS.labels(self.namespace, reason).inc(n)
        # Warn at 1, 2, 4, 8, ...: loud at first, never a flood.
        if after & (after - 1) == 0 or (before.bit_length() != after.bit_length()):
            log.warning("ledger %s: %d event(s) dropped (%s)", self.namespace, after, reason)

    def _drop_snapshot(self) -> dict[str, int]:
        with self._drop_lock:
            return {k: v for k, v in self.dropped.items() if v}

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything recorded before this call is written (and fsynced
        unless durability is "none"). False on timeout or if the writer has failed."""
        return self._barrier(_Barrier(), timeout)

    def checkpoint(self, timeout: float | None = None) -> bool:
        """Write a signed checkpoint now (after everything recorded before it)."""
        return self._barrier(_Barrier(checkpoint=True), timeout)

    def _barrier(self, b: _Barrier, timeout: float | None) -> bool:
        if self._closed or self._failed is not None:
            return self._failed is None and not self._thread.is_alive()
        self._put(b)
        return b.done.wait(timeout) and b.ok

    def close(self, timeout: float | None = None) -> None:
        """Drain, seal, fsync, release the lock, join the thread. Idempotent; never raises on I/O."""
        if not self._closed:
            self._closed = True
            self._put(_CLOSE)
        self._thread.join(timeout)

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stats(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "session": self._builder.session if self._builder else None,
            "queue_depth": self._qsize(),
            "events": self._events,
            "bytes": self._bytes,
            "sessions": self._sessions,
            "batches": self._batches,
            "dropped": dict(self.dropped),
            "failed": repr(self._failed) if self._failed else None,
            "disk_full": self._full,
            "closed": self._closed,
        }

    # ---- the writer thread -----------------------------------------------------------

    def _run(self) -> None:
        get = self._queue.get
        get_nowait = self._queue.get_nowait
        try:
            while True:
                if self._fd < 0:  # the disk was full: no session is open
                    if self._while_disk_full():
                        break
                    continue
                timeout = self._next_deadline(time.time())
                try:
                    first = get(timeout=timeout) if timeout > 0 else get_nowait()
                    items = [first]
                    try:
                        while len(items) < 65536:
                            items.append(get_nowait())
                    except queue.Empty:
                        pass
                except queue.Empty:
                    items = []
                self._batch_items = items
                try:
                    self._step(items)
                except OSError as exc:
                    if exc.errno not in _DISK_FULL:
                        raise
                    self._disk_full(exc, items)
                    continue
                finally:
                    self._batch_items = []
                if self._closing:
                    break
        except BaseException as exc:  # noqa: BLE001 - the host must survive any failure here
            self._fail(exc)
        finally:
            for b in self._waiting:
                b.done.set()
            self._waiting.clear()
            self._shutdown()

    def _step(self, items: list) -> None:
        """Write one batch: its events, any checkpoints, rotations and the seal it calls for."""
        cfg = self.config
        self._item_pos = 0
        out = self._encode_batch(items)
        now = time.time()
        self._fs_tick(now)
        if self._has_unsigned() and (
            now - self._last_checkpoint_time >= cfg.checkpoint_interval_s or any(b.checkpoint for b in self._waiting)
        ):
            out.append(self._checkpoint_line(now))
        rotate = self._builder.size > 1 and (
            self._session_bytes + sum(map(len, out)) >= cfg.rotate_bytes
            or now - self._session_started >= cfg.rotate_interval_s
        )
        closing = self._closing
        if closing or rotate:
            out.append(self._seal("closed" if closing else "rotated"))
        if out:
            self._write_batch(out)
            self._pending_sync = cfg.durability != "none"
        must_sync = closing or rotate or cfg.durability == "always"
        if self._pending_sync and (must_sync or time.monotonic() - self._last_sync >= cfg.fsync_interval_s):
            self._sync()
        if not self._pending_sync:
            for b in self._waiting:
                b.ok = True
                b.done.set()
            self._waiting.clear()
        if closing or rotate:
            self._finish_session()
            if not closing:
                self._open_session(self._builder.summary())

    def _sync(self) -> None:
        t = time.perf_counter()
        _fsync(self._fd)
        metrics.FSYNC.labels(self.namespace).observe(time.perf_counter() - t)
        self._last_sync = time.monotonic()
        self._pending_sync = False

    def _rotate_within_batch(self, out: list[bytes]) -> None:
        """The session reached rotate_bytes inside a batch: seal it now, start the next.

        So a session never exceeds rotate_bytes by more than one line plus its seal,
        however many events a batch holds.
        """
        out.append(self._seal("rotated"))
        self._write_batch(out)
        out.clear()
        self._sync()
        self._finish_session()
        self._open_session(self._builder.summary())

    def _has_unsigned(self) -> bool:
        """Events written since the last checkpoint (the checkpoint line itself aside)."""
        return self._builder.size - self._builder.last_checkpoint > 1

    def _next_deadline(self, now: float) -> float:
        """How long the writer may sleep waiting for items."""
        cfg = self.config
        if self._pending_sync:
            return max(0.0, cfg.fsync_interval_s - (time.monotonic() - self._last_sync))
        wait = 1.0
        if self._has_unsigned():
            wait = min(wait, self._last_checkpoint_time + cfg.checkpoint_interval_s - now)
        if self._builder.size > 1:
            wait = min(wait, self._session_started + cfg.rotate_interval_s - now)
        if self._fs is not None:
            next_epoch = self._fs.t0 + (self._fs.epoch + 1) * self._fs.interval_s
            wait = min(wait, next_epoch - now)
        return max(0.0, wait)

    def _encode_batch(self, items: list) -> list[bytes]:
        """Turn queued items into lines; one bad event never poisons the batch.

        Lines already written (by a rotation inside the batch) are not returned.
        ``_item_pos`` and ``_unwritten`` say, if a write fails, which items were taken
        in and how many encoded events never reached the file.
        """
        clock, cfg = self._clock, self.config
        encode = _encoder.encode
        out: list[bytes] = []
        out_bytes = 0
        kinds: dict[str, int] = {}
        for pos, item in enumerate(items):
            self._item_pos = pos + 1
            if item.__class__ is tuple:
                kind, data, t = item
                try:
                    data_json = encode(data)
                except (TypeError, ValueError, OverflowError, RecursionError):
                    self._drop("invalid")
                    continue
                if len(data_json) > cfg.max_event_bytes:
                    self._drop("too_large")
                    continue
                # Not an object (e.g. an array_like Struct), or nested deeper than a
                # verifier accepts (SPEC.md 2.1): never write a line that cannot verify.
                if data_json[:1] != b"{" or fmt.nesting_exceeds(data_json):
                    self._drop("invalid")
                    continue
                builder = self._builder
                line = builder.line(kind, data_json, clock.ts(t))
                out.append(line)
                out_bytes += len(line)
                self._unwritten += 1
                kinds[kind] = kinds.get(kind, 0) + 1
                if self._session_bytes + out_bytes < cfg.rotate_bytes and (
                    builder.size - builder.last_checkpoint >= cfg.checkpoint_every
                ):
                    line = self._checkpoint_line(t)
                    out.append(line)
                    out_bytes += len(line)
                if self._session_bytes + out_bytes >= cfg.rotate_bytes:
                    self._rotate_within_batch(out)
                    out_bytes = 0
            elif item is _CLOSE:
                self._closing = True
                self._finalized = True  # before the drain below: see record()
            else:
                self._waiting.append(item)
        for kind, n in kinds.items():
            metrics.EVENTS.labels(self.namespace, kind).inc(n)
        if self._closing:
            # Anything queued behind close() raced with it: count it, never write it.
            self._count_stragglers("closed")
        return out

    def _checkpoint_line(self, t: float) -> bytes:
        # The line's ts and the signing time are one clock reading, never an event's
        # earlier one: the forward-secure key may already have moved past it.
        now = max(t, time.time())
        self._last_checkpoint_time = now
        return self._builder.checkpoint_line(self._clock.ts(now), self._drop_snapshot() or None, now)

    def _write_batch(self, out: list[bytes]) -> None:
        data = b"".join(out)
        t = time.perf_counter()
        try:
            _write_all(self._fd, data)
        except OSError:
            # A short write then ENOSPC leaves part of the batch on disk. Cut it off, so
            # that every event of the batch is counted once, as dropped.
            try:
                os.ftruncate(self._fd, self._session_bytes)
            except OSError as exc:
                log.error("ledger %s: could not cut a partial batch (%s); recovery will", self.namespace, exc)
            raise
        self._unwritten = 0
        metrics.BATCH_WRITE.labels(self.namespace).observe(time.perf_counter() - t)
        metrics.QUEUE_DEPTH.labels(self.namespace).set(self._qsize())
        self._session_bytes += len(data)
        self._session_sha.update(data)  # releases the GIL on large batches
        self._bytes += len(data)
        self._events += len(out)
        self._batches += 1

    # ---- a full disk ------------------------------------------------------------------

    def _disk_full(self, exc: OSError, items: list) -> None:
        """A write (or fsync, or the next session's open) found the disk full.

        Everything of this batch that is not in the file is counted as dropped
        (disk_full); waiting flush() calls return False; the session is closed as it
        is on disk. The writer then probes for room (``_while_disk_full``).
        """
        rest = items[self._item_pos :]
        n = self._unwritten + sum(1 for item in rest if item.__class__ is tuple)
        self._unwritten = 0
        for item in rest:
            if item is _CLOSE:
                self._closing = True
                self._finalized = True
            elif isinstance(item, _Barrier):
                self._waiting.append(item)
        self._full = True
        if n:
            self._drop("disk_full", n)
        self._fail_barriers()
        self._close_session_fd()
        self._pending_sync = False
        self._probe_delay = PROBE_MIN_S
        self._probe_at = time.monotonic() + self._probe_delay
        where = exc.filename or (self.path.name if self.path else self.dir)
        log.error(
            "ledger %s: disk full (%s: %s); events are counted as dropped (disk_full) until there is room",
            self.namespace,
            where,
            exc.strerror,
        )

    def _fail_barriers(self) -> None:
        for b in self._waiting:
            b.ok = False
            b.done.set()
        self._waiting.clear()

    def _while_disk_full(self) -> bool:
        """Count what arrives as dropped, fail barriers at once, and at each probe time try
        to start again: seal the session left on disk (its seal carries every drop, by
        reason) and open a new one. Returns True when the writer should stop (close())."""
        get = self._queue.get
        while not self._closing:
            timeout = self._probe_at - time.monotonic()
            if timeout <= 0:
                break
            try:
                items = [get(timeout=timeout)]
            except queue.Empty:
                break
            try:
                while True:
                    items.append(self._queue.get_nowait())
            except queue.Empty:
                pass
            self._item_pos = 0
            self._disk_full_items(items)
        try:  # an older forward-secure key must not stay in memory while the disk is full
            self._fs_tick(time.time())
        except OSError as exc:  # moved on in memory; the state file catches up at the next tick
            log.debug("ledger %s: could not persist the sealing state (%s)", self.namespace, exc.strerror)
        try:
            self._restart(open_new=not self._closing)
        except OSError as exc:
            if exc.errno not in _DISK_FULL:
                raise
            if self._closing:
                log.error(
                    "ledger %s: closing with the disk still full (%s); the next open seals the session "
                    "and carries the drop counts",
                    self.namespace,
                    exc.strerror,
                )
                return True
            self._probe_delay = min(self._probe_delay * 2, PROBE_MAX_S)
            self._probe_at = time.monotonic() + self._probe_delay
            return False
        self._full = False
        log.warning(
            "ledger %s: room on disk again; %d event(s) were dropped (disk_full)%s",
            self.namespace,
            self.dropped["disk_full"],
            f"; writing to {self.path.name}" if not self._closing else "",
        )
        return self._closing

    def _disk_full_items(self, items: list) -> None:
        n = 0
        for item in items:
            if item.__class__ is tuple:
                n += 1
            elif item is _CLOSE:
                self._closing = True
                self._finalized = True
            else:
                self._waiting.append(item)
        if n:
            self._drop("disk_full", n)
        self._fail_barriers()
        if self._closing:
            self._count_stragglers("closed")

    def _restart(self, open_new: bool) -> None:
        """From the bytes on disk, as crash recovery does: verify the session, seal it
        (reason ``disk_full``, with this writer's drop counts) unless it was sealed, then
        open the next one naming it. Raises OSError when the disk is still full."""
        recovered = self._recover(live=True)
        if open_new:
            self._open_session(recovered.get("prev"), recovered.get("opened_extra"))

    # ---- stopping ---------------------------------------------------------------------

    def _close_session_fd(self) -> None:
        """Close the session file (after a full disk, or at close); a close error changes nothing."""
        if self._fd >= 0:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = -1

    def _count_stragglers(self, reason: str) -> None:
        n = 0
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item.__class__ is tuple:
                n += 1
            elif isinstance(item, _Barrier):
                item.done.set()
        if n:
            self._drop(reason, n)

    def _fail(self, exc: BaseException) -> None:
        self._failed = exc
        rest = self._batch_items[self._item_pos :]
        self._batch_items = []
        self._waiting.extend(item for item in rest if isinstance(item, _Barrier))
        # the events of the batch that could not be written, and those not yet taken in
        n = self._unwritten + sum(1 for item in rest if item.__class__ is tuple)
        self._unwritten = 0
        if n:
            self._drop("writer_failed", n)
        what = f"{exc.__class__.__name__}: {getattr(exc, 'strerror', None) or exc}"
        log.error("ledger %s: writer stopped (%s); events are now counted as dropped", self.namespace, what)

    def _shutdown(self) -> None:
        """Last act of the writer thread: whatever is still queued is counted, never lost silently."""
        reason = "writer_failed" if self._failed is not None else "closed"
        self._closed = True
        self._finalized = True
        self._count_stragglers(reason)
        self._close_session_fd()
        with self._drop_lock:
            if self._drops_fd >= 0:
                try:
                    _fsync(self._drops_fd)
                except OSError:
                    pass
                os.close(self._drops_fd)
                self._drops_fd = -1
        self._release_lock()


# ---- helpers ------------------------------------------------------------------------


def _ed25519_sig(signer, text: bytes, now: float) -> dict:
    return notes.checkpoint_sig(signer, text)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = _write(fd, view)
        view = view[n:]


def _session_time(session: str) -> float:
    from datetime import UTC, datetime

    return datetime.strptime(session[:23], "%Y%m%dT%H%M%S.%fZ").replace(tzinfo=UTC).timestamp()


def _write_seal_record(ns_dir: Path, link: fmt.PrevLink, size: int, sha256: str) -> None:
    hot.write_seal_record(ns_dir, link, size, sha256, replace=_write_atomic_file)


def _write_atomic_file(path: Path, data: bytes) -> None:
    """files.replace_atomic through this module's ``_write``, so the tests that fill or
    break the disk reach the writer's bookkeeping files too (and can hook this)."""
    replace_atomic(path, data, write=_write)


def _drops_record(namespace: str, session: str, dropped: Mapping[str, int], key: bytes) -> bytes:
    return hot.drops_record(namespace, session, dropped, key)


__all__ = ["Ledger", "WriterConfig", "DROP_REASONS", "key_id"]
