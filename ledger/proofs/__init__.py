"""Proofs about a session file: RFC 6962 inclusion and consistency, and C2SP tlog-proof@v1.

* ``tree``: ``SessionTree`` scans a session file once and answers inclusion and
  consistency proofs against the checkpoints its own lines reproduce.
* ``tlog``: the tlog-proof@v1 text (one entry, its inclusion proof, the signed
  checkpoint note), its encoder, its parser and its verifier, and the parser of a
  C2SP checkpoint body.

Everything is importable from ``ledger.proofs`` as before the split.
"""

from __future__ import annotations

from .tlog import (
    MAX_PROOF_HASHES,
    TLOG_PROOF_HEADER,
    ProofError,
    TlogProof,
    TlogProofResult,
    encode_tlog_proof,
    parse_checkpoint_text,
    parse_tlog_proof,
    verify_tlog_proof,
)
from .tree import (
    CheckpointRef,
    ConsistencyProof,
    InclusionProof,
    SessionTree,
    consistency,
    find_checkpoint,
    inclusion,
    tree_leaves,
)

__all__ = [
    "MAX_PROOF_HASHES",
    "TLOG_PROOF_HEADER",
    "CheckpointRef",
    "ConsistencyProof",
    "InclusionProof",
    "ProofError",
    "SessionTree",
    "TlogProof",
    "TlogProofResult",
    "consistency",
    "encode_tlog_proof",
    "find_checkpoint",
    "inclusion",
    "parse_checkpoint_text",
    "parse_tlog_proof",
    "tree_leaves",
    "verify_tlog_proof",
]
