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


def failure_text(line: int | None, reason: str, detail: str) -> str:
    """How a verification failure prints: ``line N: reason: detail``, or
    ``reason: detail`` when it is not tied to a line (a missing file, no complete line).

    The one rendering: the writer records it as a quarantined session's
    ``quarantine_reason``, so its shape is part of the file format.
    """
    return f"line {line}: {reason}: {detail}" if line else f"{reason}: {detail}"


class VerificationFailed(EvidenceError):
    """A file that does not verify, carrying the first failure's fields; prints as
    ``<path>: line N: reason: detail``."""

    def __init__(self, path: str, line: int | None, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{path}: {failure_text(line, reason, detail)}", path=path, line=line)


class ManifestError(EvidenceError):
    """A manifest that is malformed, signed by an unknown key, or whose MAC fails."""


class ArchiveError(LedgerError):
    """One session or capture could not be archived (the pass goes on with the others)."""


class SessionInvalid(EvidenceError):
    """A sealed session failed verification with the key: it is never archived and stays in place."""


class FsSealError(LedgerError):
    """The ratchet cannot do what was asked (a time before t0 or before its epoch)."""
