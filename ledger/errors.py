"""One error tree for the whole library.

The CLI maps these to exit codes in one place: ``EvidenceError`` means the
evidence itself is bad (exit 1); every other ``LedgerError`` means ledger could
not check or act (usage, configuration, I/O: exit 2). Messages are one line and
never contain key material.
"""

from __future__ import annotations


class LedgerError(Exception):
    """Base of every error ledger raises on purpose."""


class UsageError(LedgerError):
    """Bad arguments or configuration: nothing was checked."""


class KeyFileError(UsageError):
    """A key file is missing, unreadable or not 64 hex characters."""


class InputError(LedgerError):
    """An input could not be read (missing path, permission, no sessions)."""


class LockedError(LedgerError):
    """Another writer holds the namespace."""


class EvidenceError(LedgerError):
    """The evidence does not verify."""

    def __init__(self, message: str, *, path: str = "", line: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.line = line
