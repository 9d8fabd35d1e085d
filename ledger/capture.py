"""Bounded packet captures as evidence: ``CaptureManager(ledger, options).maybe_capture(...)``.

A detector that sees an anomaly asks for a capture; ``maybe_capture`` answers at
once. Guards run before any work, in this order: closed, input validation,
severity floor, per-CN cooldown, in-flight de-dupe (same CN or same IP), global
concurrency cap. A skip is counted (``stats()`` and metrics), never written as an
event: a flood of detections must not flood the ledger.

An admitted capture writes ``capture.started``, then runs one real tcpdump in its
own thread::

    tcpdump -i IFACE -n -s SNAPLEN --immediate-mode -U -w PATH -Z root host IP

as a list argv (no shell), the IP normalised by ``ipaddress``, the CN in neither
argv nor path. The capture lasts its duration by ledger's own clock, counted from
tcpdump's "listening on" line: then a SIGINT ends it cleanly (tcpdump flushes and
closes the pcap). tcpdump's own ``-G`` is not used: it rotates, and so exits, when
the wall clock's whole second changes, so ``-G 1`` ended captures anywhere from 0
to 1 s in. ``--immediate-mode`` hands each packet over at once rather than in
kernel-buffer blocks. tcpdump runs in its own process group and every signal goes
to the group, so a wrapper that forks cannot keep a child (and the slot) alive: a
backstop sends SIGTERM ``backstop_grace_s`` after the SIGINT and SIGKILL
``kill_grace_s`` later, and whatever of the group outlives tcpdump is killed. The
child is always waited for. Exit 0, 124, or death by a signal we sent count as
success. Every ``capture.started`` is followed by exactly one ``capture.sealed``
(the pointer: path, bytes and sha256 of the pcap as written, packets, and outcome
``ok``, or ``empty`` when it holds no packet) or ``capture.failed`` (the cause).
The pcap itself never enters the ledger.

Local budget (``gc``): oldest first until both ``max_files`` and ``max_bytes`` hold,
captures already offloaded to cold storage before those that are not. Each removal
is a ``capture.evicted`` event, recorded and flushed before the unlink, so a
pointer never outlives its file without a record.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec

from . import format as fmt
from . import layout, metrics
from .errors import LedgerError, UsageError
from .events import CaptureEvicted, CaptureFailed, CaptureSealed, CaptureStarted

# Split out of this module and re-exported: the pcap files, and tcpdump as a child.
from .pcap import (
    CAPTURE_ID_PATTERN,
    PCAP_SUFFIX,
    CaptureFile,
    PcapInfo,
    _age_key,
    default_capture_dir,
    new_capture_id,
    plan_evictions,
    read_pcap,
    scan_captures,
)
from .tcpdump import _CONTROL_RE, _exited, _one_line, _StderrReader, build_argv, normalize_ip

if TYPE_CHECKING:
    from .writer import Ledger

log = logging.getLogger("ledger.capture")

SEVERITIES = ("low", "medium", "high", "critical")
_RANK = {s: i for i, s in enumerate(SEVERITIES)}
MANUAL_SEVERITY = "manual"
SKIP_REASONS = (
    "closed",
    "invalid_cn",
    "invalid_ip",
    "invalid",
    "severity",
    "cooldown",
    "in_flight",
    "concurrency",
    "ledger",
)
# \Z, not $: msgspec searches with re, where $ also matches before a final newline.
INTERFACE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,31}\Z"
MAX_CN_CHARS = 256
MAX_TEXT_CHARS = 256  # reason, anomaly_id
_TCPDUMP_ENV_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_FLUSH_TIMEOUT_S = 30.0
_LEFTOVER_WAIT_S = 0.2  # after tcpdump exits, how long its stderr may take to close

# Module-level so tests can observe or break the deletion without touching the class.
_unlink = os.unlink

SKIPS = metrics._make(  # noqa: SLF001
    metrics.Counter, "ledger_capture_skips", "Capture requests skipped, by reason", ("namespace", "reason")
)
CAPTURES = metrics._make(  # noqa: SLF001
    metrics.Counter, "ledger_captures", "Captures finished, by outcome (sealed, failed)", ("namespace", "outcome")
)
IN_FLIGHT = metrics._make(  # noqa: SLF001
    metrics.Gauge, "ledger_captures_in_flight", "Captures running now", ("namespace",)
)
EVICTIONS = metrics._make(  # noqa: SLF001
    metrics.Counter, "ledger_capture_evictions", "Local pcaps evicted, by budget", ("namespace", "reason")
)


# ---- options ----------------------------------------------------------------------------


class CaptureOptions(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Everything a CaptureManager accepts; build it with ``CaptureOptions.from_dict``."""

    min_severity: Literal["low", "medium", "high", "critical"] = "medium"
    per_cn_cooldown_s: Annotated[float, msgspec.Meta(ge=0, le=7 * 86400)] = 300.0
    duration_s: Annotated[int, msgspec.Meta(ge=1, le=3600)] = 30
    snaplen: Annotated[int, msgspec.Meta(ge=64, le=262144)] = 262144
    max_files: Annotated[int, msgspec.Meta(ge=1)] = 100
    max_bytes: Annotated[int, msgspec.Meta(ge=1)] = 2**30
    capture_dir: Annotated[str, msgspec.Meta(min_length=1, pattern="^[^\x00]+$")] = "/var/lib/ledger/captures"
    interface: Annotated[str, msgspec.Meta(pattern=INTERFACE_PATTERN)] = "any"
    tcpdump_bin: Annotated[str, msgspec.Meta(min_length=1, pattern="^[^\x00]+$")] = "tcpdump"
    max_concurrent: Annotated[int, msgspec.Meta(ge=1, le=64)] = 4
    backstop_grace_s: Annotated[float, msgspec.Meta(gt=0, le=600)] = 2.0
    kill_grace_s: Annotated[float, msgspec.Meta(gt=0, le=600)] = 2.0

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> CaptureOptions:
        """Validate a config mapping (unknown keys refused); UsageError names the bad value."""
        if not isinstance(values, Mapping):
            raise UsageError(f"capture options must be a mapping, not {type(values).__name__}")
        plain = {k: os.fspath(v) if isinstance(v, os.PathLike) else v for k, v in values.items()}
        try:
            return msgspec.convert(plain, cls)
        except msgspec.ValidationError as exc:
            raise UsageError(f"invalid capture option: {exc}") from None


def load_options(options: CaptureOptions | Mapping[str, Any]) -> CaptureOptions:
    return options if isinstance(options, CaptureOptions) else CaptureOptions.from_dict(options)


# ---- decisions and results --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CaptureResult:
    """How a capture ended: ``event`` is the CaptureSealed or CaptureFailed recorded.

    ``ok`` says a pcap was sealed; ``outcome`` what it holds: ``ok`` (packets),
    ``empty`` (sealed, no packet: never to be read as a capture that worked) or ``failed``.
    """

    capture_id: str
    ok: bool
    event: CaptureSealed | CaptureFailed
    outcome: Literal["ok", "empty", "failed"] = "ok"


class _Future:
    __slots__ = ("_done", "_result")

    def __init__(self) -> None:
        self._done = threading.Event()
        self._result: CaptureResult | None = None

    def set(self, result: CaptureResult) -> None:
        self._result = result
        self._done.set()

    def wait(self, timeout: float | None) -> CaptureResult | None:
        return self._result if self._done.wait(timeout) else None

    def done(self) -> bool:
        return self._done.is_set()


@dataclass(frozen=True, slots=True)
class CaptureDecision:
    """What ``maybe_capture`` decided: started (with an id) or skipped (with a reason)."""

    started: bool
    capture_id: str | None = None
    skipped: str | None = None  # one of SKIP_REASONS when not started
    _future: _Future | None = field(default=None, repr=False, compare=False)

    def wait(self, timeout: float | None = None) -> CaptureResult | None:
        """The recorded outcome; None for a skip, or if ``timeout`` passes first."""
        return self._future.wait(timeout) if self._future is not None else None

    def done(self) -> bool:
        return self._future is None or self._future.done()


# ---- pure helpers -----------------------------------------------------------------------


def _text_ok(value: object, limit: int) -> bool:
    return isinstance(value, str) and 0 < len(value) <= limit and not _CONTROL_RE.search(value)


def plan_gc(
    files: Iterable[CaptureFile], options: CaptureOptions, in_flight: Iterable[str] = ()
) -> list[CaptureEvicted]:
    """The one eviction plan: what ``gc`` removes and what its dry run says it would.

    Captures in flight (started, not yet sealed or failed: tcpdump may still be
    writing) are neither candidates nor counted, as in the running manager's own gc,
    which only knows the pcaps it has sealed.
    """
    busy = set(in_flight)
    return plan_evictions((f for f in files if f.capture_id not in busy), options.max_files, options.max_bytes)


# ---- the manager ------------------------------------------------------------------------


class _Run:
    """One admitted capture: its request, its process and who signalled it."""

    __slots__ = (
        *("cid", "cn", "ip", "reason", "severity", "anomaly_id", "path", "duration_s"),
        *("future", "thread", "proc", "signalled", "lock"),
    )

    def __init__(self, cid, cn, ip, reason, severity, anomaly_id, path, duration_s) -> None:
        self.cid, self.cn, self.ip, self.reason = cid, cn, ip, reason
        self.severity, self.anomaly_id, self.path, self.duration_s = severity, anomaly_id, path, duration_s
        self.future = _Future()
        self.thread: threading.Thread | None = None
        self.proc: subprocess.Popen | None = None
        self.signalled: tuple[str, int] | None = None  # (backstop|closed, last signal sent)
        self.lock = threading.Lock()


_LIVE: weakref.WeakSet[CaptureManager] = weakref.WeakSet()


class CaptureManager:
    """Admits capture requests, runs tcpdump, records the evidence, keeps the local budget.

    ``is_offloaded(capture_id)`` says whether a pcap is safe in cold storage (default:
    never). ``clock`` is the monotonic clock the cooldown uses (tests inject one).
    """

    def __init__(
        self,
        ledger: Ledger,
        options: CaptureOptions | Mapping[str, Any] | None = None,
        *,
        is_offloaded: Callable[[str], bool] | None = None,
        clock: Callable[[], float] = time.monotonic,
        in_flight: Iterable[str] = (),
    ) -> None:
        self.ledger = ledger
        # Captures another manager has in flight (from the ledger): gc leaves them be.
        self._in_flight_elsewhere = frozenset(in_flight)
        self.options = opts = load_options({} if options is None else options)
        self.is_offloaded = is_offloaded or (lambda cid: False)
        self._clock = clock
        self._ns = getattr(ledger, "namespace", "")
        self.dir = Path(opts.capture_dir).resolve()
        self._make_dir()
        self.tcpdump = self._resolve_tcpdump(opts.tcpdump_bin)
        self._lock = threading.Lock()
        self._gc_lock = threading.Lock()
        self._count_lock = threading.Lock()  # counts, taken inside or outside _lock (never the reverse)
        self._closed = False
        self._running: dict[str, _Run] = {}
        self._busy_cn: set[str] = set()
        self._busy_ip: set[str] = set()
        self._last_start: dict[str, float] = {}
        self._prune_at = 4096
        self._index: dict[str, CaptureFile] = {f.capture_id: f for f in scan_captures(self.dir)}
        self._skips: dict[str, int] = dict.fromkeys(SKIP_REASONS, 0)
        self._outcomes = {"sealed": 0, "failed": 0, "empty": 0}  # empty: sealed with no packet
        _LIVE.add(self)

    def _make_dir(self) -> None:
        try:
            self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            mode = self.dir.stat().st_mode
        except OSError as exc:
            raise UsageError(f"cannot create capture directory {self.dir}: {exc.strerror}") from None
        if mode & 0o077:
            log.warning("capture directory %s is accessible to others (mode %o)", self.dir, mode & 0o777)

    @staticmethod
    def _resolve_tcpdump(name: str) -> str:
        found = shutil.which(name)
        if found is None:
            log.warning("tcpdump %r not found or not executable: captures will fail", name)
            return os.path.abspath(name) if os.sep in name else name
        return os.path.abspath(found)

    # ---- requests ---------------------------------------------------------------------

    def maybe_capture(
        self, cn: str, ip: str, reason: str, severity: str = "medium", anomaly_id: str | None = None
    ) -> CaptureDecision:
        """Start a capture of ``ip`` for client ``cn`` unless a guard says no. Never blocks, never raises."""
        return self._admit(cn, ip, reason, severity, anomaly_id, None, manual=False)

    def capture(
        self, cn: str, ip: str, reason: str, *, anomaly_id: str | None = None, duration_s: int | None = None
    ) -> CaptureDecision:
        """An operator's capture: no severity floor and no cooldown; validation, de-dupe and cap still hold."""
        return self._admit(cn, ip, reason, MANUAL_SEVERITY, anomaly_id, duration_s, manual=True)

    def _admit(self, cn, ip, reason, severity, anomaly_id, duration_s, *, manual: bool) -> CaptureDecision:
        if self._closed:
            return self._skip("closed")
        if not _text_ok(cn, MAX_CN_CHARS):
            return self._skip("invalid_cn")
        norm_ip = normalize_ip(ip)
        if norm_ip is None:
            return self._skip("invalid_ip")
        duration = self.options.duration_s if duration_s is None else duration_s
        if (
            not _text_ok(reason, MAX_TEXT_CHARS)
            or not (anomaly_id is None or _text_ok(anomaly_id, MAX_TEXT_CHARS))
            or not (manual or (isinstance(severity, str) and severity in _RANK))
            or type(duration) is not int
            or not 1 <= duration <= 3600
        ):
            return self._skip("invalid")
        if not manual and _RANK[severity] < _RANK[self.options.min_severity]:
            return self._skip("severity")
        now = self._clock()
        with self._lock:
            if self._closed:
                return self._skip("closed")
            last = self._last_start.get(cn)
            if not manual and last is not None and now - last < self.options.per_cn_cooldown_s:
                return self._skip("cooldown")
            if cn in self._busy_cn or norm_ip in self._busy_ip:
                return self._skip("in_flight")
            if len(self._running) >= self.options.max_concurrent:
                return self._skip("concurrency")
            run = self._new_run(cn, norm_ip, reason, severity, anomaly_id, duration)
            started = CaptureStarted(
                capture_id=run.cid,
                cn=cn,
                ip=norm_ip,
                reason=reason,
                severity=severity,
                anomaly_id=anomaly_id,
                path=run.path,
                interface=self.options.interface,
                duration_s=float(duration),
                snaplen=self.options.snaplen,
            )
            if not self.ledger.record("capture.started", started):
                return self._skip("ledger")
            self._running[run.cid] = run
            self._busy_cn.add(cn)
            self._busy_ip.add(norm_ip)
            self._last_start[cn] = now
            self._prune_cooldowns(now)
            IN_FLIGHT.labels(self._ns).set(len(self._running))
            run.thread = threading.Thread(target=self._run, args=(run,), name=f"capture-{run.cid}", daemon=True)
            try:
                run.thread.start()
            except RuntimeError as exc:  # no thread to be had: the started event still gets its end
                run.thread = None
                self._release(run)
                run.future.set(self._failed(run, f"cannot start a capture thread: {exc}"))
                return CaptureDecision(started=True, capture_id=run.cid, _future=run.future)
        log.info("capture %s started: ip %s, reason %r, severity %s", run.cid, norm_ip, reason, severity)
        return CaptureDecision(started=True, capture_id=run.cid, _future=run.future)

    def _new_run(self, cn, ip, reason, severity, anomaly_id, duration) -> _Run:
        while True:
            cid = new_capture_id()
            path = layout.pcap_path(self.dir, cid)
            if cid not in self._running and cid not in self._index and not path.exists():
                return _Run(cid, cn, ip, reason, severity, anomaly_id, str(path), duration)

    def _skip(self, reason: str) -> CaptureDecision:
        with self._count_lock:
            self._skips[reason] += 1
        SKIPS.labels(self._ns, reason).inc()
        return CaptureDecision(started=False, skipped=reason)

    def _release(self, run: _Run) -> None:
        """Free the in-flight slot, CN and IP of a capture. Caller holds _lock."""
        self._running.pop(run.cid, None)
        self._busy_cn.discard(run.cn)
        self._busy_ip.discard(run.ip)
        IN_FLIGHT.labels(self._ns).set(len(self._running))

    def _prune_cooldowns(self, now: float) -> None:
        """Keep the cooldown map bounded under a flood of distinct CNs (amortised O(1))."""
        if len(self._last_start) < self._prune_at:
            return
        horizon = self.options.per_cn_cooldown_s
        self._last_start = {cn: t for cn, t in self._last_start.items() if now - t < horizon}
        self._prune_at = max(4096, 2 * len(self._last_start))

    # ---- one capture ------------------------------------------------------------------

    def _run(self, run: _Run) -> None:
        result: CaptureResult | None = None
        try:
            result = self._execute(run)
        except BaseException as exc:  # noqa: BLE001 - a capture thread must always end in an event
            log.exception("capture %s: internal error", run.cid)
            result = self._failed(run, f"internal error: {exc.__class__.__name__}: {exc}")
        finally:
            with self._lock:
                self._release(run)
            try:
                if result is not None and result.ok:
                    self.gc()
            except (LedgerError, OSError) as exc:
                log.error("capture gc after %s failed: %s", run.cid, exc)
            except Exception:  # noqa: BLE001 - never a traceback from a capture thread
                log.exception("capture gc after %s failed", run.cid)
            finally:
                if result is None:
                    result = self._failed(run, "internal error")
                run.future.set(result)

    def _execute(self, run: _Run) -> CaptureResult:
        opts = self.options
        argv = build_argv(self.tcpdump, opts.interface, opts.snaplen, run.path, run.ip)
        started_at = time.time()
        t0 = time.monotonic()
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                # Its own process group: every signal goes to the group (see _signal).
                start_new_session=True,
                env={"PATH": os.environ.get("PATH", _TCPDUMP_ENV_PATH), "LC_ALL": "C"},
            )
        except (OSError, ValueError) as exc:
            return self._failed(run, f"cannot run {argv[0]}: {getattr(exc, 'strerror', None) or exc}")
        stderr = _StderrReader(proc.stderr)
        with run.lock:
            run.proc = proc
        if self._closed:
            self._signal(run, "closed", signal.SIGTERM)
        try:
            self._wait(run, proc, stderr)
        finally:
            if proc.returncode is None:  # only if waiting itself failed: still reap the child
                self._signal(run, "closed", signal.SIGKILL)
                proc.wait()
            self._end_group(run, proc, stderr)
        duration_ms = int((time.monotonic() - t0) * 1000)
        rc = proc.returncode
        ours = run.signalled
        sent = (-signal.SIGINT, -signal.SIGTERM, -signal.SIGKILL)
        if not (rc in (0, 124) or (ours is not None and rc in sent)):
            if rc < 0:
                cause = f"tcpdump killed by {signal.Signals(-rc).name}"
            else:
                cause = f"tcpdump exited {rc}: {_one_line(stderr.text())}"
            return self._failed(run, cause, remove=True)
        exit_text = f"{ours[0]}:{signal.Signals(ours[1]).name}" if ours else f"exit:{rc}"
        return self._seal(run, started_at, duration_ms, exit_text)

    def _wait(self, run: _Run, proc: subprocess.Popen, stderr: _StderrReader) -> None:
        """Let tcpdump run for the duration, then end it: SIGINT, SIGTERM, SIGKILL."""
        opts = self.options
        # The duration counts from "listening on" (the capture really began); a tcpdump
        # that never says so (a wrapper, an old build) gets the grace to start, no more.
        stderr.listening.wait(opts.backstop_grace_s)
        if _exited(proc, run.duration_s):
            return
        self._signal(run, "timer", signal.SIGINT)
        if _exited(proc, opts.backstop_grace_s):
            return
        self._signal(run, "backstop", signal.SIGTERM)
        if _exited(proc, opts.kill_grace_s):
            return
        self._signal(run, "backstop", signal.SIGKILL)
        proc.wait()

    def _end_group(self, run: _Run, proc: subprocess.Popen, stderr: _StderrReader) -> None:
        """After tcpdump is reaped: kill what of its group still holds its stderr, then
        collect the rest of it. Without this a forked child kept the slot until it exited."""
        if not stderr.done.wait(_LEFTOVER_WAIT_S):
            # Members still hold the pipe, so the group (and its id) still exists.
            try:
                os.killpg(proc.pid, signal.SIGKILL)
                log.warning("capture %s: killed what was left of tcpdump's process group", run.cid)
            except (ProcessLookupError, PermissionError):
                pass
            if not stderr.done.wait(self.options.kill_grace_s):
                log.error("capture %s: tcpdump's stderr is still held open (a process left its group)", run.cid)
        if stderr.done.is_set():  # closing under a blocked reader would block here too
            proc.stderr.close()

    def _signal(self, run: _Run, cause: str, sig: int) -> None:
        with run.lock:
            proc = run.proc
            if proc is None or proc.poll() is not None:
                return
            try:
                # The whole group: a wrapper's children get it too. tcpdump is not yet
                # reaped (poll() above), so its pid still names this group.
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            # The first cause stays (closed, then its SIGKILL), but the timer's SIGINT is
            # the normal end: a backstop after it is what the exit text must say.
            first = run.signalled[0] if run.signalled and run.signalled[0] != "timer" else cause
            run.signalled = (first, sig)
        log.info("capture %s: sent %s (%s)", run.cid, signal.Signals(sig).name, cause)

    def _seal(self, run: _Run, started_at: float, duration_ms: int, exit_text: str) -> CaptureResult:
        try:
            os.chmod(run.path, 0o600)
            info = read_pcap(run.path)
        except FileNotFoundError:
            return self._failed(run, "tcpdump wrote no pcap")
        except OSError as exc:
            return self._failed(run, f"cannot read pcap: {exc.strerror}")
        if info.packets is None:
            return self._failed(run, f"not a pcap ({info.bytes} bytes, {exit_text})", remove=True)
        if info.torn_bytes:
            log.warning("capture %s: pcap ends in a torn record (%d bytes)", run.cid, info.torn_bytes)
        sealed = CaptureSealed(
            capture_id=run.cid,
            cn=run.cn,
            ip=run.ip,
            reason=run.reason,
            anomaly_id=run.anomaly_id,
            path=run.path,
            bytes=info.bytes,
            sha256=info.sha256,
            started_at=fmt.format_ts(started_at),
            duration_ms=duration_ms,
            packets=info.packets,
            exit=exit_text,
            # A pcap with no packet is evidence of silence, not a capture that worked.
            outcome="empty" if info.packets == 0 else "ok",
        )
        if not self.ledger.record("capture.sealed", sealed):
            log.error("capture %s: the ledger refused capture.sealed; the pcap stays indexed", run.cid)
        try:
            st = os.stat(run.path)
            mtime_ns = st.st_mtime_ns
        except OSError:
            mtime_ns = time.time_ns()
        entry = CaptureFile(capture_id=run.cid, path=run.path, bytes=info.bytes, mtime_ns=mtime_ns)
        with self._lock:
            self._index[run.cid] = entry
        with self._count_lock:
            self._outcomes["sealed"] += 1
            if sealed.outcome == "empty":
                self._outcomes["empty"] += 1
        CAPTURES.labels(self._ns, "sealed").inc()
        log.info(
            "capture %s sealed (%s): %d bytes, %s packets, %s",
            *(run.cid, sealed.outcome, info.bytes, info.packets, exit_text),
        )
        return CaptureResult(capture_id=run.cid, ok=True, event=sealed, outcome=sealed.outcome)

    def _failed(self, run: _Run, cause: str, *, remove: bool = False) -> CaptureResult:
        """Record capture.failed. A partial file of a failed capture is removed (and said so)."""
        if remove:
            try:
                size = os.stat(run.path).st_size
                _unlink(run.path)
                cause += f" (partial file of {size} bytes removed)"
            except FileNotFoundError:
                pass
            except OSError as exc:
                cause += f" (partial file left: {exc.strerror})"
        failed = CaptureFailed(
            capture_id=run.cid, cn=run.cn, ip=run.ip, reason=run.reason, anomaly_id=run.anomaly_id, cause=cause
        )
        self.ledger.record("capture.failed", failed)
        with self._count_lock:
            self._outcomes["failed"] += 1
        CAPTURES.labels(self._ns, "failed").inc()
        log.warning("capture %s failed: %s", run.cid, cause)
        return CaptureResult(capture_id=run.cid, ok=False, event=failed, outcome="failed")

    # ---- the local budget ---------------------------------------------------------------

    def captures(self) -> list[CaptureFile]:
        """The sealed pcaps this manager knows (scanned at start, plus those sealed since), oldest first."""
        with self._lock:
            files = list(self._index.values())
        return sorted((self._with_offloaded(f) for f in files), key=_age_key)

    def _with_offloaded(self, f: CaptureFile) -> CaptureFile:
        try:
            offloaded = bool(self.is_offloaded(f.capture_id))
        except Exception as exc:  # noqa: BLE001 - unknown means not offloaded: evicted last
            log.warning("is_offloaded(%s) failed (%s): treated as not offloaded", f.capture_id, exc)
            offloaded = False
        return msgspec.structs.replace(f, offloaded=offloaded)

    def gc(self, dry_run: bool = False) -> list[CaptureEvicted]:
        """Evict local pcaps until both budgets hold; returns the evictions (planned, if dry_run).

        Every ``capture.evicted`` is recorded and flushed before any unlink; if the
        ledger cannot take them, nothing is deleted and LedgerError is raised.
        """
        with self._gc_lock:
            self._forget_vanished()
            with self._lock:
                in_flight = self._in_flight_elsewhere | self._running.keys()
            plan = plan_gc(self.captures(), self.options, in_flight)
            if dry_run or not plan:
                return plan
            for ev in plan:
                if not self.ledger.record("capture.evicted", ev):
                    raise LedgerError("the ledger refused capture.evicted: no pcap deleted")
            if not self.ledger.flush(timeout=_FLUSH_TIMEOUT_S):
                raise LedgerError("the ledger did not confirm capture.evicted: no pcap deleted")
            for ev in plan:
                try:
                    _unlink(ev.path)
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    log.error("capture %s: evicted but not deleted: %s", ev.capture_id, exc.strerror)
                    continue
                with self._lock:
                    self._index.pop(ev.capture_id, None)
                EVICTIONS.labels(self._ns, ev.reason).inc()
                log.info("capture %s evicted (%s, offloaded=%s)", ev.capture_id, ev.reason, ev.offloaded)
            return plan

    def _forget_vanished(self) -> None:
        with self._lock:
            paths = [(cid, f.path) for cid, f in self._index.items()]
        gone = [cid for cid, path in paths if not os.path.lexists(path)]
        if gone:
            log.warning("%d indexed pcap(s) vanished outside ledger: %s", len(gone), ", ".join(gone[:5]))
            with self._lock:
                for cid in gone:
                    self._index.pop(cid, None)

    # ---- lifecycle ----------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        with self._count_lock:
            skips, outcomes = dict(self._skips), dict(self._outcomes)
        with self._lock:
            return {
                "in_flight": len(self._running),
                "skips": skips,
                "outcomes": outcomes,
                "local_files": len(self._index),
                "local_bytes": sum(f.bytes for f in self._index.values()),
            }

    def close(self) -> None:
        """Stop accepting; end running captures (they are still sealed or failed); join them. Idempotent."""
        with self._lock:
            self._closed = True
            runs = list(self._running.values())
        for run in runs:
            self._signal(run, "closed", signal.SIGTERM)
        for run in runs:
            run.thread.join(self.options.kill_grace_s)
            if run.thread.is_alive():
                self._signal(run, "closed", signal.SIGKILL)
                run.thread.join()
        _LIVE.discard(self)

    def __enter__(self) -> CaptureManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@atexit.register
def _close_all() -> None:
    """A silent-host tcpdump outlives its parent: end the captures of managers never closed."""
    for manager in list(_LIVE):
        try:
            manager.close()
        except Exception:  # noqa: BLE001, S110 - best effort at interpreter exit
            pass


# ---- one function per CLI command -----------------------------------------------------------


def capture_now(
    ledger: Ledger,
    options: CaptureOptions | Mapping[str, Any],
    cn: str,
    ip: str,
    reason: str,
    duration_s: int | None = None,
    *,
    anomaly_id: str | None = None,
    is_offloaded: Callable[[str], bool] | None = None,
) -> CaptureResult:
    """``ledger capture``: one manual capture, waited for, then the budget kept.

    Raises UsageError when the request is refused (bad CN, IP, reason or duration).
    """
    with CaptureManager(ledger, options, is_offloaded=is_offloaded) as manager:
        decision = manager.capture(cn, ip, reason, anomaly_id=anomaly_id, duration_s=duration_s)
        if not decision.started:
            raise UsageError(f"capture refused: {decision.skipped.replace('_', ' ')}")
        result = decision.wait()
    ledger.flush(timeout=_FLUSH_TIMEOUT_S)
    return result


def list_captures(
    options: CaptureOptions | Mapping[str, Any], is_offloaded: Callable[[str], bool] | None = None
) -> list[CaptureFile]:
    """``ledger captures``: the pcaps in capture_dir, oldest first (read-only, no ledger needed)."""
    opts = load_options(options)
    files = scan_captures(Path(opts.capture_dir).resolve())
    if is_offloaded is None:
        return files
    return [msgspec.structs.replace(f, offloaded=bool(is_offloaded(f.capture_id))) for f in files]


def gc_captures(
    ledger: Ledger | None,
    options: CaptureOptions | Mapping[str, Any],
    dry_run: bool = False,
    is_offloaded: Callable[[str], bool] | None = None,
    in_flight: Iterable[str] = (),
) -> list[CaptureEvicted]:
    """``ledger gc``: apply the local budget once. A dry run needs no ledger and changes nothing.

    ``in_flight``: ids of captures started but not yet ended (the pointer view's
    ``capturing``); both runs go through ``plan_gc``, so the dry run is the real plan.
    """
    opts = load_options(options)
    in_flight = frozenset(in_flight)
    if dry_run:
        return plan_gc(list_captures(opts, is_offloaded or (lambda cid: False)), opts, in_flight)
    if ledger is None:
        raise UsageError("gc needs a ledger to record evictions (or dry_run)")
    with CaptureManager(ledger, opts, is_offloaded=is_offloaded, in_flight=in_flight) as manager:
        return manager.gc()


__all__ = [
    "CAPTURE_ID_PATTERN",
    "PCAP_SUFFIX",
    "SEVERITIES",
    "SKIP_REASONS",
    "CaptureDecision",
    "CaptureFile",
    "CaptureManager",
    "CaptureOptions",
    "CaptureResult",
    "PcapInfo",
    "build_argv",
    "capture_now",
    "default_capture_dir",
    "gc_captures",
    "list_captures",
    "load_options",
    "new_capture_id",
    "normalize_ip",
    "plan_evictions",
    "plan_gc",
    "read_pcap",
    "scan_captures",
]
