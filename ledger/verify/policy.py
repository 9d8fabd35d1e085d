"""What must hold for a session to verify: the keys it trusts, and whether a file
may be unsealed (SPEC.md sections 5 and 9)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Policy:
    """What must hold. With no trusted key of any kind, signatures are not checked (and
    the report says so); with any, every checkpoint needs a signature by one of them.

    ``keys``: HMAC keys; ``verifiers``: Ed25519 note verifiers (ledger.notes.Verifier);
    ``fs_seeds``: forward-secure sealing seeds (ledger.fsseal.FsSeed).
    """

    keys: tuple[bytes, ...] = ()
    allow_unsealed: bool = False
    # Not what must hold but how to check it: the job count is the ``jobs`` argument of
    # verify_file and verify_path. Kept, and used when a call passes none, until the
    # callers outside ledger.verify pass it there (issue 13).
    jobs: int = 0
    verifiers: tuple = ()
    fs_seeds: tuple = ()

    def __post_init__(self) -> None:
        if any(len(k) == 0 for k in self.keys):
            raise ValueError("an empty key cannot be trusted")

    @property
    def checks_signatures(self) -> bool:
        return bool(self.keys or self.verifiers or self.fs_seeds)
