"""What several commands share: the options declared once, and the configuration,
keys, store, writer and views they resolve to."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from .. import keys as keymod
from ..errors import KeyFileError, LedgerError
from ..regular import read_small
from .render import _write_quietly

# ---- options shared by the commands that act on a ledger ------------------------------------

RootOpt = Annotated[Path | None, typer.Option("--root", help="Ledger root directory. Env: LEDGER_ROOT.")]
NamespaceOpt = Annotated[str | None, typer.Option("--namespace", help="Namespace (default: the host name).")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="TOML configuration file. Env: LEDGER_CONFIG.")]
# The keys a verifier may trust besides HMAC (verify, tail --verify).
PubkeyOpt = Annotated[
    list[str] | None, typer.Option("--pubkey", help="Ed25519 verifier key (name+hash+key) or a file of them.")
]
FsSeedOpt = Annotated[
    list[Path] | None, typer.Option("--fs-seed", help="Forward-secure sealing seed file (kept off the host).")
]
StoreOpt = Annotated[
    str | None, typer.Option("--store", help="Cold store URL, s3://bucket/prefix or file:///dir. Env: LEDGER_STORE.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")]


KeyFiles = Annotated[
    list[Path] | None,
    typer.Option(
        "--key-file", help="HMAC key file (64 hex chars); repeat for rotated keys. Env: LEDGER_HMAC_KEY_FILE."
    ),
]


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


def _read_file(path: Path) -> bytes:
    try:
        return read_small(path, 16 << 20)  # a CA or a note: a FIFO or /dev/zero never blocks
    except OSError as exc:
        raise LedgerError(f"cannot read {path}: {exc.strerror}") from None


def _config(config: Path | None, root: Path | None, namespace: str | None, store: str | None = None):
    from ..config import load_config

    return load_config(config, root=str(root) if root else None, namespace=namespace, store=store)


def _given_root(cfg, root: Path | None) -> Path | None:
    """The root a command that reads paths falls back on when given none: --root,
    LEDGER_ROOT or a configuration file's root, never the built-in default (an empty
    input set is an error, not a check of whatever /var/lib/ledger holds)."""
    from ..config import Config

    given = root is not None or os.environ.get("LEDGER_ROOT") or cfg.root != Config().root
    return Path(cfg.root) if given else None


def _config_keys(cfg, key_files: list[Path] | None, signing: bool = False) -> tuple[bytes, ...]:
    keys = load_keys(key_files, signing)
    if not keys and cfg.hmac_key_file:
        keys = (_load_secret(keymod.load_key_file, cfg.hmac_key_file, signing),)
    return keys


def _need_key(cfg, key_files: list[Path] | None) -> tuple[bytes, ...]:
    """The HMAC keys of a command that records. The configured signer key and sealing
    state are loaded here too, so a bad or exposed one is refused before anything is touched."""
    keys = _config_keys(cfg, key_files, signing=True)
    if not keys:
        raise LedgerError("this command records events: give --key-file (or LEDGER_HMAC_KEY_FILE / hmac_key_file)")
    _signing(cfg)
    return keys


def _signing(cfg) -> tuple[tuple, Path | None]:
    """The Ed25519 signers and the forward-secure state file the configuration names
    (``signer_key_file`` / LEDGER_SIGNER_KEY_FILE, ``fs_state_file`` / LEDGER_FS_STATE_FILE);
    either file readable by group or others is refused, as an HMAC key file is."""
    from .. import fsseal, notes

    signers = ()
    if cfg.signer_key_file:
        signers = (_load_secret(notes.load_signer_key_file, cfg.signer_key_file, True, "signer key file"),)
    fs_state = Path(cfg.fs_state_file) if cfg.fs_state_file else None
    if fs_state is not None:
        _load_secret(fsseal.load_fs_state, fs_state, True, "sealing state file")  # the writer reads it again
    return signers, fs_state


def _open_store(cfg):
    from ..cold.stores import open_store

    if not cfg.cold.store:
        raise LedgerError("no cold store: give --store URL (or LEDGER_STORE, or [cold] store in the config)")
    return open_store(cfg.cold.store, cfg.cold.s3)  # a StoreOptions, checked when the config loaded


def _writer(cfg, keys: tuple[bytes, ...]):
    """The namespace's writer for a command that records, with the configuration's
    ``[writer]`` options and its signers: fails, naming the holder, if a host has it."""
    from ..writer import Ledger

    signers, fs_state = _signing(cfg)
    return Ledger.open(
        cfg.root,
        namespace=cfg.ns,
        hmac_key=keys[0],
        extra_keys=keys[1:],
        signers=signers,
        fs_state_file=fs_state,
        config=cfg.writer,
    )


def _projector(cfg, store=None):
    """The namespace's views; a rebuild of them reads archived sessions from ``store``,
    or from the configured store (a view rebuilt from the hot tier alone would drop
    archived batches, so Projector refuses that)."""
    from ..projections import Projector

    archived = None
    if store is not None or cfg.cold.store:
        from ..cold.remote import archived_lines

        def archived():
            # Opened only when a rebuild happens: the views alone need no store.
            return archived_lines(store or _open_store(cfg), cfg.ns)

    return _warn_repaired(Projector(cfg.root, cfg.ns, archived_sessions=archived))


def _warn_repaired(views):
    """One warning line when the views were unreadable and were moved aside to be rebuilt."""
    if views.repaired:
        _write_quietly(sys.stderr, f"ledger: warning: {views.repaired}\n")
    return views


def _capture_options(cfg, interface: str | None = None, duration: int | None = None):
    """The configuration's ``[capture]`` (a CaptureOptions), with the command's options
    over it, checked by the same Struct (an interface name is validated here too)."""
    import msgspec

    from ..capture import CaptureOptions

    given = {k: v for k, v in (("interface", interface), ("duration_s", duration)) if v}
    if not given:
        return cfg.capture
    return CaptureOptions.from_dict(msgspec.structs.asdict(cfg.capture) | given)


def _hot_projector(cfg):
    from ..projections import Projector

    return _warn_repaired(Projector(cfg.root, cfg.ns))
