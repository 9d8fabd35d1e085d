"""The identity of a ledger root: who writes into a namespace of a shared cold store.

Generated once, the first time a root is asked for it, and kept in the root
(``<root>/.ledger-id``, 0600), so it survives restarts and moves with the root when
the disk is moved to another machine. ``host_id`` in the configuration may set it
instead (a fleet that names its hosts itself).
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

from .errors import UsageError
from .files import create_exclusive
from .layout import ID_FILE as ID_FILE  # the historical import: ledger.identity.ID_FILE
from .layout import id_path

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


def root_identity(root: str | os.PathLike[str], host_id: str | None = None) -> str:
    """``host_id`` when given, else the root's own id (created on first use)."""
    if host_id:
        return _checked(host_id, "host_id")
    root = Path(root)
    path = id_path(root)
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        create_exclusive(path, f"root-{secrets.token_hex(16)}\n".encode())
    except FileExistsError:
        pass  # another process made it first: theirs is the root's id
    except OSError as exc:
        raise UsageError(f"cannot create the root identity {path}: {exc.strerror or exc}") from exc
    return _read(path)


def _read(path: Path) -> str:
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read the root identity {path}: {getattr(exc, 'strerror', None) or exc}") from exc
    return _checked(text, str(path))


def _checked(value: str, where: str) -> str:
    if not ID_PATTERN.match(value):
        raise UsageError(f"{where}: not a valid identity (letters, digits, '_.:-', at most 128)")
    return value
