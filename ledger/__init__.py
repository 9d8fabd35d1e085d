"""ledger: evidence that outlives the box that produced it.

from ledger import Ledger
with Ledger.open("/var/lib/ledger", namespace="edge-1", hmac_key=key) as led:
    led.record("conn.anomaly", {"cn": "alice", "ip": "10.1.2.3"})
"""

from .handler import LedgerHandler
from .writer import Ledger, WriterConfig

__all__ = ["Ledger", "LedgerHandler", "WriterConfig"]
__version__ = "0.1.0"
