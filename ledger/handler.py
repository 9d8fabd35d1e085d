"""``LedgerHandler``: send stdlib logging records to a Ledger as audit events.

    logging.getLogger("audit").addHandler(LedgerHandler(led))
    logging.getLogger("audit").info("login", extra={"audit": {"cn": "alice"}})

writes an event of kind ``log.info`` with data ``{"logger", "level", "message", ...}``
plus the ``audit`` mapping, if given. Like ``record()``, ``emit`` never blocks.
"""

from __future__ import annotations

import logging

from .writer import Ledger


class LedgerHandler(logging.Handler):
    def __init__(self, ledger: Ledger, kind_prefix: str = "log", level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.ledger = ledger
        self.kind_prefix = kind_prefix

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = {
                "logger": record.name,
                "level": record.levelname,
                "message": record.getMessage(),
            }
            audit = getattr(record, "audit", None)
            if isinstance(audit, dict):
                data.update({str(k): v for k, v in audit.items() if k not in data})
            self.ledger.record(f"{self.kind_prefix}.{record.levelname.lower()}", data)
        except Exception:  # noqa: BLE001 - logging's contract: report, never raise
            self.handleError(record)
