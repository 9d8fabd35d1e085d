"""``ledger demo DIR``: the writer embedded in a small real asyncio TCP proxy.

An echo upstream and a proxy listen on 127.0.0.1 (ephemeral ports). Several clients
connect through the proxy, introduce themselves with a CN, and send traffic for a
few seconds; a client that sends the marker ``EVIL`` trips the proxy's detector.
The proxy records what a VPN or proxy control plane would: connections opened and
closed with byte counts, and anomalies. Then the ledger is closed, verified with
its key, and a summary is returned for the CLI to render.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import keys as keymod
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


def run_demo(root: Path, seconds: float = 3.0, clients: int = 6, seed: int | None = None) -> DemoResult:
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    key_file = root / "hmac.key"
    if not key_file.exists():
        keymod.write_key_file(key_file)
    key = keymod.load_key_file(key_file)
    result = DemoResult(ledger_dir=root / "ledger", key_file=key_file, seconds=seconds, clients=clients)
    led = Ledger.open(result.ledger_dir, namespace=NAMESPACE, hmac_key=key, checkpoint_every=250)
    try:
        asyncio.run(_traffic(led, result, random.Random(seed)))
    finally:
        result.stats = led.stats()
        led.close()
    result.report = verify_path([result.ledger_dir], Policy(keys=(key,)))
    return result


async def _traffic(led: Ledger, result: DemoResult, rng: random.Random) -> None:
    upstream = await asyncio.start_server(_echo, "127.0.0.1", 0)
    up_port = upstream.sockets[0].getsockname()[1]

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _proxy_one(led, result, reader, writer, up_port)

    server = await asyncio.start_server(proxy, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    deadline = time.monotonic() + result.seconds
    async with server, upstream:
        evil = {rng.randrange(result.clients)} if result.clients else set()
        await asyncio.gather(*(_client(i, port, deadline, i in evil, rng) for i in range(result.clients)))
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


async def _proxy_one(led, result, reader, writer, up_port) -> None:
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
                    led.record(
                        "conn.anomaly",
                        {"cn": cn, "ip": peer_ip, "severity": "high", "reason": "signature EVIL in client payload"},
                    )
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


async def _client(i: int, port: int, deadline: float, evil: bool, rng: random.Random) -> None:
    while time.monotonic() < deadline:
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
