"""Kill a ledger writer with SIGKILL at random moments; recover; check nothing flushed was lost.

The long, by-hand version of ``tests/test_writer.py::test_crash_recovery_kill_loop``:

    python tools/crashloop.py                                # 300 iterations in a temp dir
    python tools/crashloop.py --iterations 2000 --root /var/tmp/crash --seed 7

(use the project's virtualenv python, e.g. ``/work/venv/bin/python``; the project must be
importable: installed, or run from the repository). Each iteration:

1. starts a child Python process that opens the namespace with ``durability="batch"``,
   ``checkpoint_every=100`` and a random ``rotate_bytes`` (64 KiB or 512 KiB), then
   records events ``{"it": i, "n": 1, 2, ...}`` as fast as it can in random batches,
   calls ``flush()`` after each batch and prints the last event number it flushed;
2. SIGKILLs it 0.05-0.4 s (random) after it is ready;
3. opens the same namespace in this process (crash recovery) and closes it at once;
4. checks: the new session files verify with the key; the child's sessions are sealed
   (``rotated``, the last one ``recovered``, or ``rotated`` when the kill fell between a
   rotation's seal and the next session; a session set aside as quarantined may only be
   one killed before its first line was complete); the new session's ``prev`` names the
   child's last session; the child's events on disk are a gapless prefix 1..m of what it
   recorded; and every event whose ``flush()`` returned before the kill is there.

Every 50 iterations, and at the end, it prints one summary line (iterations, kills,
events confirmed, events found, failures, ...) after verifying the whole namespace of
those 50 iterations, ``prev`` links included; a namespace that verified is then deleted
unless ``--keep``. Exit status 0 when every check held, 1 on any failure (each printed
as ``FAIL ...``), 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import msgspec  # noqa: E402

from ledger import Ledger  # noqa: E402
from ledger.verify import Policy, prev_link, verify_file, verify_path  # noqa: E402

KEY = bytes(range(32))  # a test key: never use it elsewhere
BLOCK = 50  # iterations per namespace and per summary line

CHILD = textwrap.dedent(
    """
    import random
    import sys

    sys.path.insert(0, sys.argv[6])
    from ledger import Ledger

    root, namespace, key_hex, it, rotate_bytes = sys.argv[1:6]
    led = Ledger.open(
        root,
        namespace=namespace,
        hmac_key=bytes.fromhex(key_hex),
        durability="batch",
        checkpoint_every=100,
        rotate_bytes=int(rotate_bytes),
    )
    print("ready", flush=True)
    rng = random.Random()
    n = 0
    while True:
        for _ in range(rng.randint(1, 300)):
            n += 1
            if not led.record("crash.event", {"it": int(it), "n": n, "pad": "p" * (n % 97)}):
                print("drop", n, flush=True)
        if led.flush(timeout=30):
            print(n, flush=True)
        else:
            print("flush-failed", flush=True)
    """
)


class Failure(Exception):
    pass


@dataclass
class Totals:
    iterations: int = 0
    kills: int = 0
    confirmed: int = 0
    found: int = 0
    recovered: int = 0
    quarantined: int = 0
    between_sessions: int = 0
    torn: int = 0
    failures: int = 0

    def line(self, started: float) -> str:
        return (
            f"iterations {self.iterations} kills {self.kills} events confirmed {self.confirmed} "
            f"events found {self.found} failures {self.failures} "
            f"(recovered {self.recovered}, torn tails {self.torn}, quarantined {self.quarantined}, "
            f"between sessions {self.between_sessions}; {time.monotonic() - started:.1f} s)"
        )


def check(cond: object, msg: str) -> None:
    if not cond:
        raise Failure(msg)


def lines_of(path: Path) -> list[dict]:
    return [msgspec.json.decode(x) for x in path.read_bytes().split(b"\n")[:-1]]


def seal_of(path: Path) -> dict:
    raw = path.read_bytes()
    check(raw.endswith(b"\n"), f"{path.name}: bytes after the last LF")
    last = msgspec.json.decode(raw.rstrip(b"\n").rsplit(b"\n", 1)[-1])
    check(last["kind"] == "session.sealed", f"{path.name}: last line is {last['kind']}, not session.sealed")
    return last


def sessions(ns_dir: Path) -> list[Path]:
    return sorted(ns_dir.glob("*.ndjson"))


def verify(paths: list[Path]) -> None:
    report = verify_path(paths, Policy(keys=(KEY,), jobs=1))
    bad = [(Path(f.path).name, f.first_error) for f in report.files if not f.ok]
    check(report.ok, f"verification failed: {bad}")


def run_child(child: Path, root: Path, namespace: str, it: int, delay: float, rotate_bytes: int, log: Path):
    """Start the writer child, SIGKILL it ``delay`` s after it is ready.

    Returns (confirmed, drops, killed): the last flushed event number, the numbers
    record() refused, and whether SIGKILL is what ended it.
    """
    state: dict = {"confirmed": 0, "drops": set(), "other": []}
    ready = threading.Event()
    with open(log, "ab") as err:
        proc = subprocess.Popen(
            [sys.executable, str(child), str(root), namespace, KEY.hex(), str(it), str(rotate_bytes), str(REPO)],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )

        def read() -> None:
            for line in proc.stdout:
                line = line.strip()
                if line == "ready":
                    ready.set()
                elif line.isdigit():
                    state["confirmed"] = int(line)
                elif line.startswith("drop "):
                    state["drops"].add(int(line.split()[1]))
                elif line:
                    state["other"].append(line)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            became_ready = ready.wait(30)
            if became_ready:
                time.sleep(delay)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
            reader.join(30)
    check(became_ready, f"the child never became ready (see {log})")
    check(not state["other"], f"child printed {state['other'][:3]}")
    return state["confirmed"], state["drops"], proc.returncode == -signal.SIGKILL


def iteration(child: Path, root: Path, namespace: str, it: int, rng: random.Random, seen: set, totals: Totals, log):
    delay = rng.uniform(0.05, 0.4)
    rotate_bytes = rng.choice([64 * 1024, 512 * 1024])
    confirmed, drops, killed = run_child(child, root, namespace, it, delay, rotate_bytes, log)
    totals.kills += killed
    check(killed, "the child ended before it was killed")
    totals.confirmed += confirmed

    led = Ledger.open(root, namespace=namespace, hmac_key=KEY)
    recovered = led.recovered
    led.close(timeout=30)

    ns_dir = root / namespace
    new = [p for p in sessions(ns_dir) if p.name not in seen]
    seen.update(p.name for p in new)
    check(len(new) >= 2, f"expected the child's session(s) and a new one, found {[p.name for p in new]}")
    verify(new)
    children, parent = new[:-1], new[-1]
    reasons = [seal_of(p)["data"]["reason"] for p in children]
    check(reasons[:-1] == ["rotated"] * (len(reasons) - 1), f"seal reasons {reasons}")
    action = recovered["action"]
    if action == "sealed":
        totals.recovered += 1
        check(reasons[-1] == "recovered", f"recovered, but the last child session is sealed {reasons[-1]}")
        torn = seal_of(children[-1])["data"].get("torn_bytes")
        check(torn == recovered["torn_bytes"], f"seal torn_bytes {torn} != {recovered['torn_bytes']}")
        totals.torn += bool(torn)
    elif action == "quarantined":
        totals.quarantined += 1
        extra = recovered["opened_extra"]
        check(reasons[-1] == "rotated", f"quarantined, but the last child session is sealed {reasons[-1]}")
        check(extra["quarantine_reason"].startswith("empty"), f"quarantined: {extra['quarantine_reason']}")
        aside = ns_dir / extra["quarantined"]
        check(b"\n" not in aside.read_bytes(), f"{aside.name} has a complete line but was quarantined")
    else:
        totals.between_sessions += 1
        check(action == "none" and reasons[-1] == "rotated", f"recovery action {action}, seals {reasons}")
    prev = lines_of(parent)[0]["data"]["prev"]
    want = msgspec.structs.asdict(prev_link(verify_file(children[-1])))
    check(prev == want, f"new session's prev {prev} != summary of {children[-1].name}")

    found = [
        line["data"]["n"]
        for p in children
        for line in lines_of(p)
        if line["kind"] == "crash.event" and line["data"]["it"] == it
    ]
    totals.found += len(found)
    expected = [n for n in range(1, len(found) + len(drops) + 1) if n not in drops][: len(found)]
    check(found == expected, "the events on disk are not a gapless prefix of those recorded")
    on_disk = set(found)
    missing = [n for n in range(1, confirmed + 1) if n not in drops and n not in on_disk]
    check(not missing, f"{len(missing)} flushed events lost (confirmed up to {confirmed}, first {missing[:5]})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--iterations", type=int, default=300, help="kill-and-recover rounds (default 300)")
    ap.add_argument("--root", type=Path, help="ledger root to use (default: a new temporary directory)")
    ap.add_argument("--seed", type=int, help="random seed (default: random, printed)")
    ap.add_argument("--keep", action="store_true", help="keep namespaces that verified (default: delete)")
    ap.add_argument("-v", "--verbose", action="store_true", help="show the writer's warnings (each recovery)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.verbose else logging.ERROR, format="%(name)s: %(message)s")
    if args.iterations < 1:
        ap.error("--iterations must be at least 1")

    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    tmp = None
    if args.root is None:
        tmp = tempfile.mkdtemp(prefix="ledger-crashloop-")
        root = Path(tmp)
    else:
        root = args.root
        root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="ledger-crashloop-child-"))
    child = work / "crash_child.py"
    child.write_text(CHILD)
    log = work / "child-stderr.log"
    print(f"crashloop: root {root}, seed {seed}, {args.iterations} iterations", flush=True)

    totals = Totals()
    started = time.monotonic()
    failed_namespaces: list[str] = []
    namespace, seen, block_failures = "", set(), 0
    for it in range(args.iterations):
        if it % BLOCK == 0:
            namespace, seen, block_failures = f"crash-{seed}-{it // BLOCK:04d}", set(), 0
        try:
            iteration(child, root, namespace, it, rng, seen, totals, log)
        except Failure as exc:
            totals.failures += 1
            block_failures += 1
            print(f"FAIL iteration {it} ({namespace}): {exc}", flush=True)
        except Exception as exc:  # noqa: BLE001 - report and go on: one bad round is one failure
            totals.failures += 1
            block_failures += 1
            print(f"FAIL iteration {it} ({namespace}): {exc.__class__.__name__}: {exc}", flush=True)
        totals.iterations += 1
        if (it + 1) % BLOCK == 0 or it + 1 == args.iterations:
            try:  # the whole namespace of this block: every session and every prev link
                verify([root / namespace])
            except Failure as exc:
                totals.failures += 1
                block_failures += 1
                print(f"FAIL namespace {namespace}: {exc}", flush=True)
            if block_failures:
                failed_namespaces.append(namespace)
            elif not args.keep:
                shutil.rmtree(root / namespace, ignore_errors=True)
            print(totals.line(started), flush=True)

    if totals.failures:
        print(f"crashloop: FAILED; kept for inspection: {[str(root / n) for n in failed_namespaces]}, {log}")
        return 1
    if tmp and not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
    print(f"crashloop: OK (seed {seed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
