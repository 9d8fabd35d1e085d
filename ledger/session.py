"""Building one session in memory: seq, chain, Merkle tree, checkpoints, seal.

``SessionBuilder`` is the format's state machine with no I/O and no clock of its
own: it turns (kind, encoded data, timestamp) into the exact bytes of the next
line. The writer thread owns one; the fixture generator and the tests use it to
make sessions byte for byte as the writer would.
"""

from __future__ import annotations

import binascii
import hashlib
from collections.abc import Sequence

import msgspec

from . import format as fmt
from .merkle import Accumulator, CompactRange

_encode = msgspec.json.Encoder().encode
# Copying a hash state is cheaper than creating one (no OpenSSL init per call).
_leaf_state = hashlib.sha256(b"\x00").copy
_empty_state = hashlib.sha256().copy
_hexlify = binascii.hexlify


class SessionBuilder:
    """The next line of a session, given what came before."""

    def __init__(
        self,
        namespace: str,
        session: str,
        keys: Sequence[bytes],
        prev: fmt.PrevLink | None = None,
        opened_extra: dict | None = None,
        signers: Sequence = (),
    ) -> None:
        self.namespace = fmt.check_namespace(namespace)
        self.session = session
        self.origin = fmt.origin_of(namespace, session)
        self.keys = list(keys)
        self.signers = list(signers)  # (text, now) -> sig dict, besides the HMAC keys
        self.prev = prev
        self.opened_extra = opened_extra or {}
        self.tree = Accumulator()
        self.chain = fmt.ZERO_CHAIN
        self.sealed = False
        self.last_checkpoint = 0
        self._kinds: dict[str, bytes] = {}

    @classmethod
    def resume(
        cls,
        namespace: str,
        session: str,
        keys: Sequence[bytes],
        tree: CompactRange,
        chain: bytes,
        signers: Sequence = (),
    ) -> SessionBuilder:
        """Continue a session from its verified tree (leaves 0..n-1) and chain value C_(n-1)."""
        b = cls(namespace, session, keys, signers=signers)
        b.tree = Accumulator()
        b.tree.extend(tree)
        b.chain = chain
        return b

    @property
    def size(self) -> int:
        return self.tree.size

    def opened_line(self, ts: str) -> bytes:
        """Line 0. Precondition: nothing written yet."""
        if self.size:
            raise ValueError("session.opened must be line 0")
        data = {
            "session": self.session,
            "origin": self.origin,
            "prev": msgspec.structs.asdict(self.prev) if self.prev else None,
            **self.opened_extra,
        }
        return self.line(fmt.KIND_OPENED, _encode(data), ts)

    def line(self, kind: str, data_json: bytes, ts: str | bytes) -> bytes:
        """Append one event whose data is already JSON-encoded; return its line."""
        if self.sealed:
            raise ValueError("session is sealed")
        # format.encode_event, leaf_hash, next_chain and make_line, inlined: this
        # runs once per event on the writer thread (tests/test_format_reference.py
        # checks that both give the same bytes).
        kind_b = self._kinds.get(kind)
        if kind_b is None:
            kind_b = self._kinds[kind] = kind.encode()
        head = b'{"v":1,"seq":%d,"ts":"%b","kind":"%b","data":%b' % (
            self.tree.size,
            ts if ts.__class__ is bytes else ts.encode(),
            kind_b,
            data_json,
        )
        h = _leaf_state()
        h.update(head)
        h.update(b"}")
        leaf = h.digest()
        h = _empty_state()
        h.update(self.chain)
        h.update(leaf)
        self.chain = chain = h.digest()
        self.tree.append(leaf)
        return b'%b,"chain":"%b"}\n' % (head, _hexlify(chain))

    def checkpoint_line(self, ts: str, dropped: dict[str, int] | None = None, now: float | None = None) -> bytes:
        """A signed ``ledger.checkpoint`` over every line so far."""
        data = fmt.build_checkpoint(self.origin, self.size, self.tree.root(), self.chain, self.keys, self.signers, now)
        if dropped is not None:
            data["dropped"] = dropped
        self.last_checkpoint = self.size
        return self.line(fmt.KIND_CHECKPOINT, _encode(data), ts)

    def seal_line(
        self, ts: str, reason: str, dropped: dict[str, int] | int, now: float | None = None, **extra: object
    ) -> bytes:
        """The final, signed ``session.sealed`` line (its signatures over the seal text)."""
        data = fmt.build_checkpoint(
            self.origin, self.size, self.tree.root(), self.chain, self.keys, self.signers, now, seal=(reason, dropped)
        )
        data.update(extra)
        line = self.line(fmt.KIND_SEALED, _encode(data), ts)
        self.sealed = True
        return line

    def summary(self) -> fmt.PrevLink:
        """What the next session's ``prev`` names: this whole tree, seal included."""
        return fmt.PrevLink(session=self.session, size=self.size, root=self.tree.root().hex(), chain=self.chain.hex())
