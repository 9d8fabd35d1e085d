"""Step 2 of verification for one file: walk the scanned chunks in order and check
what needs the whole file (SPEC.md section 5): seq continuity across chunks, every
checkpoint's size, root, chain and signatures (check 6), the seal being last (check 7),
the policy on unsealed files."""

from __future__ import annotations

import base64

import msgspec

from .. import format as fmt
from .. import fsseal, notes
from ..keys import key_id
from ..merkle import CompactRange
from .policy import Policy
from .report import FileReport, FirstError
from .scan import _Chunk, _Special


class _FileCheck:
    """Step 2 for one file: walks chunk results in order and applies the policy."""

    def __init__(self, path: str, policy: Policy) -> None:
        self.policy = policy
        self.trusted = {key_id(k): k for k in policy.keys}
        self.report = FileReport(path=path, signatures="verified" if policy.checks_signatures else "unchecked")
        self.ed25519 = {v.key_name(): v for v in policy.verifiers}
        self.fs = {s.seed_id: fsseal.FsVerifier(s) for s in policy.fs_seeds}
        self.fs_seed_of = {s.seed_id: s for s in policy.fs_seeds}
        self.fs_last_epoch: dict[str, int] = {}
        self.acc = CompactRange(0)
        self.lines = 0
        self.last_chain = fmt.ZERO_CHAIN
        self.sealed_line: int | None = None

    def fail(self, line: int | None, seq: int | None, reason: str, detail: str) -> None:
        if self.report.first_error is None:
            self.report.first_error = FirstError(line, seq, reason, detail)

    def chunk(self, c: _Chunk) -> bool:
        """Apply one chunk; False once an error is recorded (later chunks are moot)."""
        base = self.lines
        if c.lines or c.error:
            if self.sealed_line is not None:
                self.fail(base + 1, base, "after_seal", "a line follows session.sealed")
                return False
            if c.first_seq is not None and c.first_seq != base:
                self.fail(base + 1, base, "seq_mismatch", f"expected seq {base}, found {c.first_seq}")
                return False
        for sp in c.specials:
            if not self.special(sp, base, c):
                # The lines before the bad one held: report their tree and chain.
                self.lines = base + sp.rel_line
                if sp.before is not None:
                    self.acc.extend(sp.before)
                    self.last_chain = sp.prev_chain
                return False
        if c.error is not None:
            rel, seq, reason, detail = c.error
            self.lines = base + c.lines  # lines that verified before the bad one
            if c.lines:
                self.acc.extend(c.range)
                self.last_chain = c.last_chain
            self.fail(base + rel + 1, seq if seq is not None else base + rel, reason, detail)
            return False
        if c.lines:  # a chunk may hold nothing but a torn tail
            self.acc.extend(c.range)
            self.last_chain = c.last_chain
        self.lines += c.lines
        if c.sealed_rel is not None:
            self.sealed_line = base + c.sealed_rel + 1
        if c.torn_bytes:
            self.report.torn_tail_bytes = c.torn_bytes
        return True

    def special(self, sp: _Special, base: int, c: _Chunk) -> bool:
        line = base + sp.rel_line + 1
        if sp.kind == fmt.KIND_OPENED:
            try:
                opened = fmt.decode_opened(sp.data)
            except msgspec.ValidationError as exc:
                self.fail(line, sp.seq, "bad_opened", f"session.opened data: {exc}")
                return False
            if not opened.origin.startswith("ledger/") or not opened.origin.endswith("/" + opened.session):
                self.fail(
                    line, sp.seq, "bad_opened", f"origin {opened.origin!r} does not name session {opened.session}"
                )
                return False
            self.report.session, self.report.origin, self.report.prev = opened.session, opened.origin, opened.prev
            if opened.quarantined:
                self.report.notes.append(
                    f"previous session {opened.quarantined} was quarantined: {opened.quarantine_reason}"
                )
            return True
        if self.report.origin is None:
            self.fail(line, sp.seq, "bad_opened", "checkpoint before session.opened")
            return False
        try:
            cp = fmt.decode_checkpoint(sp.kind, sp.data)
        except msgspec.ValidationError as exc:
            self.fail(line, sp.seq, "bad_checkpoint", f"{sp.kind} data: {exc}")
            return False
        if isinstance(cp, fmt.Sealed) and not fmt.valid_seal_reason(cp.reason):
            # The reason is a word of the signed seal text (SPEC 4.3).
            self.fail(line, sp.seq, "bad_checkpoint", f"seal reason {cp.reason[:40]!r} is not [a-z][a-z_]{{0,31}}")
            return False
        n = sp.seq
        if cp.size != n:
            self.fail(line, n, "size_mismatch", f"checkpoint size {cp.size} at seq {n}")
            return False
        tree = self.acc.copy()
        tree.extend(sp.before)
        root = tree.root()
        if cp.root != root.hex():
            self.fail(line, n, "root_mismatch", f"root {cp.root[:16]}.. but the events hash to {root.hex()[:16]}..")
            return False
        if cp.chain != sp.prev_chain.hex():
            self.fail(line, n, "chain_mismatch", "checkpoint chain is not the previous line's chain")
            return False
        if not self.signatures(cp, root, line, n, sp.ts):
            return False
        self.report.checkpoints += 1
        self.report.signed_size = n
        if isinstance(cp, fmt.Sealed):
            self.report.seal_reason = cp.reason
        return True

    def signatures(self, cp: fmt.Checkpoint, root: bytes, line: int, n: int, ts: str = "") -> bool:
        """At least one signature by a trusted key, and every trusted signature verifies."""
        if not self.policy.checks_signatures:
            return True
        text = fmt.signed_text(self.report.origin or "", cp, root)
        signed_by = []
        for sig in cp.sigs:
            verdict = self._check_sig(sig, text, ts)
            if verdict is None:
                continue  # not a key this verifier trusts
            if verdict is not True:
                self.fail(line, n, "bad_signature", f"{sig.alg} signature by {sig.key}: {verdict}")
                return False
            signed_by.append(sig.key)
        if not signed_by:
            found = ", ".join(f"{s.alg}:{s.key}" for s in cp.sigs) or "none"
            self.fail(line, n, "bad_signature", f"no signature by a trusted key (signed by: {found})")
            return False
        missing = self._missing_fs(signed_by, ts)
        if missing:
            # Forward security only holds if the FS signature cannot simply be stripped
            # and the checkpoint re-signed with the host's other keys.
            self.fail(line, n, "bad_signature", f"no forward-secure signature by seed {missing}")
            return False
        for k in signed_by:
            if k not in self.report.signers:
                self.report.signers.append(k)
        self.report.signed_by.append({"line": line, "size": n, "keys": signed_by})
        return True

    def _missing_fs(self, signed_by: list[str], ts: str) -> str | None:
        """A seed given to the verifier whose epochs cover this line but did not sign it."""
        for seed_id, seed in self.fs_seed_of.items():
            if ts and _ts_epoch_seconds(ts) < seed.t0:
                continue  # written before sealing started
            if not any(k.startswith(f"fs:{seed_id}:") for k in signed_by):
                return seed_id
        return None

    def _check_sig(self, sig: fmt.Sig, text: bytes, ts: str) -> bool | str | None:
        """None: untrusted key (ignored); True: verifies; a string: why it does not."""
        if sig.alg == "hmac-sha256":
            key = self.trusted.get(sig.key)
            if key is None:
                return None
            return True if fmt.hmac_matches(key, text, sig.sig) else "does not verify"
        if sig.alg == notes.CHECKPOINT_SIG_ALG:
            verifier = self.ed25519.get(sig.key)
            if verifier is None:
                return None
            try:
                blob = base64.b64decode(sig.sig, validate=True)
            except ValueError:
                return "not base64"
            ok = blob[:4] == verifier.key_hash and verifier.verify(text, blob[4:])
            return True if ok else "does not verify"
        if sig.alg == fsseal.ALG:
            label = fsseal.parse_key_label(sig.key)
            if label is None or label[0] not in self.fs:
                return None
            seed_id, epoch = label
            seed = self.fs_seed_of[seed_id]
            try:
                expected = seed.epoch_at(_ts_epoch_seconds(ts)) if ts else None
            except (ValueError, fsseal.FsSealError):
                return "line time is before the seed's start"
            if expected is not None and epoch != expected:
                return f"epoch {epoch} does not match the line's time (epoch {expected})"
            if epoch < self.fs_last_epoch.get(seed_id, 0):
                return f"epoch {epoch} goes backwards"
            if not self.fs[seed_id].verify(sig, text, expected_epoch=expected):
                return "does not verify"
            self.fs_last_epoch[seed_id] = epoch
            return True
        return None

    def finish(self, size: int) -> FileReport:
        r = self.report
        r.events = self.lines
        r.bytes = size
        r.root = self.acc.root().hex()
        r.tree = self.acc
        r.chain = self.last_chain.hex() if self.lines else ""
        r.sealed = self.sealed_line is not None and r.first_error is None
        if r.first_error is not None:
            r.sealed = False
            return r
        if size == 0:
            self.fail(None, None, "empty", "empty file: no session.opened line")
        elif self.lines == 0:
            self.fail(None, None, "empty", "no complete line (no LF in the file)")
        elif self.sealed_line is not None and r.torn_tail_bytes:
            self.fail(self.lines + 1, self.lines, "after_seal", f"{r.torn_tail_bytes} bytes follow session.sealed")
        elif self.sealed_line is None and not self.policy.allow_unsealed:
            self.fail(None, None, "unsealed", "no session.sealed line: the file may have been cut short")
        if r.first_error is not None:
            r.sealed = False
        return r


def _ts_epoch_seconds(ts: str) -> float:
    from datetime import UTC, datetime

    return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
