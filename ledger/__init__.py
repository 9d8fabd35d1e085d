"""ledger: evidence that outlives the box that produced it.

from ledger import Ledger
with Ledger.open("/var/lib/ledger", namespace="edge-1", hmac_key=key) as led:
    led.record("conn.anomaly", {"cn": "alice", "ip": "10.1.2.3"})
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__all__ = ["Ledger", "LedgerHandler", "WriterConfig"]
__version__ = "0.1.0"

# Imported on first use (PEP 562): `ledger verify` needs neither the writer nor the
# metrics it pulls in, and a command-line run pays for every import it makes.
_LAZY = {"Ledger": ".writer", "WriterConfig": ".writer", "LedgerHandler": ".handler"}

if TYPE_CHECKING:
    from .handler import LedgerHandler
    from .writer import Ledger, WriterConfig


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
