"""``ledger demo DIR``: the writer embedded in a small real asyncio TCP proxy.

An echo upstream and a proxy listen on 127.0.0.1 (ephemeral ports). Several clients
connect through the proxy, introduce themselves with a CN, and send traffic for a
few seconds; a client that sends the marker ``EVIL`` trips the proxy's detector.
The proxy records what a VPN or proxy control plane would: connections opened and
closed with byte counts, and anomalies; an anomaly asks for a real tcpdump capture
of that client when tcpdump can run here (and the summary says plainly when not).

Then the ledger is closed, one archive pass ships the sealed session and the
captures to a cold store (``file://DIR/cold`` unless told otherwise), both tiers
are verified, and a summary is returned for the CLI to render.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import keys as keymod
from .capture import CaptureManager, CaptureOptions, default_capture_dir
from .cold.archive import Archiver, PassReport
from .cold.remote import TierReport, tier_report, verify_store
from .cold.stores import open_store
from .projections import BatchView, CaptureView, Projector
from .verify import Policy, VerifyReport, verify_path
from .writer import Ledger

NAMESPACE = "demo"


@dataclass
class DemoResult:
    ledger_dir: Path
    key_file: Path
    seconds: float
    clients: int
    connections: int = 0
    bytes_proxied: int = 0
    anomalies: int = 0
    stats: dict = field(default_factory=dict)
    report: VerifyReport | None = None
    store_url: str = ""
    capture_note: str = ""
    captures: list[CaptureView] = field(default_factory=list)
    batches: list[BatchView] = field(default_factory=list)
    archive: PassReport | None = None
    tiers: TierReport | None = None
    cold_report: VerifyReport | None = None


def _capture_manager(led: Ledger, ledger_dir: Path) -> tuple[CaptureManager | None, str]:
    """A manager for loopback captures, or None and the plain reason why not."""
    if shutil.which("tcpdump") is None:
        return None, "tcpdump is not installed: anomalies are recorded without packet captures"
    if os.geteuid() != 0:
        return None, "not running as root: tcpdump cannot capture, anomalies are recorded without captures"
    options = CaptureOptions(
        min_severity="high",
        per_cn_cooldown_s=60,
        duration_s=2,
        snaplen=256,
        interface="lo",
        # Where `ledger gc`, `ledger captures` and `ledger capture` look for this namespace.
        capture_dir=str(default_capture_dir(ledger_dir, NAMESPACE)),
        max_concurrent=2,
    )
    return CaptureManager(led, options), "anomalies trigger a 2 s tcpdump capture of the client on lo"


def run_demo(
    root: Path,
    seconds: float = 3.0,
    clients: int = 6,
    seed: int | None = None,
    store_url: str | None = None,
    captures: bool = True,
) -> DemoResult:
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    key_file = root / "hmac.key"
    if not key_file.exists():
        keymod.write_key_file(key_file)
    key = keymod.load_key_file(key_file)
    result = DemoResult(ledger_dir=root / "ledger", key_file=key_file, seconds=seconds, clients=clients)
    result.store_url = store_url or (root / "cold").resolve().as_uri()
    store = open_store(result.store_url)  # a bad URL fails here, before any traffic
    led = Ledger.open(result.ledger_dir, namespace=NAMESPACE, hmac_key=key, checkpoint_every=250)
    manager, result.capture_note = _capture_manager(led, result.ledger_dir) if captures else (None, "captures off")
    try:
        _run_quietly_on_interrupt(_traffic(led, result, random.Random(seed), manager))
    finally:
        if manager is not None:
            manager.close()
        result.stats = led.stats()
        led.close()
    # The archive pass records through a writer of its own (a new session, linked by prev).
    with Ledger.open(result.ledger_dir, namespace=NAMESPACE, hmac_key=key) as led2:
        archiver = Archiver(result.ledger_dir, NAMESPACE, store, led2, [key], hot_retention_s=0)
        try:
            result.archive = archiver.run_once()
        finally:
            archiver.close()
    with Projector(result.ledger_dir, NAMESPACE) as views:
        views.catch_up()
        result.captures = views.captures()
        result.batches = views.batches()
    policy = Policy(keys=(key,))
    result.report = verify_path([result.ledger_dir], policy)
    result.cold_report = verify_store(store, NAMESPACE, policy)
    result.tiers = tier_report(result.ledger_dir, NAMESPACE, store)
    return result


def _run_quietly_on_interrupt(coro) -> None:
    """asyncio.run(coro), except that after a Ctrl-C the connections cut short while the
    tasks are cancelled are not logged as errors: the interrupt is the one thing to report."""
    interrupted = False

    def handler(loop: asyncio.AbstractEventLoop, context: dict) -> None:
        if not interrupted:
            loop.default_exception_handler(context)

    with asyncio.Runner() as runner:
        runner.get_loop().set_exception_handler(handler)
        try:
            runner.run(coro)
        except KeyboardInterrupt:
            interrupted = True
            raise


async def _traffic(led: Ledger, result: DemoResult, rng: random.Random, manager: CaptureManager | None) -> None:
    upstream = await asyncio.start_server(_echo, "127.0.0.1", 0)
    up_port = upstream.sockets[0].getsockname()[1]
    decisions = []

    def on_anomaly(cn: str, ip: str, anomaly_id: str) -> None:
        if manager is not None:
            d = manager.maybe_capture(cn, ip, "signature EVIL in client payload", "high", anomaly_id)
            if d.started:
                decisions.append(d)

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _proxy_one(led, result, reader, writer, up_port, on_anomaly)

    server = await asyncio.start_server(proxy, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    deadline = time.monotonic() + result.seconds
    async with server, upstream:
        evil = {rng.randrange(result.clients)} if result.clients else set()
        # Keep clients going until running captures end, so each capture holds traffic.
        stop = asyncio.Event()
        clients = [asyncio.create_task(_client(i, port, deadline, i in evil, rng, stop)) for i in range(result.clients)]
        await asyncio.sleep(result.seconds)
        for d in list(decisions):
            await asyncio.to_thread(d.wait, 10)
        stop.set()
        await asyncio.gather(*clients)
        led.record("demo.finished", {"connections": result.connections, "bytes": result.bytes_proxied})


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def _proxy_one(led, result, reader, writer, up_port, on_anomaly) -> None:
    peer_ip, peer_port = writer.get_extra_info("peername")[:2]
    hello = await reader.readline()
    cn = hello.decode("utf-8", "replace").strip().removeprefix("CN=")[:64] or "anonymous"
    started = time.monotonic()
    result.connections += 1
    led.record("conn.opened", {"cn": cn, "ip": peer_ip, "port": peer_port})
    up_reader, up_writer = await asyncio.open_connection("127.0.0.1", up_port)
    counts = {"up": 0, "down": 0}

    async def pump(src, dst, direction):
        try:
            while data := await src.read(65536):
                counts[direction] += len(data)
                if direction == "up" and b"EVIL" in data:
                    result.anomalies += 1
                    anomaly_id = f"a{result.anomalies:04d}"
                    led.record(
                        "conn.anomaly",
                        {
                            "anomaly_id": anomaly_id,
                            "cn": cn,
                            "ip": peer_ip,
                            "severity": "high",
                            "reason": "signature EVIL in client payload",
                        },
                    )
                    on_anomaly(cn, peer_ip, anomaly_id)
                dst.write(data)
                await dst.drain()
        except ConnectionError:
            pass
        finally:
            dst.close()

    await asyncio.gather(pump(reader, up_writer, "up"), pump(up_reader, writer, "down"))
    result.bytes_proxied += counts["up"] + counts["down"]
    led.record(
        "conn.closed",
        {
            "cn": cn,
            "ip": peer_ip,
            "bytes_up": counts["up"],
            "bytes_down": counts["down"],
            "duration_ms": round((time.monotonic() - started) * 1000),
        },
    )


async def _client(i: int, port: int, deadline: float, evil: bool, rng: random.Random, stop: asyncio.Event) -> None:
    while not stop.is_set():
        if time.monotonic() > deadline:
            evil = False  # after the deadline: plain traffic only, no new anomalies
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"CN=client-{i}\n".encode())
        for _ in range(rng.randint(1, 5)):
            payload = rng.randbytes(rng.randint(64, 4096)).replace(b"EVIL", b"evil")
            if evil and rng.random() < 0.05:
                payload += b"EVIL"
            writer.write(payload)
            await writer.drain()
            await reader.readexactly(len(payload))
        writer.write_eof()
        await reader.read()
        writer.close()
        await asyncio.sleep(rng.uniform(0.005, 0.05))
