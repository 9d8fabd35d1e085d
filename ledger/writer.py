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
import fcntl
import functools
import hashlib
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from . import format as fmt
from . import fsseal, metrics, notes
from .config import default_namespace
from .errors import LockedError, UsageError
from .files import fsync_dir, sha256_file
from .keys import key_id
from .session import SessionBuilder
from .verify import Policy, verify_file

log = logging.getLogger("ledger.writer")

DROP_REASONS = ("queue_full", "closed", "writer_failed", "invalid", "too_large")
LAST_SEAL = ".last-seal.json"
LOCK_FILE = ".lock"
QUARANTINE_SUFFIX = ".quarantined"

# Module-level so tests can slow or break the disk without touching the class.
_write = os.write
_fsync = os.fsync


class WriterConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Everything ``Ledger.open`` accepts besides root, namespace and key; validated once."""

    queue_size: Annotated[int, msgspec.Meta(ge=1)] = 16384
    durability: Literal["always", "batch", "none"] = "batch"
    checkpoint_every: Annotated[int, msgspec.Meta(ge=1)] = 1000
    checkpoint_interval_s: Annotated[float, msgspec.Meta(gt=0)] = 5.0
    rotate_bytes: Annotated[int, msgspec.Meta(ge=4096)] = 64 * 2**20
    rotate_interval_s: Annotated[float, msgspec.Meta(gt=0)] = 3600.0
    max_event_bytes: Annotated[int, msgspec.Meta(ge=256, le=fmt.MAX_LINE_BYTES // 2)] = 2**20
    fsync_interval_s: Annotated[float, msgspec.Meta(ge=0)] = 0.020


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


class Ledger:
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
        **options: Any,
    ) -> Ledger:
        """Lock the namespace, recover its newest session, open a new one, start the writer.

        ``signers`` (ledger.notes.Signer) add Ed25519 signatures to every checkpoint and
        seal; ``fs_state_file`` (made by ``ledger keygen --fs-seed``) adds a forward-secure
        ``hmac-sha256-fs`` signature whose key ratchets forward every epoch.
        """
        namespace = fmt.check_namespace(namespace or default_namespace())  # the full host name
        if not isinstance(hmac_key, bytes | bytearray) or len(hmac_key) < 16:
            raise UsageError("hmac_key must be at least 16 bytes (ledger keygen --hmac FILE makes one)")
        try:
            config = msgspec.convert(options, WriterConfig)
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
        self.dir = root / namespace
        self._keys = keys
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._qsize = self._queue.qsize
        self._put = self._queue.put
        self._closed = False
        self._finalized = False  # the writer has taken its last item from the queue
        self._failed: BaseException | None = None
        self._drop_lock = threading.Lock()
        self.dropped: dict[str, int] = dict.fromkeys(DROP_REASONS, 0)
        self._kinds_ok: set[str] = set()
        self._seal_listeners: list = []
        self._events = 0
        self._bytes = 0
        self._sessions = 0
        self._batches = 0
        self._batch_events = 0
        self._unwritten = 0
        self._fd = -1
        self._builder: SessionBuilder | None = None
        self._clock = _Clock()
        self._make_dirs()
        self._lock_fd = self._lock()
        try:
            self.recovered = self._recover()
            self._open_session(self.recovered.get("prev"), self.recovered.get("opened_extra"))
        except BaseException:
            self._release_lock()
            raise
        self._thread = threading.Thread(target=self._run, name=f"ledger-writer-{namespace}", daemon=True)
        self._thread.start()

    def _make_dirs(self) -> None:
        for d in (self.root, self.dir):
            try:
                d.mkdir(mode=0o700, exist_ok=True)
            except OSError as exc:
                raise UsageError(f"cannot create {d}: {exc.strerror}") from None

    def _lock(self) -> int:
        path = self.dir / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "unknown"
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise LockedError(
                    f"namespace {self.namespace} in {self.root} is held by another writer ({holder})"
                ) from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {fmt.format_ts()}\n".encode(), 0)
        return fd

    def _release_lock(self) -> None:
        if self._lock_fd >= 0:
            try:
                os.ftruncate(self._lock_fd, 0)
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            finally:
                os.close(self._lock_fd)
                self._lock_fd = -1

    # ---- crash recovery ---------------------------------------------------------------

    def _recover(self) -> dict:
        """Seal or quarantine the newest session if a crash left it unsealed.

        Returns {"prev": PrevLink | None, "opened_extra": dict, "action": str}.
        """
        last_seal = _read_last_seal(self.dir / LAST_SEAL)
        sessions = sorted(p for p in self.dir.glob("*.ndjson") if not p.name.startswith("."))
        if not sessions or (last_seal and last_seal.session >= sessions[-1].stem):
            # Nothing here, or the newest session was sealed (and maybe archived away).
            return {"prev": last_seal, "action": "none"}
        newest = sessions[-1]
        # Signatures are not checked here: a session signed by a key since rotated is
        # not corrupt. Chain, seq and roots are.
        report = verify_file(newest, Policy(allow_unsealed=True, jobs=1))
        if report.ok and report.sealed:
            return {"prev": _summary(report), "action": "none"}
        if report.ok and report.events > 0 and report.session and report.tree is not None:
            return self._seal_recovered(newest, report)
        reason = report.first_error.reason if report.first_error else "no complete line"
        detail = report.first_error.detail if report.first_error else ""
        line = report.first_error.line if report.first_error else None
        aside = newest.with_name(newest.name + QUARANTINE_SUFFIX)
        os.rename(newest, aside)
        fsync_dir(self.dir)
        why = f"line {line}: {reason}: {detail}" if line else f"{reason}: {detail}"
        log.error("ledger: session %s failed verification (%s); moved aside to %s", newest.name, why, aside.name)
        extra = {"quarantined": aside.name, "quarantine_reason": why}
        return {"prev": last_seal, "opened_extra": extra, "action": "quarantined"}

    def _seal_recovered(self, path: Path, report) -> dict:
        builder = SessionBuilder.resume(
            self.namespace, report.session, self._keys, report.tree, bytes.fromhex(report.chain), self._sign_fns
        )
        builder.origin = report.origin or builder.origin
        torn = report.torn_tail_bytes
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        try:
            if torn:
                os.ftruncate(fd, report.bytes - torn)
            line = builder.seal_line(self._clock.ts(time.time()), "recovered", 0, torn_bytes=torn)
            _write_all(fd, line)
            _fsync(fd)
        finally:
            os.close(fd)
        summary = builder.summary()
        _write_last_seal(self.dir / LAST_SEAL, summary)
        size, sha = sha256_file(path)
        _write_seal_record(self.dir, summary, size, sha)
        log.warning(
            "ledger: recovered unsealed session %s (%d events, %d torn bytes cut)", path.name, report.events, torn
        )
        return {"prev": summary, "action": "sealed", "torn_bytes": torn}

    # ---- sessions -------------------------------------------------------------------

    def _open_session(self, prev: fmt.PrevLink | None, opened_extra: dict | None = None) -> None:
        now = time.time()
        session = fmt.new_session_id(now)
        newest = max((p.stem for p in self.dir.glob("*.ndjson")), default="")
        if session <= newest:  # the clock went backwards: keep ids sorted anyway
            session = fmt.new_session_id(_session_time(newest) + 1e-6)
        builder = SessionBuilder(self.namespace, session, self._keys, prev, opened_extra, self._sign_fns)
        path = self.dir / f"{session}.ndjson"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
        line = builder.opened_line(self._clock.ts(now))
        try:
            _write_all(fd, line)
            if self.config.durability != "none":
                _fsync(fd)
                fsync_dir(self.dir)
        except BaseException:
            os.close(fd)
            raise
        self._fd, self._builder, self.path = fd, builder, path
        self._session_bytes = len(line)
        self._session_sha = hashlib.sha256(line)
        self._session_started = now
        self._last_checkpoint_time = now
        self._sessions += 1
        self._events += 1
        self._bytes += len(line)

    def _seal(self, reason: str) -> bytes:
        b = self._builder
        now = time.time()
        return b.seal_line(self._clock.ts(now), reason, self._drop_snapshot(), now)

    def _finish_session(self) -> None:
        """After the seal line is on disk: remember the link, close the file, tell listeners."""
        summary = self._builder.summary()
        _write_last_seal(self.dir / LAST_SEAL, summary)
        _write_seal_record(self.dir, summary, self._session_bytes, self._session_sha.hexdigest())
        os.close(self._fd)
        self._fd = -1
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
            "closed": self._closed,
        }

    # ---- the writer thread -----------------------------------------------------------

    def _run(self) -> None:
        cfg = self.config
        get = self._queue.get
        get_nowait = self._queue.get_nowait
        pending_sync = False
        last_sync = 0.0
        waiting: list[_Barrier] = []
        closing = False
        try:
            while not closing:
                now = time.time()
                timeout = self._next_deadline(now, pending_sync, last_sync)
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
                out, barriers, closing = self._encode_batch(items)
                now = time.time()
                self._fs_tick(now)
                if self._has_unsigned() and (
                    now - self._last_checkpoint_time >= cfg.checkpoint_interval_s or any(b.checkpoint for b in barriers)
                ):
                    out.append(self._checkpoint_line(now))
                rotate = self._builder.size > 1 and (
                    self._session_bytes + sum(map(len, out)) >= cfg.rotate_bytes
                    or now - self._session_started >= cfg.rotate_interval_s
                )
                if closing or rotate:
                    out.append(self._seal("closed" if closing else "rotated"))
                waiting.extend(barriers)
                if out:
                    self._unwritten = self._batch_events
                    self._write_batch(out)
                    self._unwritten = 0
                    pending_sync = cfg.durability != "none"
                must_sync = closing or rotate or cfg.durability == "always"
                if pending_sync and (must_sync or time.monotonic() - last_sync >= cfg.fsync_interval_s):
                    t = time.perf_counter()
                    _fsync(self._fd)
                    metrics.FSYNC.labels(self.namespace).observe(time.perf_counter() - t)
                    last_sync = time.monotonic()
                    pending_sync = False
                if not pending_sync:
                    for b in waiting:
                        b.ok = True
                        b.done.set()
                    waiting.clear()
                if closing or rotate:
                    self._finish_session()
                    if not closing:
                        self._open_session(self._builder.summary())
        except BaseException as exc:  # noqa: BLE001 - the host must survive any failure here
            self._fail(exc)
        finally:
            for b in waiting:
                b.done.set()
            self._shutdown()

    def _has_unsigned(self) -> bool:
        """Events written since the last checkpoint (the checkpoint line itself aside)."""
        return self._builder.size - self._builder.last_checkpoint > 1

    def _next_deadline(self, now: float, pending_sync: bool, last_sync: float) -> float:
        """How long the writer may sleep waiting for items."""
        cfg = self.config
        if pending_sync:
            return max(0.0, cfg.fsync_interval_s - (time.monotonic() - last_sync))
        wait = 1.0
        if self._has_unsigned():
            wait = min(wait, self._last_checkpoint_time + cfg.checkpoint_interval_s - now)
        if self._builder.size > 1:
            wait = min(wait, self._session_started + cfg.rotate_interval_s - now)
        if self._fs is not None:
            next_epoch = self._fs.t0 + (self._fs.epoch + 1) * self._fs.interval_s
            wait = min(wait, next_epoch - now)
        return max(0.0, wait)

    def _encode_batch(self, items: list) -> tuple[list[bytes], list[_Barrier], bool]:
        """Turn queued items into lines; one bad event never poisons the batch."""
        builder, clock, cfg = self._builder, self._clock, self.config
        encode = _encoder.encode
        out: list[bytes] = []
        barriers: list[_Barrier] = []
        kinds: dict[str, int] = {}
        closing = False
        invalid = too_large = 0
        for item in items:
            if item.__class__ is tuple:
                kind, data, t = item
                try:
                    data_json = encode(data)
                except (TypeError, ValueError, OverflowError, RecursionError):
                    invalid += 1
                    continue
                if len(data_json) > cfg.max_event_bytes:
                    too_large += 1
                    continue
                # Not an object (e.g. an array_like Struct), or nested deeper than a
                # verifier accepts (SPEC.md 2.1): never write a line that cannot verify.
                if data_json[:1] != b"{" or fmt.nesting_exceeds(data_json):
                    invalid += 1
                    continue
                out.append(builder.line(kind, data_json, clock.ts(t)))
                kinds[kind] = kinds.get(kind, 0) + 1
                if builder.size - builder.last_checkpoint >= cfg.checkpoint_every:
                    out.append(self._checkpoint_line(t))
            elif item is _CLOSE:
                closing = True
                self._finalized = True  # before the drain below: see record()
            else:
                barriers.append(item)
        if invalid:
            self._drop("invalid", invalid)
        if too_large:
            self._drop("too_large", too_large)
        for kind, n in kinds.items():
            metrics.EVENTS.labels(self.namespace, kind).inc(n)
        self._batch_events = sum(kinds.values())
        if closing:
            # Anything queued behind close() raced with it: count it, never write it.
            self._count_stragglers("closed")
        return out, barriers, closing

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
            # that every event of the batch is counted once, as dropped (writer_failed).
            try:
                os.ftruncate(self._fd, self._session_bytes)
            except OSError as exc:
                log.error("ledger %s: could not cut a partial batch (%s); recovery will", self.namespace, exc)
            raise
        metrics.BATCH_WRITE.labels(self.namespace).observe(time.perf_counter() - t)
        metrics.QUEUE_DEPTH.labels(self.namespace).set(self._qsize())
        self._session_bytes += len(data)
        self._session_sha.update(data)  # releases the GIL on large batches
        self._bytes += len(data)
        self._events += len(out)
        self._batches += 1

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
        if self._unwritten:  # the batch that could not be written
            self._drop("writer_failed", self._unwritten)
            self._unwritten = 0
        what = f"{exc.__class__.__name__}: {getattr(exc, 'strerror', None) or exc}"
        log.error("ledger %s: writer stopped (%s); events are now counted as dropped", self.namespace, what)

    def _shutdown(self) -> None:
        """Last act of the writer thread: whatever is still queued is counted, never lost silently."""
        reason = "writer_failed" if self._failed is not None else "closed"
        self._closed = True
        self._finalized = True
        self._count_stragglers(reason)
        if self._fd >= 0:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = -1
        self._release_lock()


# ---- helpers ------------------------------------------------------------------------


def _ed25519_sig(signer, text: bytes, now: float) -> dict:
    return notes.checkpoint_sig(signer, text)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = _write(fd, view)
        view = view[n:]


def _summary(report) -> fmt.PrevLink:
    return fmt.PrevLink(session=report.session, size=report.events, root=report.root, chain=report.chain)


def _session_time(session: str) -> float:
    from datetime import UTC, datetime

    return datetime.strptime(session[:23], "%Y%m%dT%H%M%S.%fZ").replace(tzinfo=UTC).timestamp()


def _read_last_seal(path: Path) -> fmt.PrevLink | None:
    try:
        return msgspec.json.decode(path.read_bytes(), type=fmt.PrevLink)
    except FileNotFoundError:
        return None
    except (OSError, msgspec.DecodeError) as exc:
        log.warning("ledger: ignoring unreadable %s (%s)", path, exc)
        return None


class SealRecord(msgspec.Struct, forbid_unknown_fields=True):
    """What the writer knew of a session when it sealed it: its whole tree and the
    sha256 of its bytes. The archiver checks a session against this instead of
    re-verifying it (SPEC.md 7); a session without one is verified in full."""

    session: str
    size: int
    root: str
    chain: str
    bytes: int
    sha256: str


SEALS_DIR = ".seals"


def read_seal_record(ns_dir: Path, session: str) -> SealRecord | None:
    try:
        return msgspec.json.decode((ns_dir / SEALS_DIR / f"{session}.json").read_bytes(), type=SealRecord)
    except (OSError, msgspec.DecodeError):
        return None


def _write_seal_record(ns_dir: Path, link: fmt.PrevLink, size: int, sha256: str) -> None:
    d = ns_dir / SEALS_DIR
    d.mkdir(mode=0o700, exist_ok=True)
    record = SealRecord(
        session=link.session, size=link.size, root=link.root, chain=link.chain, bytes=size, sha256=sha256
    )
    _write_atomic_file(d / f"{link.session}.json", msgspec.json.encode(record) + b"\n")


def _write_atomic_file(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def _write_last_seal(path: Path, link: fmt.PrevLink) -> None:
    _write_atomic_file(path, msgspec.json.encode(link) + b"\n")


__all__ = ["Ledger", "WriterConfig", "DROP_REASONS", "key_id"]
