"""Commands that check evidence: verify, checkpoint, prove, verify-proof."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ..errors import LedgerError
from ..verify import Policy, VerifyReport, verify_path
from . import Outcome, app, guarded, outcome_of, render
from .options import (
    ConfigOpt,
    FsSeedOpt,
    JsonOpt,
    KeyFiles,
    NamespaceOpt,
    PubkeyOpt,
    RootOpt,
    StoreOpt,
    _config,
    _config_keys,
    _given_root,
    _load_secret,
    _open_store,
    _read_file,
)
from .render import _err_console, _print_json, _write_quietly, render_verify


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
    pubkey: PubkeyOpt = None,
    fs_seed: FsSeedOpt = None,
    trust: Annotated[
        list[Path] | None,
        typer.Option("--trust", help="A checkpoint (signed note) saved earlier: the file must extend it."),
    ] = None,
    witness: Annotated[
        str | None, typer.Option("--witness", help="Store URL whose checkpoints the local log must be consistent with.")
    ] = None,
    root: RootOpt = None,
    namespace: NamespaceOpt = None,
    config: ConfigOpt = None,
    store: StoreOpt = None,
) -> Outcome:
    """Prove session files are intact; name the first bad line when they are not."""
    from .. import fsseal, notes
    from ..cold.tsa import load_ca

    # Every key and CA the configuration names, as archive uses them; options win.
    cfg = _config(config, tiers or root, namespace, store)
    policy = Policy(
        keys=_config_keys(cfg, key_file),
        allow_unsealed=allow_unsealed,
        jobs=jobs,
        verifiers=tuple(notes.load_verifier_keys(pubkey or [])),
        fs_seeds=tuple(_load_secret(fsseal.load_fs_seed, p, False, "seed file") for p in fs_seed or []),
    )
    render.KEYS_GIVEN["text"] = render.keys_given(policy)  # for the closing line of a file that failed whole
    ca_file = tsa_ca or (Path(cfg.cold.tsa_ca_file) if cfg.cold.tsa_ca_file else None)
    ca_pem = _read_file(ca_file) if ca_file else None
    if ca_pem is not None:
        load_ca(ca_pem, str(ca_file))  # not PEM: a usage error now, not a failure per token
    targets = list(paths or [])
    if not targets and tiers is None:
        # No PATH: the root every other command acts on (--root, LEDGER_ROOT, the config).
        given = _given_root(cfg, root)
        if given is None:
            raise LedgerError(
                "nothing to verify: give PATH..., a store URL, --root ROOT (or LEDGER_ROOT), or --tiers ROOT"
            )
        targets = [str(given / cfg.namespace if cfg.namespace else given)]
    if "-" in targets and (trust or witness):  # checkpoints are checked against a file read again
        raise LedgerError("--trust/--witness need the session file itself, not standard input")
    local = [t for t in targets if "://" not in t and t != "-"]
    urls = [t for t in targets if "://" in t]
    hot = verify_path(local, policy) if local else VerifyReport([])
    files, captures, skipped = hot.files, list(hot.captures), hot.notes
    if "-" in targets:  # standard input, plain or gzip
        from ..verify import verify_reader

        files.append(verify_reader(sys.stdin.buffer, "-", policy))
    for url in urls:
        url_report = _verify_url(url, namespace, policy, ca_pem, config)
        files += url_report.files
        captures += url_report.captures
        captures += _view_shipped(cfg, url_report)
    tier_rows = []
    if tiers is not None:
        from ..cold.remote import tier_report, verify_store

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
        from ..anchors import check_trusted

        anchors += check_trusted(report, [_read_file(t) for t in trust], policy.verifiers)
    if witness:
        from ..anchors import check_witness

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
    return outcome_of(ok)


def _verify_url(url: str, namespace: str | None, policy: Policy, ca_pem: bytes | None, config: Path | None):
    """A store URL: its namespaces, or, when it names none, its last segment as the namespace."""
    from ..cold.remote import store_namespaces, verify_store
    from ..cold.stores import open_store
    from ..config import load_config

    cfg = load_config(config)
    import msgspec

    from ..cold.stores import StoreOptions

    options = msgspec.convert(cfg.cold.s3, StoreOptions)
    cold = open_store(url, options)
    if namespace is None and not store_namespaces(cold):
        base, _, last = url.rstrip("/").rpartition("/")
        if last and "://" in base and not base.endswith(":/"):
            return verify_store(open_store(base, options), last, policy, ca_pem)
    return verify_store(cold, namespace, policy, ca_pem)


@app.command()
@guarded
def checkpoint(
    file: Annotated[Path, typer.Argument(help="A session file.")],
    size: Annotated[
        int | None, typer.Option("--size", min=0, help="The checkpoint of this size (default: latest).")
    ] = None,
) -> None:
    """Print a checkpoint as a C2SP signed note (tlog-checkpoint@v1.0.0 body, Ed25519 lines)."""
    from .. import notes
    from ..proofs import SessionTree

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
    from .. import notes
    from ..proofs import SessionTree, encode_tlog_proof

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
    from ..proofs import SessionTree

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
    from .. import notes
    from ..proofs import verify_tlog_proof

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


def _tier_captures(cold, root: Path, namespaces: list[str], files, captures):
    """The captures whose events straddle the tiers, checked too (ledger/cold/tier_captures.py)."""
    from ..cold.tier_captures import replaces, verify_tier_captures

    for ns in namespaces:
        new = verify_tier_captures(cold, root, ns, files, captures)
        captures = replaces(captures, new) + new
    return captures


def _view_shipped(cfg, url_report: VerifyReport):
    """With a root (config, LEDGER_ROOT): the pcaps its pointer views say were shipped to
    the store just verified and that it does not hold (ledger/cold/tier_captures.py)."""
    import lmdb

    from .. import layout
    from ..cold.stores import open_store
    from ..cold.tier_captures import view_shipped_missing
    from ..projections import VIEWS_DIR, Projector

    root, urls = Path(cfg.root), {layout.namespace_url(f.path) for f in url_report.files if "://" in f.path}
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
        cold = open_store(base, cfg.cold.s3)
        checks += view_shipped_missing(cold, ns, shipped, url_report.captures)
    return checks
