"""The `ledger` command: a thin typer layer over the library.

Each command calls one library function and renders what comes back. Exit codes
are decided here and only here (README "Exit codes"):

* 0: everything checked holds;
* 1: an evidence problem (tamper, corruption, bad signature, unsealed, broken link);
* 2: could not check or act (usage, I/O, bad key file, configuration).

Data (JSON, events) goes to stdout; summaries and diagnostics go to stderr. No
traceback is ever shown unless --debug is given.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import keys as keymod
from .config import DEFAULT_HOT_RETENTION_DAYS
from .errors import EvidenceError, KeyFileError, LedgerError
from .verify import FileReport, Policy, VerifyReport, verify_path

EXIT_OK, EXIT_EVIDENCE, EXIT_ERROR = 0, 1, 2
EXIT_INTERRUPTED = 130  # Ctrl-C: 128 + SIGINT

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    # Help texts are plain text: "s3://bucket/prefix[/namespace]" is not rich markup.
    rich_markup_mode=None,
    no_args_is_help=True,
    help="Tamper-evident evidence ledger.",
)
_state = {"debug": False}


def _wide(stream) -> int | None:
    """Terminal width on a TTY; otherwise wide enough that tables never squeeze ids."""
    try:
        return None if stream.isatty() else 200
    except (AttributeError, ValueError):
        return 200


class _Console(Console):
    """rich's Console, except that a closed pipe is not the tamper code.

    rich's ``on_broken_pipe`` raises ``SystemExit(1)``, and 1 means an evidence problem
    here. Once the reader has gone, the rest of the output goes to /dev/null and the
    command ends with its own exit code: 0 on intact evidence, 1 only on a real finding.
    """

    def on_broken_pipe(self) -> None:
        self.quiet = True
        _quiet_broken_pipe(sys.stderr if self.stderr else sys.stdout)


def _out_console() -> Console:
    return _Console(highlight=False, soft_wrap=True, width=_wide(sys.stdout))


def _err_console() -> Console:
    return _Console(
        width=_wide(sys.stderr),
        stderr=True,
        highlight=False,
        soft_wrap=True,
        no_color=bool(os.environ.get("NO_COLOR")) or None,
    )


def fail(message: str, code: int = EXIT_ERROR, as_json: bool = False) -> typer.Exit:
    """Print one diagnostic line to stderr (and, for --json, one object on stdout) and
    return the Exit to raise."""
    message = " ".join(str(message).split("\n"))
    if as_json:
        _write_quietly(sys.stdout, json.dumps({"ok": False, "error": message, "exit_code": code}) + "\n")
    _write_quietly(sys.stderr, f"ledger: error: {message}\n")
    return typer.Exit(code)


def _write_quietly(stream, text: str) -> None:
    """Write and flush; a reader that has gone is not an error of ours."""
    try:
        stream.write(text)
        stream.flush()
    except BrokenPipeError:
        _quiet_broken_pipe(stream)
    except (ValueError, OSError):
        pass


# Commands whose --json is a stream of stored lines (NDJSON), not one object: an error
# there is the stderr line alone.
_NDJSON_COMMANDS = frozenset({"tail"})


def guarded(fn):
    """Map library errors to one stderr line and an exit code (the one place that does)."""

    one_object = fn.__name__ not in _NDJSON_COMMANDS

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        as_json = bool(kwargs.get("as_json")) and one_object
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except EvidenceError as exc:
            if _state["debug"]:
                raise
            raise fail(str(exc), EXIT_EVIDENCE, as_json) from None
        except LedgerError as exc:
            if _state["debug"]:
                raise
            raise fail(str(exc), EXIT_ERROR, as_json) from None
        except KeyboardInterrupt:
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except BrokenPipeError:
            _quiet_broken_pipe()
            raise typer.Exit(0) from None
        except OSError as exc:
            if _state["debug"]:
                raise
            where = f"{exc.filename}: " if exc.filename else ""
            raise fail(f"{where}{exc.strerror or exc}", EXIT_ERROR, as_json) from None
        except Exception as exc:  # a bug: still one line, no locals, no traceback
            if _state["debug"]:
                raise
            raise fail(
                f"internal error: {exc.__class__.__name__}: {exc} (rerun with --debug)", EXIT_ERROR, as_json
            ) from None

    return wrapper


def _quiet_broken_pipe(stream=None) -> None:
    """Point the stream's descriptor (stdout by default) at /dev/null: the reader has gone,
    and Python would complain again when flushing it at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, (stream or sys.stdout).fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def load_keys(key_files: list[Path] | None, signing: bool = False) -> tuple[bytes, ...]:
    """Keys from --key-file (repeatable) or LEDGER_HMAC_KEY_FILE."""
    paths = list(key_files or [])
    if not paths and os.environ.get(keymod.KEY_ENV):
        paths = [Path(os.environ[keymod.KEY_ENV])]
    return tuple(_load_secret(keymod.load_key_file, p, signing) for p in paths)


def _load_secret(load, path, signing: bool, what: str = "key file"):
    """A key or seed file: refused when a signing command finds it readable by group or
    others, warned about (one stderr line) when the command only verifies."""
    loaded = load(path)  # a file that does not load is that error alone
    exposed = keymod.exposed(path, what)
    if exposed and signing:
        raise KeyFileError(f"refusing to sign with an exposed key: {exposed}")
    if exposed:
        _write_quietly(sys.stderr, f"ledger: warning: {exposed}\n")
    return loaded


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks (never shows key material).")] = False,
) -> None:
    _state["debug"] = debug


KeyFiles = Annotated[
    list[Path] | None,
    typer.Option(
        "--key-file", help="HMAC key file (64 hex chars); repeat for rotated keys. Env: LEDGER_HMAC_KEY_FILE."
    ),
]


@app.command()
@guarded
def verify(
    paths: Annotated[
        list[str] | None,
        typer.Argument(
            help="Session files (plain or gzip), directories, '-' for standard input, or cold stores "
            "(s3://bucket/prefix[/namespace], file:///dir).",
            show_default=False,
        ),
    ] = None,
    key_file: KeyFiles = None,
    allow_unsealed: Annotated[
        bool,
        typer.Option("--allow-unsealed", help="Accept a live or crashed session (reports up to where it is signed)."),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
    jobs: Annotated[
        int, typer.Option("--jobs", "-j", min=0, help="Worker processes for large files (0 = one per core).")
    ] = 0,
    tiers: Annotated[
        Path | None, typer.Option("--tiers", help="Verify this hot-tier root AND the cold store, and how they join.")
    ] = None,
    tsa_ca: Annotated[
        Path | None, typer.Option("--tsa-ca", help="PEM CA(s) that RFC 3161 tokens must chain to.")
    ] = None,
    pubkey: Annotated[
        list[str] | None, typer.Option("--pubkey", help="Ed25519 verifier key (name+hash+key) or a file of them.")
    ] = None,
    fs_seed: Annotated[
        list[Path] | None, typer.Option("--fs-seed", help="Forward-secure sealing seed file (kept off the host).")
    ] = None,
    trust: Annotated[
        list[Path] | None,
        typer.Option("--trust", help="A checkpoint (signed note) saved earlier: the file must extend it."),
    ] = None,
    witness: Annotated[
        str | None, typer.Option("--witness", help="Store URL whose checkpoints the local log must be consistent with.")
    ] = None,
    namespace: NamespaceOpt = None,
    config: ConfigOpt = None,
    store: StoreOpt = None,
) -> None:
    """Prove session files are intact; name the first bad line when they are not."""
    from . import fsseal, notes
    from .cold.tsa import load_ca

    # Every key and CA the configuration names, as archive uses them; options win.
    cfg = _config(config, tiers, namespace, store)
    policy = Policy(
        keys=_config_keys(cfg, key_file),
        allow_unsealed=allow_unsealed,
        jobs=jobs,
        verifiers=tuple(notes.load_verifier_keys(pubkey or [])),
        fs_seeds=tuple(_load_secret(fsseal.load_fs_seed, p, False, "seed file") for p in fs_seed or []),
    )
    ca_file = tsa_ca or (Path(cfg.cold.tsa_ca_file) if cfg.cold.tsa_ca_file else None)
    ca_pem = _read_file(ca_file) if ca_file else None
    if ca_pem is not None:
        load_ca(ca_pem, str(ca_file))  # not PEM: a usage error now, not a failure per token
    targets = list(paths or [])
    if not targets and tiers is None:
        raise LedgerError("nothing to verify: give PATH..., a store URL, or --tiers ROOT")
    local = [t for t in targets if "://" not in t and t != "-"]
    urls = [t for t in targets if "://" in t]
    hot = verify_path(local, policy) if local else VerifyReport([])
    files, captures, skipped = hot.files, list(hot.captures), hot.notes
    if "-" in targets:  # standard input, plain or gzip
        from .verify import verify_reader

        files.append(verify_reader(sys.stdin.buffer, "-", policy))
    for url in urls:
        url_report = _verify_url(url, namespace, policy, ca_pem, config)
        files += url_report.files
        captures += url_report.captures
        captures += _view_shipped(cfg, url_report)
    tier_rows = []
    if tiers is not None:
        from .cold.remote import tier_report, verify_store

        cfg = _config(config, tiers, namespace, store)
        cold = _open_store(cfg)
        namespaces = [cfg.namespace] if cfg.namespace else sorted(p.name for p in tiers.iterdir() if p.is_dir())
        for part in (verify_path([tiers], policy), verify_store(cold, cfg.namespace, policy, ca_pem)):
            files += part.files
            captures += part.captures
        captures = _tier_captures(cold, tiers, namespaces, files, captures)
        tier_rows = [tier_report(tiers, ns, cold) for ns in namespaces]
    report = VerifyReport(files, captures, skipped)
    anchors = []
    if trust:
        from .anchors import check_trusted

        anchors += check_trusted(report, [_read_file(t) for t in trust], policy.verifiers)
    if witness:
        from .anchors import check_witness

        cfg = _config(config, None, namespace, witness)
        anchors += check_witness(report, _open_store(cfg), policy.verifiers)
    ok = report.ok and all(t.joined for t in tier_rows) and all(a.ok for a in anchors)
    if as_json:
        out = report.as_dict()
        out["ok"] = ok
        if tiers is not None:
            out["tiers"] = [t.__dict__ for t in tier_rows]
        if trust or witness:
            out["anchors"] = [a.__dict__ for a in anchors]
        _write_quietly(sys.stdout, json.dumps(out, indent=None) + "\n")  # a reader gone: the verdict stands
    else:
        render_verify(report)
        console = _err_console()
        for a in anchors:
            verdict = "[green]consistent[/green]" if a.ok else "[red]INCONSISTENT[/red]"
            console.print(f"{a.source}: {verdict}: {escape(a.detail)}")
        for t in tier_rows:
            verdict = "[green]joined[/green]" if t.joined else "[red]GAP[/red]"
            console.print(
                f"tiers {escape(t.namespace)}: {verdict}; newest archived {escape(str(t.newest_archived))}, "
                f"oldest hot {escape(str(t.oldest_hot))}: {escape(t.detail)}"
            )
    raise typer.Exit(EXIT_OK if ok else EXIT_EVIDENCE)


def _tier_captures(cold, root: Path, namespaces: list[str], files, captures):
    """The captures whose events straddle the tiers, checked too (ledger/cold/tier_captures.py)."""
    from .cold.tier_captures import replaces, verify_tier_captures

    for ns in namespaces:
        new = verify_tier_captures(cold, root, ns, files, captures)
        captures = replaces(captures, new) + new
    return captures


def _view_shipped(cfg, url_report: VerifyReport):
    """With a root (config, LEDGER_ROOT): the pcaps its pointer views say were shipped to
    the store just verified and that it does not hold (ledger/cold/tier_captures.py)."""
    import lmdb
    import msgspec

    from .cold.stores import StoreOptions, open_store
    from .cold.tier_captures import view_shipped_missing
    from .projections import VIEWS_DIR, Projector

    root, urls = Path(cfg.root), {f.path.split("/sessions/")[0] for f in url_report.files if "://" in f.path}
    checks = []
    for ns_url in sorted(urls):
        base, _, ns = ns_url.rpartition("/")
        if not (root / ns / VIEWS_DIR).is_dir():
            continue
        try:
            with Projector(root, ns) as views:
                shipped = views.captures()
        except (OSError, LedgerError, lmdb.Error):
            continue  # no readable view: the store alone is verified, as without a root
        cold = open_store(base, msgspec.convert(cfg.cold.s3, StoreOptions))
        checks += view_shipped_missing(cold, ns, shipped, url_report.captures)
    return checks


def _read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise LedgerError(f"cannot read {path}: {exc.strerror}") from None


def _verify_url(url: str, namespace: str | None, policy: Policy, ca_pem: bytes | None, config: Path | None):
    """A store URL: its namespaces, or, when it names none, its last segment as the namespace."""
    from .cold.remote import store_namespaces, verify_store
    from .cold.stores import open_store
    from .config import load_config

    cfg = load_config(config)
    import msgspec

    from .cold.stores import StoreOptions

    options = msgspec.convert(cfg.cold.s3, StoreOptions)
    cold = open_store(url, options)
    if namespace is None and not store_namespaces(cold):
        base, _, last = url.rstrip("/").rpartition("/")
        if last and "://" in base and not base.endswith(":/"):
            return verify_store(open_store(base, options), last, policy, ca_pem)
    return verify_store(cold, namespace, policy, ca_pem)


def render_verify(report: VerifyReport) -> None:
    """One line per file (and its notes), then a closing line saying, per file, what was
    checked and what failed: taken from the reports, never from what the caller hoped."""
    console = _err_console()
    for f in report.files:
        console.print(_verify_line(f))
        for note in f.notes:
            console.print(f"  note: {escape(note)}")
    for c in report.captures:
        console.print(_capture_line(c))
    for note in report.notes:
        console.print(f"note: {escape(note)}")
    console.print(_verify_summary(report))


_SIGS_UNCHECKED = "signatures NOT checked (no --key-file/--pubkey/--fs-seed)"


def _what_held(f: FileReport) -> str:
    """What was checked of a file that held, in words."""
    state = "sealed" if f.sealed else f"UNSEALED (signed through size {f.signed_size})"
    if f.signatures != "verified":
        sigs = _SIGS_UNCHECKED
    elif f.signers:
        sigs = f"signatures verified (by {', '.join(f.signers)})"
    else:
        sigs = "no checkpoint to sign"
    return f"chain, {f.checkpoints} checkpoint roots, {state}; {sigs}"


def _what_failed(f: FileReport) -> str:
    e = f.first_error
    where = f"line {e.line}" if e.line is not None else "file"
    held = f"; the {f.events} lines before it held" if e.line and f.events else ""
    sigs = "" if f.signatures == "verified" else f"; {_SIGS_UNCHECKED}"
    return f"{escape(Path(f.path).name)}: FAILED at {where} ({e.reason}){held}{sigs}"


def _verify_summary(report: VerifyReport) -> str:
    """``OK|FAIL: k/n files intact, E events: <per file: what held, or where and why it failed>``.
    Files that held alike are grouped (named when few); every failure is named."""
    files = report.files
    held: dict[str, list[str]] = {}
    for f in files:
        if f.ok:
            held.setdefault(_what_held(f), []).append(f.path)
    parts = []
    for what, paths in held.items():
        who = ", ".join(escape(Path(p).name) for p in paths) if len(paths) <= 3 else f"{len(paths)} files"
        parts.append(f"{who}: {escape(what)}")
    parts += [_what_failed(f) for f in files if not f.ok]
    if report.captures:
        good = sum(c.verdict == "ok" for c in report.captures)
        bad = sum(not c.ok for c in report.captures)
        unchecked = len(report.captures) - good - bad
        parts.append(
            f"{good}/{len(report.captures)} captures intact"
            + (f", {bad} FAILED" if bad else "")
            + (f" ({unchecked} not checked)" if unchecked else "")
        )
    verdict = "[green]OK[/green]" if report.ok else "[red]FAIL[/red]"
    n_ok = sum(f.ok for f in files)
    events = sum(f.events for f in files)
    return f"{verdict}: {n_ok}/{len(files)} files intact, {events} events: " + "; ".join(parts or ["nothing verified"])


def _capture_line(c) -> str:
    what = escape(f"capture {c.capture_id} {c.where}" if c.capture_id else c.where)
    if c.verdict == "ok":
        return f"[green]OK[/green] {what}: {c.found_bytes:,} bytes match its capture.sealed"
    label = "[red]FAIL[/red]" if not c.ok else "[yellow]NOT CHECKED[/yellow]"
    return f"{label} {what}: {c.verdict}: {escape(c.detail)}"


def _verify_line(f: FileReport) -> str:
    # Paths and details quote bytes from the file: never let them be read as markup.
    path = escape(f.path)
    if f.first_error is not None:
        e = f.first_error
        where = f"line {e.line}" if e.line is not None else "file"
        return f"[red]FAIL[/red] {path}: {where}: {e.reason}: {escape(e.detail)}"
    state = f"sealed ({escape(f.seal_reason or '')})" if f.sealed else f"UNSEALED, signed through size {f.signed_size}"
    torn = f", torn tail of {f.torn_tail_bytes} bytes not verified" if f.torn_tail_bytes else ""
    return f"[green]PASS[/green] {path}: {f.events} events, {f.checkpoints} checkpoints, {state}{torn}"


@app.command()
@guarded
def keygen(
    name: Annotated[
        str | None, typer.Argument(help="Make an Ed25519 signer key with this name (C2SP signed-note).")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Signer key file (default: NAME.signer.key).")] = None,
    hmac_file: Annotated[Path | None, typer.Option("--hmac", help="Write a new 32-byte HMAC key here.")] = None,
    fs_seed: Annotated[
        Path | None, typer.Option("--fs-seed", help="Write a forward-secure sealing seed here (for the auditor).")
    ] = None,
    fs_state: Annotated[
        Path | None, typer.Option("--fs-state", help="The writer's ratchet state (default: FS_SEED.state).")
    ] = None,
    fs_interval: Annotated[int, typer.Option("--fs-interval", min=1, help="Seconds per sealing epoch.")] = 900,
) -> None:
    """Create key files (mode 0600, never overwritten). Prints public names, never secrets."""
    from . import fsseal, notes

    if not (name or hmac_file or fs_seed):
        raise LedgerError("give NAME (Ed25519 signer), --hmac FILE, or --fs-seed FILE")
    if hmac_file:
        kid = keymod.write_key_file(hmac_file)
        print(f"wrote {hmac_file} (HMAC key id {kid})", file=sys.stderr)
        print(kid)
    if name:
        if not notes.is_valid_name(name):
            raise LedgerError(f"invalid key name {name!r}: no spaces or '+'")
        path = out or Path(f"{name}.signer.key")
        vkey = notes.write_signer_key_file(path, notes.generate_signer(name))
        print(f"wrote {path}; verifier key (give it to auditors):", file=sys.stderr)
        print(vkey)
    if fs_seed:
        ratchet = fsseal.write_fs_seed(fs_seed, interval_s=fs_interval)
        state = fs_state or fs_seed.with_name(fs_seed.name + ".state")
        fsseal.write_fs_state(state, ratchet)
        print(
            f"wrote seed {fs_seed} (seed id {ratchet.seed_id}; move it OFF this host) and writer state {state}",
            file=sys.stderr,
        )


@app.command()
@guarded
def checkpoint(
    file: Annotated[Path, typer.Argument(help="A session file.")],
    size: Annotated[
        int | None, typer.Option("--size", min=0, help="The checkpoint of this size (default: latest).")
    ] = None,
) -> None:
    """Print a checkpoint as a C2SP signed note (tlog-checkpoint@v1.0.0 body, Ed25519 lines)."""
    from . import notes
    from .proofs import SessionTree

    cp = SessionTree.load(file).checkpoint(size)
    try:
        sys.stdout.buffer.write(notes.note_from_sigs(cp.text(), cp.sigs))
    except ValueError:
        raise LedgerError(
            f"the checkpoint of size {cp.size} has no Ed25519 signature; configure a signer (ledger keygen NAME)"
        ) from None


prove_app = typer.Typer(help="Inclusion and consistency proofs from a session file.", no_args_is_help=True)
app.add_typer(prove_app, name="prove")


@prove_app.command("inclusion")
@guarded
def prove_inclusion(
    file: Annotated[Path, typer.Argument(help="A session file.")],
    seq: Annotated[int, typer.Option("--seq", min=0, help="The event to prove.")],
    size: Annotated[int | None, typer.Option("--size", min=1, help="Checkpoint size (default: latest).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Prove event SEQ is in the tree of a signed checkpoint (C2SP tlog-proof@v1)."""
    from . import notes
    from .proofs import SessionTree, encode_tlog_proof

    tree = SessionTree.load(file)
    proof = tree.inclusion(seq, size)
    if as_json:
        _print_json(proof.as_dict())
        return
    try:
        note = notes.note_from_sigs(proof.checkpoint_text(), proof.sigs)
    except ValueError:
        note = None
    if note is not None:
        sys.stdout.buffer.write(encode_tlog_proof(proof, note))
        return
    # No Ed25519 signature: a tlog-proof needs a note; show the parts instead.
    out = [
        f"entry {proof.entry.decode('utf-8', 'replace').rstrip()}",
        f"index {proof.index}",
        f"leaf {proof.leaf.hex()}",
        *[f"proof {h.hex()}" for h in proof.path],
        f"checkpoint size {proof.size} root {proof.root.hex()} (line {proof.checkpoint_line})",
        *[f"sig {sg.alg} {sg.key} {sg.sig}" for sg in proof.sigs],
    ]
    print("\n".join(out))
    print("ledger: note: no Ed25519 signature on this checkpoint, so no tlog-proof form", file=sys.stderr)


@prove_app.command("consistency")
@guarded
def prove_consistency(
    file: Annotated[Path, typer.Argument(help="A session file.")],
    old: Annotated[int, typer.Option("--from", min=1, help="The earlier tree size.")],
    new: Annotated[int | None, typer.Option("--to", min=1, help="The later checkpoint size (default: latest).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Prove the tree of size FROM is a prefix of the tree of a signed checkpoint."""
    from .proofs import SessionTree

    proof = SessionTree.load(file).consistency(old, new)
    if as_json:
        _print_json(proof.as_dict())
        return
    print(f"origin {proof.origin}")
    print(f"old {proof.old_size} {proof.old_root.hex()}")
    print(f"new {proof.new_size} {proof.new_root.hex()}")
    for h in proof.path:
        print(f"proof {h.hex()}")


@app.command("verify-proof")
@guarded
def verify_proof(
    proof_file: Annotated[Path, typer.Argument(help="A tlog-proof file ('-' for stdin).")],
    pubkey: Annotated[list[str], typer.Option("--pubkey", help="Verifier key (name+hash+key) or a file of them.")],
    origin: Annotated[str | None, typer.Option("--origin", help="The log origin the proof must be for.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Check one inclusion proof offline, with nothing but the proof and a verifier key."""
    from . import notes
    from .proofs import verify_tlog_proof

    verifiers = notes.load_verifier_keys(pubkey)
    if not verifiers:
        raise LedgerError("no verifier key: give --pubkey")
    data = sys.stdin.buffer.read() if str(proof_file) == "-" else _read_file(proof_file)
    result = verify_tlog_proof(data, verifiers, origin)
    if as_json:
        _print_json(result.as_dict())
    print(
        f"OK: seq {result.index} is in {result.origin} at size {result.size}, signed by {', '.join(result.verified)}",
        file=sys.stderr,
    )


@app.command()
@guarded
def demo(
    directory: Annotated[Path, typer.Argument(help="Where the demo keeps its key, ledger and cold store.")] = Path(
        "demo-out"
    ),
    seconds: Annotated[float, typer.Option(min=0.5, max=600, help="How long clients send traffic.")] = 3.0,
    clients: Annotated[int, typer.Option(min=1, max=200, help="Concurrent proxy clients.")] = 6,
    store: Annotated[
        str | None, typer.Option("--store", help="Cold store URL (default: file://DIRECTORY/cold).")
    ] = None,
) -> None:
    """Run a small asyncio TCP proxy on 127.0.0.1 with an embedded writer, capture, archive, verify."""
    from .demo import run_demo

    result = run_demo(directory, seconds=seconds, clients=clients, store_url=store)
    console = _err_console()
    table = Table(title=f"ledger demo: {escape(str(result.ledger_dir))}", show_header=False)
    table.add_row("proxy connections", str(result.connections))
    table.add_row("bytes proxied", f"{result.bytes_proxied:,}")
    table.add_row("anomalies recorded", str(result.anomalies))
    table.add_row("captures", escape(result.capture_note))
    table.add_row("events written", str(result.stats.get("events", 0)))
    table.add_row("dropped", str(sum(result.stats.get("dropped", {}).values())))
    table.add_row("cold store", escape(result.store_url))
    if result.tiers is not None:
        t = result.tiers
        table.add_row("tier boundary", escape(f"newest archived {t.newest_archived}, oldest hot {t.oldest_hot}"))
        table.add_row("tiers join", ("[green]yes[/green] " if t.joined else "[red]NO[/red] ") + escape(t.detail))
    table.add_row(
        "key file", f"{escape(str(result.key_file))} (key id {keymod.key_id(keymod.load_key_file(result.key_file))})"
    )
    console.print(table)
    if result.captures:
        console.print(_captures_table(result.captures, "pointer view (captures)"))
    if result.batches:
        console.print(_batches_table(result.batches))
    console.print("[bold]hot tier[/bold]")
    render_verify(result.report)
    if result.cold_report is not None:
        console.print("[bold]cold tier[/bold]")
        render_verify(result.cold_report)
    console.print(f"try: ledger verify --key-file {escape(str(result.key_file))} {escape(str(result.ledger_dir))}")
    ok = result.report.ok and (result.cold_report is None or result.cold_report.ok)
    raise typer.Exit(EXIT_OK if ok else EXIT_EVIDENCE)


# ---- options shared by the commands that act on a ledger ------------------------------------

RootOpt = Annotated[Path | None, typer.Option("--root", help="Ledger root directory. Env: LEDGER_ROOT.")]
NamespaceOpt = Annotated[str | None, typer.Option("--namespace", help="Namespace (default: the host name).")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="TOML configuration file. Env: LEDGER_CONFIG.")]
StoreOpt = Annotated[
    str | None, typer.Option("--store", help="Cold store URL, s3://bucket/prefix or file:///dir. Env: LEDGER_STORE.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")]


def _config(config: Path | None, root: Path | None, namespace: str | None, store: str | None = None):
    from .config import load_config

    return load_config(config, root=str(root) if root else None, namespace=namespace, store=store)


def _config_keys(cfg, key_files: list[Path] | None, signing: bool = False) -> tuple[bytes, ...]:
    keys = load_keys(key_files, signing)
    if not keys and cfg.hmac_key_file:
        keys = (_load_secret(keymod.load_key_file, cfg.hmac_key_file, signing),)
    return keys


def _need_key(cfg, key_files: list[Path] | None) -> tuple[bytes, ...]:
    keys = _config_keys(cfg, key_files, signing=True)
    if not keys:
        raise LedgerError("this command records events: give --key-file (or LEDGER_HMAC_KEY_FILE / hmac_key_file)")
    return keys


def _open_store(cfg):
    import msgspec

    from .cold.stores import StoreOptions, open_store

    if not cfg.cold.store:
        raise LedgerError("no cold store: give --store URL (or LEDGER_STORE, or [cold] store in the config)")
    try:
        options = msgspec.convert(cfg.cold.s3, StoreOptions)
    except msgspec.ValidationError as exc:
        raise LedgerError(f"[cold.s3] configuration: {exc}") from None
    return open_store(cfg.cold.store, options)


def _writer(cfg, keys: tuple[bytes, ...]):
    """The namespace's writer for a command that records: fails, naming the holder, if a host has it."""
    from .writer import Ledger

    return Ledger.open(cfg.root, namespace=cfg.ns, hmac_key=keys[0], extra_keys=keys[1:])


def _projector(cfg, store=None):
    """The namespace's views; a rebuild of them reads archived sessions from ``store``,
    or from the configured store (a view rebuilt from the hot tier alone would drop
    archived batches, so Projector refuses that)."""
    from .projections import Projector

    archived = None
    if store is not None or cfg.cold.store:
        from .cold.remote import archived_lines

        def archived():
            # Opened only when a rebuild happens: the views alone need no store.
            return archived_lines(store or _open_store(cfg), cfg.ns)

    return Projector(cfg.root, cfg.ns, archived_sessions=archived)


def _capture_options(cfg, interface: str | None = None, duration: int | None = None):
    from .capture import CaptureOptions, default_capture_dir

    opts = {"capture_dir": str(default_capture_dir(cfg.root, cfg.ns))}
    if interface:
        opts["interface"] = interface
    if duration:
        opts["duration_s"] = duration
    return CaptureOptions.from_dict(opts)


def _print_json(obj) -> None:
    import msgspec

    sys.stdout.write(msgspec.json.encode(obj).decode() + "\n")


def _captures_table(views, title: str = "captures") -> Table:
    table = Table(title=title)
    for col in ("capture id", "cn", "ip", "state", "local", "bytes", "sha256"):
        table.add_column(col, no_wrap=col in ("capture id", "sha256"))
    for v in views:
        table.add_row(
            escape(v.capture_id),
            escape(v.cn),
            escape(v.ip),
            v.state,
            "yes" if v.local else "no",
            f"{v.bytes:,}",
            v.sha256[:12],
        )
    return table


def _batches_table(batches) -> Table:
    table = Table(title="archive batches (--json for keys)")
    for col in ("session", "events", "state", "local", "objects", "bytes"):
        table.add_column(col, no_wrap=col == "session")
    for b in batches:
        table.add_row(
            escape(b.session),
            str(b.events),
            b.state,
            "deleted" if b.local_deleted else "kept",
            str(len(b.objects)),
            f"{sum(o.bytes for o in b.objects):,}",
        )
    return table


# ---- captures and projections -----------------------------------------------------------


@app.command()
@guarded
def capture(
    ip: Annotated[str, typer.Option("--ip", help="Client address to capture (validated).")],
    cn: Annotated[str, typer.Option("--cn", help="Client name (never used in argv or paths).")],
    reason: Annotated[str, typer.Option("--reason", help="Why: recorded in the capture events.")],
    duration: Annotated[int | None, typer.Option("--duration", min=1, max=3600, help="Seconds.")] = None,
    interface: Annotated[str | None, typer.Option("--interface", help="Interface (default: any).")] = None,
    root: RootOpt = None,
    namespace: NamespaceOpt = None,
    config: ConfigOpt = None,
    key_file: KeyFiles = None,
) -> None:
    """A manual capture: run a bounded tcpdump now, wait, print the pointer event as JSON."""
    from .capture import capture_now

    cfg = _config(config, root, namespace)
    keys = _need_key(cfg, key_file)
    options = _capture_options(cfg, interface, duration)
    with _writer(cfg, keys) as led:
        result = capture_now(led, options, cn, ip, reason, duration)
    _print_json(result.event)
    if not result.ok:
        raise LedgerError(f"capture failed: {result.event.cause}")
    if result.outcome == "empty":
        print(f"ledger: capture {result.capture_id} is empty: no packet of {ip} was seen", file=sys.stderr)


@app.command()
@guarded
def captures(
    as_json: JsonOpt = False,
    root: RootOpt = None,
    namespace: NamespaceOpt = None,
    config: ConfigOpt = None,
) -> None:
    """The pointer view: every capture, where it is and what it must hash to."""
    _show_view(_config(config, root, namespace), "captures", _captures_table, as_json)


def _show_view(cfg, name: str, table, as_json: bool) -> None:
    """Catch the projection up, then print one of its views as JSON or a table."""
    with _projector(cfg) as views:
        result = views.catch_up()
        rows = getattr(views, name)()
    if as_json:
        _print_json(rows)
    else:
        _out_console().print(table(rows))
    _warn_changed(result)


def _warn_changed(result) -> None:
    """A sealed session that changed after it was folded is tamper evidence (exit 1),
    though the views now show what the files say: LMDB on the same disk is no witness,
    the files are what `ledger verify` can judge. Repeated until `ledger rebuild`."""
    for line in result.changed:
        print(
            f"ledger: warning: {line}; views rebuilt from the files (check with ledger verify; "
            "ledger rebuild acknowledges)",
            file=sys.stderr,
        )
    if result.changed:
        raise typer.Exit(EXIT_EVIDENCE)


@app.command()
@guarded
def gc(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be evicted; change nothing.")] = False,
    max_files: Annotated[int | None, typer.Option("--max-files", min=0)] = None,
    max_bytes: Annotated[int | None, typer.Option("--max-bytes", min=0)] = None,
    root: RootOpt = None,
    namespace: NamespaceOpt = None,
    config: ConfigOpt = None,
    key_file: KeyFiles = None,
    store: StoreOpt = None,
) -> None:
    """Evict local captures oldest first until the count and byte budgets hold (offloaded ones first:
    a capture counts as offloaded only once its object is confirmed in the store)."""
    import msgspec

    from .capture import gc_captures

    cfg = _config(config, root, namespace, store)
    keys = None if dry_run else _need_key(cfg, key_file)  # refused before anything is touched
    options = _capture_options(cfg)
    if max_files is not None or max_bytes is not None:
        options = msgspec.structs.replace(
            options,
            max_files=options.max_files if max_files is None else max_files,
            max_bytes=options.max_bytes if max_bytes is None else max_bytes,
        )
    with _projector(cfg) as views:
        views.catch_up()
        offloaded, unconfirmed = _offloaded_in_store(cfg, views.captures())
        in_flight = {v.capture_id for v in views.captures() if v.state == "capturing"}
    if dry_run:
        evicted = gc_captures(None, options, dry_run=True, is_offloaded=offloaded.__contains__, in_flight=in_flight)
    else:
        with _writer(cfg, keys) as led:
            evicted = gc_captures(led, options, is_offloaded=offloaded.__contains__, in_flight=in_flight)
    for e in evicted:
        flag = "offloaded" if e.offloaded else "NOT offloaded" + unconfirmed.get(e.capture_id, "")
        print(f"{'would evict' if dry_run else 'evicted'} {e.capture_id} ({e.bytes:,} bytes, {e.reason}, {flag})")
    print(f"{len(evicted)} capture(s) {'to evict' if dry_run else 'evicted'}", file=sys.stderr)


def _offloaded_in_store(cfg, views) -> tuple[set[str], dict[str, str]]:
    """The local captures whose object the store holds now (HEAD of the key derived from
    the id, size and sha256 of its capture.sealed), and why each other capture the view
    calls offloaded is not: the view alone never makes a local pcap the spare copy."""
    from .cold.manifest import capture_keys

    claimed = [v for v in views if v.state == "offloaded" and v.local]
    if not claimed:
        return set(), {}
    if not cfg.cold.store:
        return set(), {v.capture_id: ": no store configured to confirm a copy" for v in claimed}
    cold = _open_store(cfg)
    confirmed, why = set(), {}
    for v in claimed:
        info = cold.head(capture_keys(cfg.ns, v.capture_id)[0])
        if info is not None and (info.size, info.sha256) == (v.bytes, v.sha256):
            confirmed.add(v.capture_id)
        else:
            state = "missing from" if info is None else "different in"
            why[v.capture_id] = f": its object is {state} {cold.url}; the local pcap is the only copy"
    return confirmed, why


@app.command()
@guarded
def rebuild(
    root: RootOpt = None,
    namespace: NamespaceOpt = None,
    config: ConfigOpt = None,
    store: StoreOpt = None,
    hot_only: Annotated[
        bool,
        typer.Option("--hot-only", help="Rebuild from the hot tier alone even if that drops archived batches."),
    ] = False,
) -> None:
    """Drop the views and replay the whole history: the hot tier and the archived sessions
    in the store (--store, else the configured one). Without a store, refuses to drop
    batches of sessions archived and deleted here."""
    cfg = _config(config, root, namespace, store)
    cold = _open_store(cfg) if cfg.cold.store and not hot_only else None
    with _projector(cfg, cold) if cold else _hot_projector(cfg) as views:
        result = views.rebuild(allow_loss=hot_only)
        n_caps, n_batches = len(views.captures()), len(views.batches())
    where = f"{result.folded.get('archived', 0)} archived session(s) from {cold.url} and " if cold else ""
    print(
        f"rebuilt from {result.applied:,} events: {where}{result.folded.get('local', 0)} local session(s) "
        f"from {Path(cfg.root) / cfg.ns}; {n_caps} captures, {n_batches} batches",
        file=sys.stderr,
    )
    _warn_changed(result)


def _hot_projector(cfg):
    from .projections import Projector

    return Projector(cfg.root, cfg.ns)


@app.command()
@guarded
def batches(
    as_json: JsonOpt = False,
    root: RootOpt = None,
    namespace: NamespaceOpt = None,
    config: ConfigOpt = None,
) -> None:
    """The batch view: sessions archived to cold storage and what became of them."""
    _show_view(_config(config, root, namespace), "batches", _batches_table, as_json)


# ---- cold storage ---------------------------------------------------------------------------


@app.command()
@guarded
def archive(
    root: RootOpt = None,
    namespace: NamespaceOpt = None,
    config: ConfigOpt = None,
    store: StoreOpt = None,
    key_file: KeyFiles = None,
    hot_retention_days: Annotated[
        float | None,
        typer.Option(
            "--hot-retention-days",
            min=0,
            show_default=False,
            help=f"Keep archived sessions locally this many days (default {DEFAULT_HOT_RETENTION_DAYS:g}, "
            "or [cold] hot_retention_days / LEDGER_HOT_RETENTION_DAYS; 0 deletes them once archived).",
        ),
    ] = None,
) -> None:
    """One archive pass: ship sealed sessions and captures, confirm, record, delete what is due."""
    from .cold.archive import Archiver
    from .cold.owner import claim_namespace
    from .identity import root_identity

    cfg = _config(config, root, namespace, store)
    keys = _need_key(cfg, key_file)
    cold = _open_store(cfg)
    days = cfg.cold.hot_retention_days if hot_retention_days is None else hot_retention_days
    identity = root_identity(cfg.root, cfg.host_id)
    # Before a writer is opened (which adds a session to the root): an unreachable store,
    # or a namespace another root owns, fails here and leaves no trace.
    claim_namespace(cold, cfg.ns, identity)
    with _writer(cfg, keys) as led:
        archiver = Archiver(
            cfg.root,
            cfg.ns,
            cold,
            led,
            list(keys),
            hot_retention_s=days * 86400,
            tsa_url=cfg.cold.tsa_url,
            jobs=0,
            identity=identity,
        )
        try:
            report = archiver.run_once()
            led.flush()
            archiver.projector.catch_up()  # LMDB allows one open of the views per process
            rows = archiver.projector.batches()
        finally:
            archiver.close()
    _out_console().print(_batches_table(rows))
    again = f", re-uploaded {len(report.reuploaded)} the store had lost" if report.reuploaded else ""
    print(
        f"archived {len(report.batches)} session(s), {len(report.captures)} capture(s){again}; "
        f"deleted {len(report.local_deleted)} local session(s) (hot retention {days:g} days); "
        f"{len(report.errors)} error(s)",
        file=sys.stderr,
    )
    for err in report.errors:
        print(f"ledger: error: {err}", file=sys.stderr)
    if report.evidence:
        raise typer.Exit(EXIT_EVIDENCE)  # a session that does not verify: left in place, named above
    if report.errors:
        raise typer.Exit(EXIT_ERROR)


@app.command("rotate-remote")
@guarded
def rotate_remote_cmd(
    before: Annotated[
        str,
        typer.Option(
            "--before",
            help="Delete objects sealed before TIME: 90d, 12h, 30m, 45s before now; a date "
            "(2026-11-23 = midnight UTC); or RFC 3339 with Z or an offset. Anything else exits 2.",
        ),
    ],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List exactly the keys a real run would delete; delete nothing.")
    ] = False,
    force: Annotated[
        bool,
        typer.Option("--force", help="Allow a cut-off in the future or newer than now minus the hot retention."),
    ] = False,
    root: RootOpt = None,
    namespace: NamespaceOpt = None,
    config: ConfigOpt = None,
    store: StoreOpt = None,
    key_file: KeyFiles = None,
) -> None:
    """Expire the cold tier by exact keys from the batch view (never by listing a prefix).

    Each session is confirmed by its manifest in the store (MAC, seal time) before its
    objects go. Exits 2 when any key was kept (Object Lock, a store error, a manifest
    missing or not confirming the view), 1 when a manifest fails its MAC.
    """
    from .cold.archive import Recorder
    from .cold.remote import cutoff_refusal, rotate_remote
    from .when import parse_when

    cutoff = parse_when(before, option="--before")  # a bad TIME stops here, before any store is opened
    cfg = _config(config, root, namespace, store)
    refusal = cutoff_refusal(cutoff, cfg.cold.hot_retention_days * 86400)
    if refusal and not force:
        raise fail(f"--before {before.strip()!r}: {refusal}; give --force to rotate anyway")
    keys = _need_key(cfg, key_file)  # a dry run too: the plan checks each manifest's MAC
    cold = _open_store(cfg)
    if dry_run:
        with _projector(cfg) as views:
            views.catch_up()
            report = rotate_remote(views, cold, None, cutoff, dry_run=True, keys=keys)
    else:
        with _writer(cfg, keys) as led, _projector(cfg) as views:
            led.flush()
            views.catch_up()
            report = rotate_remote(views, cold, Recorder(led), cutoff, keys=keys)
    for key in report.deleted:
        print(f"{'would delete' if dry_run else 'deleted'} {key}")
    for kept in report.kept:
        print(
            f"ledger: {'would keep' if dry_run else 'kept'} {kept.get('key')}: "
            f"{kept.get('code')} {kept.get('message', '')}",
            file=sys.stderr,
        )
    print(
        f"before {report.before}: {len(report.batches)} batch(es), {len(report.captures)} capture(s): "
        f"{len(report.deleted)} key(s) {'to delete' if dry_run else 'deleted'}, {len(report.kept)} kept, "
        f"{report.requests} request(s)",
        file=sys.stderr,
    )
    if report.kept:
        # A manifest that fails its MAC is bad evidence (1); a lock, a store error or a
        # view the store does not confirm left the job undone, the evidence intact (2).
        raise fail(
            f"{len(report.kept)} key(s) kept, not deleted",
            EXIT_EVIDENCE if report.evidence_problem else EXIT_ERROR,
        )


@app.command()
@guarded
def restore(
    session: Annotated[str, typer.Argument(help="Session id to bring back.")],
    to: Annotated[Path, typer.Option("--to", help="Hot-tier root to write <namespace>/<session>.ndjson into.")],
    root: RootOpt = None,
    namespace: NamespaceOpt = None,
    config: ConfigOpt = None,
    store: StoreOpt = None,
    key_file: KeyFiles = None,
) -> None:
    """Download an archived session, verify it, and write it back to the hot tier."""
    from .cold.remote import restore_session
    from .events import ArchiveRestored
    from .format import format_ts

    cfg = _config(config, root, namespace, store)
    keys = _need_key(cfg, key_file)
    cold = _open_store(cfg)
    dest, report = restore_session(cold, cfg.ns, session, to, Policy(keys=keys))
    if Path(cfg.root).resolve() == to.resolve():
        with _writer(cfg, keys) as led:
            led.record(
                "archive.restored",
                ArchiveRestored(batch_id=session, session=session, path=str(dest), restored_at=format_ts()),
            )
    print(f"restored {dest}: {report.events} events, verified", file=sys.stderr)


# ---- tail ----------------------------------------------------------------------------

_TAIL_STYLES = {
    "capture": "cyan",
    "upload": "blue",
    "deletion": "red",
    "session": "bold magenta",
    "checkpoint": "green",
    "other": "",
}


def _tail_stop_fd() -> int | None:
    """stdout when it is a pipe or socket: `tail -f | head` stops once head has gone."""
    import stat

    try:
        fd = sys.stdout.fileno()
        mode = os.fstat(fd).st_mode
    except (OSError, ValueError, AttributeError):
        return None
    return fd if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) else None


def _tail_event_text(ev, multi: bool):
    from rich.text import Text

    from .tail import clean, family, summary

    t = Text()
    if ev.ts is None:
        t.append("?                  not a v1 line: ", style="dim")
        t.append(summary(ev))
        return t
    t.append(f"{ev.ts[5:10]} {ev.ts[11:23]}", style="dim")
    if multi:
        t.append(f" {clean(ev.namespace)}", style="bold")
    t.append(f" {ev.seq:>6} ")
    t.append(f"{clean(ev.kind):<18}", style=_TAIL_STYLES[family(ev.kind)])
    t.append(" ")
    t.append(summary(ev))
    return t


def _tail_verified_text(v) -> str:
    if v.keys:
        sig = f"HMAC signatures verified ({v.keys} key{'s' if v.keys > 1 else ''})"
    else:
        sig = "signatures NOT checked (no --key-file)"
    where = f"{v.namespace}/{v.session}"
    if v.whole:
        return f"verified {where} whole: seq 0-{v.lines - 1}, {v.checkpoints} checkpoints, sealed; {sig}"
    if v.lines == 0:
        return f"verifying {where} from seq 0 as it is written; {sig}"
    sealed = ", sealed" if v.sealed else ""
    return (
        f"verified {where} from seq 0: seq 0-{v.lines - 1} ({v.checkpoints} checkpoints{sealed}); "
        f"each new line is checked from seq {v.lines}; {sig}"
    )


def _tail_flush(out) -> None:
    try:
        out.flush()
        sys.stdout.flush()
    except (BrokenPipeError, ValueError):
        _quiet_broken_pipe()


def _refuse_gzip(path: Path) -> None:
    """tail follows live session files; an archived .ndjson.gz is for verify to read."""
    from .errors import UsageError
    from .verify import GZIP_MAGIC, not_regular

    if path.is_file() and not not_regular(path):
        try:
            with open(path, "rb") as f:
                magic = f.read(2)
        except OSError:
            return  # follow() reports it
        if magic == GZIP_MAGIC:
            raise UsageError(
                f"{path} is gzip-compressed (an archived session): tail follows live session files; "
                f"check it with `ledger verify {path}`"
            )


@app.command()
@guarded
def tail(
    path: Annotated[
        Path, typer.Argument(help="A session file, a namespace directory or a root directory.", show_default=False)
    ],
    follow: Annotated[
        bool, typer.Option("-f", "--follow", help="Keep printing new events as they are written, across rotations.")
    ] = False,
    lines: Annotated[
        int | None,
        typer.Option(
            "-n",
            "--lines",
            min=0,
            show_default=False,
            help="Print the last N matching events first (default 10; with --since, all since TIME).",
        ),
    ] = None,
    kind: Annotated[
        list[str] | None, typer.Option("--kind", help="Only kinds matching this glob (capture.*); repeatable.")
    ] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Only events at or after TIME: 10m, 2h, 1d, a date or RFC 3339.")
    ] = None,
    namespace: Annotated[
        str | None, typer.Option("--namespace", help="With a root directory: follow only this namespace.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the stored lines unchanged (NDJSON).")] = False,
    check: Annotated[
        bool,
        typer.Option("--verify", help="Check chain, seq and checkpoints of everything read; exit 1 at a break."),
    ] = False,
    key_file: KeyFiles = None,
    poll: Annotated[bool, typer.Option("--poll", hidden=True, help="Poll instead of using inotify.")] = False,
) -> None:
    """Print the last events of a ledger; follow it live with -f, verifying as it goes with --verify."""
    import io
    from contextlib import closing

    from rich.text import Text

    from .errors import UsageError
    from .tail import IDLE, Notice, SessionChange, TailEvent, TailOptions, Verified, parse_since, target_kind
    from .tail import follow as follow_path

    if key_file and not check:
        raise UsageError("--key-file needs --verify")
    _refuse_gzip(path)
    opts = TailOptions(
        lines=10 if lines is None and since is None else lines,
        follow=follow,
        kinds=tuple(kind or ()),
        since=parse_since(since) if since is not None else None,
        namespace=namespace,
        verify=check,
        keys=load_keys(key_file) if check else (),
        poll=True if poll else None,
        stop_fd=_tail_stop_fd() if follow else None,
    )
    multi = namespace is None and target_kind(path) == "root"
    # Our own buffer on fd 1 (even under PYTHONUNBUFFERED): one write() per batch, flushed when idle.
    out = io.BufferedWriter(io.FileIO(sys.stdout.fileno(), "wb", closefd=False), 1 << 16)
    plain = bool(os.environ.get("NO_COLOR"))  # no colour, and no bold or dim either
    console = _Console(
        highlight=False, soft_wrap=True, markup=False, emoji=False, color_system=None if plain else "auto"
    )
    err = _err_console()
    try:
        with closing(follow_path(path, opts)) as items:
            for item in items:
                if isinstance(item, TailEvent):
                    if as_json:
                        out.write(item.raw)
                    else:
                        console.print(_tail_event_text(item, multi))
                elif item is IDLE:
                    _tail_flush(out)
                elif isinstance(item, SessionChange):
                    if item.previous is not None and not as_json:
                        console.rule(Text(f"{item.namespace} · {item.session}"))
                elif isinstance(item, Verified):
                    err.print(Text(f"ledger: {_tail_verified_text(item)}"))
                elif isinstance(item, Notice):
                    err.print(Text(f"ledger: {item.message}"))
    except KeyboardInterrupt:  # Ctrl-C: like coreutils tail -f, 130 (not "everything checked holds")
        _tail_flush(out)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except EvidenceError as exc:
        _tail_flush(out)
        err.print(Text(f"ledger: VERIFY FAILED: {exc}", style="bold red"))
        raise typer.Exit(EXIT_EVIDENCE) from None
    _tail_flush(out)


def main(argv: list[str] | None = None) -> None:
    """The console script: every way out of a command is one of README's exit codes.

    typer runs in non-standalone mode so that click's own errors (an unknown option, a
    missing argument) become the one ``ledger: error: ...`` line (exit 2) instead of a
    usage box, Ctrl-C anywhere is 130 without a traceback, and a reader that has gone is
    never the tamper code.
    """
    from typer import _click as click  # typer >= 0.2x vendors click: its exceptions, not click's

    try:
        try:
            rv = app(args=argv, prog_name="ledger", standalone_mode=False)
            code = rv if isinstance(rv, int) else EXIT_OK
        except click.exceptions.NoArgsIsHelpError as exc:  # `ledger`, `ledger prove`: the help
            _write_quietly(sys.stdout, exc.ctx.get_help() + "\n" if exc.ctx else "")
            code = EXIT_ERROR
        except click.ClickException as exc:  # usage: unknown option, missing argument, bad value
            args = sys.argv[1:] if argv is None else argv
            fail(exc.format_message(), EXIT_ERROR, "--json" in args and not _NDJSON_COMMANDS.intersection(args[:2]))
            code = EXIT_ERROR
        except (click.exceptions.Abort, KeyboardInterrupt):
            code = EXIT_INTERRUPTED
        except BrokenPipeError:
            _quiet_broken_pipe()
            code = EXIT_OK
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else EXIT_ERROR
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            _quiet_broken_pipe()
        except (ValueError, OSError):
            pass
    except KeyboardInterrupt:  # a second Ctrl-C while finishing
        code = EXIT_INTERRUPTED
    sys.exit(code)


if __name__ == "__main__":
    main()
