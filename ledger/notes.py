"""C2SP signed-note@v1.0.0 with Ed25519 (signature type 0x01): sign, open, keys.

A note is a text ending in LF, a blank line, then one line per signature::

    — <key name> base64(key ID (4 bytes) || Ed25519 signature over the text)

Key ID = SHA-256(name || 0x0A || 0x01 || public key)[:4]. A verifier key is
``<name>+<8 hex key ID>+base64(0x01 || public key)`` and is split on its first two
``+`` only (base64 may contain ``+``). Signer keys use the golang.org/x/mod/sumdb/note
private-key string ``PRIVATE+KEY+<name>+<8 hex>+base64(0x01 || seed)``.

``open_note`` follows golang.org/x/mod/sumdb/note ``Open``: the whole note valid UTF-8
with no control character but LF; text and signatures split at the last blank line;
every signature line well formed; at most ``MAX_SIGNATURES`` signature lines;
signatures by unknown keys (name and ID not both known) ignored; repeated signatures
by one known key after the first ignored; any signature by a known key that fails
rejects the note; no verified signature rejects the note.

Pure apart from the key-file helpers at the end.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from .errors import EvidenceError, KeyFileError
from .keys import create_secret_file
from .regular import open_regular

ALG_ED25519 = 0x01
SIG_PREFIX = "\u2014 ".encode()  # EM DASH (e2 80 94), space
SEPARATOR = b"\n\n"
# golang.org/x/mod/sumdb/note rejects a note with more; C2SP: accept at least 16.
MAX_SIGNATURES = 100
PRIVATE_PREFIX = "PRIVATE+KEY+"
# The sigs entry a checkpoint line carries for a note signature (see checkpoint_sig).
CHECKPOINT_SIG_ALG = "ed25519"

# Go's unicode.IsSpace: the Unicode White_Space property (ASCII ones included).
_UNICODE_SPACES = frozenset(
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)
_HEX8 = re.compile(r"^[0-9a-fA-F]{8}$")
_B64 = re.compile(r"^[A-Za-z0-9+/]*={0,2}$")
_CONTROL = re.compile("[\x00-\x09\x0b-\x1f]")
_VKEY_SHAPE = re.compile(r"^[^+\s]+\+[0-9a-fA-F]{8}\+[A-Za-z0-9+/]+={0,2}$")


class NoteError(EvidenceError):
    """A note does not open: ``reason`` is malformed, bad_signature, unverified or ambiguous_key."""

    def __init__(self, message: str, *, reason: str, path: str = "", line: int | None = None) -> None:
        super().__init__(message, path=path, line=line)
        self.reason = reason


def is_valid_name(name: str) -> bool:
    """Key names: non-empty, no Unicode space, no '+' (signed-note 'Format')."""
    return bool(name) and "+" not in name and not any(c in _UNICODE_SPACES for c in name)


def key_hash(name: str, public_key: bytes) -> bytes:
    """The 4-byte key ID: SHA-256(name || 0x0A || 0x01 || 32-byte public key)[:4]."""
    return hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([ALG_ED25519]) + public_key).digest()[:4]


def _b64decode(text: str) -> bytes | None:
    """Strict RFC 4648 base64 (padding required, no other characters), or None."""
    if len(text) % 4 or not _B64.match(text):
        return None
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


class Signer:
    """An Ed25519 note signer: a valid key name and a 32-byte seed (or private key)."""

    __slots__ = ("name", "_private", "public_key", "key_hash")

    def __init__(self, name: str, seed: bytes | Ed25519PrivateKey) -> None:
        if not is_valid_name(name):
            raise ValueError("invalid key name: it must be non-empty, without spaces or '+'")
        if isinstance(seed, Ed25519PrivateKey):
            self._private = seed
        else:
            if len(seed) != 32:
                raise ValueError("an Ed25519 seed is 32 bytes")
            self._private = Ed25519PrivateKey.from_private_bytes(bytes(seed))
        self.name = name
        self.public_key = _raw_public(self._private.public_key())
        self.key_hash = key_hash(name, self.public_key)

    def __repr__(self) -> str:  # never the seed
        return f"Signer({self.key_name()!r})"

    def key_name(self) -> str:
        """``name+<8 hex key ID>``: how keys are named in messages."""
        return f"{self.name}+{self.key_hash.hex()}"

    def verifier_key(self) -> str:
        """The public verifier key ``name+<8 hex>+base64(0x01 || public key)``."""
        return f"{self.key_name()}+{base64.b64encode(bytes([ALG_ED25519]) + self.public_key).decode('ascii')}"

    def verifier(self) -> Verifier:
        return Verifier(self.name, self.public_key)

    def sign(self, text: bytes) -> bytes:
        """The raw 64-byte Ed25519 signature of ``text``."""
        return self._private.sign(text)

    def seed(self) -> bytes:
        """The 32-byte private seed (for writing key files only)."""
        return self._private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


class Verifier:
    """One trusted Ed25519 note key: ``name``, 4-byte ``key_hash``, ``verify``."""

    __slots__ = ("name", "public_key", "key_hash", "_key")

    def __init__(self, name: str, public_key: bytes) -> None:
        if not is_valid_name(name):
            raise ValueError("invalid key name: it must be non-empty, without spaces or '+'")
        if len(public_key) != 32:
            raise ValueError("an Ed25519 public key is 32 bytes")
        self.name = name
        self.public_key = bytes(public_key)
        self.key_hash = key_hash(name, self.public_key)
        self._key = Ed25519PublicKey.from_public_bytes(self.public_key)

    def __reduce__(self):
        # Picklable for the verifier's worker processes (the key object is not).
        return (Verifier, (self.name, self.public_key))

    @classmethod
    def from_vkey(cls, vkey: str) -> Verifier:
        """Parse ``name+<8 hex>+base64(0x01 || pubkey)``; raises KeyFileError.

        Split on the first two '+' only; the name must be valid, the key ID must be
        the one computed from name and key, and the algorithm byte 0x01.
        """
        name, _, rest = vkey.partition("+")
        hash16, _, key64 = rest.partition("+")
        shown = _named(vkey)  # never the whole value: it may be a secret pasted by mistake
        if not is_valid_name(name) or not _HEX8.match(hash16):
            raise KeyFileError(f"malformed verifier key {shown}: expected name+<8 hex>+<base64>")
        key = _b64decode(key64)
        if not key:
            raise KeyFileError(f"malformed verifier key {shown}: key data is not base64")
        if key[0] != ALG_ED25519:
            raise KeyFileError(f"verifier key {name}+{hash16}: unknown algorithm {key[0]:#04x} (only 0x01 Ed25519)")
        if len(key) != 33:
            raise KeyFileError(f"verifier key {name}+{hash16}: an Ed25519 key is 32 bytes, found {len(key) - 1}")
        try:
            verifier = cls(name, key[1:])
        except ValueError as exc:  # not a point on the curve
            raise KeyFileError(f"verifier key {name}+{hash16}: {exc}") from None
        if verifier.key_hash != bytes.fromhex(hash16):
            raise KeyFileError(
                f"verifier key {name}+{hash16}: key ID does not match name and key (computed {verifier.key_hash.hex()})"
            )
        return verifier

    def __repr__(self) -> str:
        return f"Verifier({self.key_name()!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Verifier) and (self.name, self.public_key) == (other.name, other.public_key)

    def __hash__(self) -> int:
        return hash((self.name, self.public_key))

    def key_name(self) -> str:
        return f"{self.name}+{self.key_hash.hex()}"

    def vkey(self) -> str:
        return f"{self.key_name()}+{base64.b64encode(bytes([ALG_ED25519]) + self.public_key).decode('ascii')}"

    def verify(self, text: bytes, sig: bytes) -> bool:
        """True if ``sig`` is this key's Ed25519 signature of ``text``."""
        if len(sig) != 64:
            return False
        try:
            self._key.verify(bytes(sig), bytes(text))
        except InvalidSignature:
            return False
        return True


# ---- notes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class OpenedNote:
    """A note that opened: its text and the names of the keys that signed it."""

    text: bytes
    verified: list[str]  # names of known keys whose signature verified, in note order
    unknown: list[str]  # names on signatures by keys not known (ignored)


def _check_text(text: bytes) -> None:
    """Note text: valid UTF-8, no control character but LF, ends in LF."""
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("note text is not valid UTF-8") from None
    if not decoded.endswith("\n"):
        raise ValueError("note text must end in a newline")
    if _CONTROL.search(decoded):
        raise ValueError("note text contains a control character other than newline")


def signature_line(signer: Signer, text: bytes) -> bytes:
    """One signature line for ``text``: '— name base64(key ID || sig)' LF."""
    sig = base64.b64encode(signer.key_hash + signer.sign(text))
    return SIG_PREFIX + signer.name.encode("utf-8") + b" " + sig + b"\n"


def sign_note(text: bytes, signers: Sequence[Signer]) -> bytes:
    """``text`` LF, then one signature line per signer (in order).

    Precondition: text valid UTF-8 ending in LF, without control characters other than
    LF; 1 to MAX_SIGNATURES signers. Raises ValueError otherwise.
    """
    _check_text(text)
    if not signers:
        raise ValueError("a note needs at least one signer")
    if len(signers) > MAX_SIGNATURES:
        raise ValueError(f"at most {MAX_SIGNATURES} signatures")
    return text + b"\n" + b"".join(signature_line(s, text) for s in signers)


def _malformed(detail: str) -> NoteError:
    return NoteError(f"malformed note: {detail}", reason="malformed")


def _split_note(note: bytes) -> tuple[bytes, list[tuple[str, bytes, bytes]]]:
    """(text, [(name, key ID, signature), ...]); raises NoteError(malformed)."""
    try:
        decoded = note.decode("utf-8")
    except UnicodeDecodeError:
        raise _malformed("not valid UTF-8") from None
    if _CONTROL.search(decoded):
        raise _malformed("control character other than newline")
    split = note.rfind(SEPARATOR)
    if split < 0:
        raise _malformed("no blank line before the signatures")
    text, block = note[: split + 1], note[split + 2 :]
    if not block or not block.endswith(b"\n"):
        raise _malformed("no signature, or the last signature line does not end in a newline")
    sigs = []
    for raw in block[:-1].split(b"\n"):
        if not raw.startswith(SIG_PREFIX):
            raise _malformed("a line after the blank line is not a signature line")
        name, _, b64 = raw[len(SIG_PREFIX) :].decode("utf-8").partition(" ")
        blob = _b64decode(b64)
        if not is_valid_name(name) or not b64 or blob is None or len(blob) < 5:
            raise _malformed("bad signature line")
        sigs.append((name, blob[:4], blob[4:]))
        if len(sigs) > MAX_SIGNATURES:
            raise _malformed(f"more than {MAX_SIGNATURES} signatures")
    return text, sigs


def open_note(note: bytes, verifiers: Iterable[Verifier]) -> OpenedNote:
    """Parse ``note`` and check its signatures against the trusted ``verifiers``.

    Raises NoteError: ``malformed``; ``ambiguous_key`` (two different trusted keys with
    one name and key ID, and a signature naming them); ``bad_signature`` (a trusted
    key's signature fails); ``unverified`` (no trusted key signed).
    """
    known: dict[tuple[str, bytes], list[Verifier]] = {}
    for v in verifiers:
        entry = known.setdefault((v.name, v.key_hash), [])
        if v not in entry:
            entry.append(v)
    text, sigs = _split_note(bytes(note))
    verified: list[str] = []
    unknown: list[str] = []
    seen: set[tuple[str, bytes]] = set()
    seen_unknown: set[tuple[str, bytes, bytes]] = set()
    for name, kh, sig in sigs:
        candidates = known.get((name, kh))
        if not candidates:
            if (name, kh, sig) not in seen_unknown:
                seen_unknown.add((name, kh, sig))
                unknown.append(name)
            continue
        if len(candidates) > 1:
            raise NoteError(f"ambiguous trusted key {name}+{kh.hex()}", reason="ambiguous_key")
        if (name, kh) in seen:
            continue  # Go: repeated signatures by one key after the first are dropped
        seen.add((name, kh))
        if not candidates[0].verify(text, sig):
            raise NoteError(f"invalid signature by trusted key {name}+{kh.hex()}", reason="bad_signature")
        verified.append(name)
    if not verified:
        raise NoteError("note has no signature by a trusted key", reason="unverified")
    return OpenedNote(text=text, verified=verified, unknown=unknown)


# ---- checkpoint lines: a note signature kept in a line's sigs -------------------------


def checkpoint_sig(signer: Signer, text: bytes) -> dict:
    """A ``sigs`` entry holding a note signature of ``text``:
    ``{"alg": "ed25519", "key": "<name>+<8 hex>", "sig": base64(key ID || signature)}``.
    ``sig`` is exactly the signature line's base64, so the note can be rebuilt.
    """
    return {
        "alg": CHECKPOINT_SIG_ALG,
        "key": signer.key_name(),
        "sig": base64.b64encode(signer.key_hash + signer.sign(text)).decode("ascii"),
    }


def note_from_sigs(text: bytes, sigs: Iterable[object]) -> bytes:
    """The signed note of ``text`` from the ``ed25519`` entries of a checkpoint's sigs
    (dicts or format.Sig); other algorithms are skipped. Signatures are not checked
    here (open_note does that). Raises ValueError if there is none or one is malformed.
    """
    _check_text(text)
    lines = []
    for s in sigs:
        alg, key, sig = (s.get(k) for k in ("alg", "key", "sig")) if isinstance(s, dict) else (s.alg, s.key, s.sig)
        if alg != CHECKPOINT_SIG_ALG:
            continue
        name, _, hash16 = str(key).rpartition("+")
        blob = _b64decode(str(sig))
        if not is_valid_name(name) or not _HEX8.match(hash16) or blob is None or blob[:4].hex() != hash16.lower():
            raise ValueError(f"malformed {CHECKPOINT_SIG_ALG} signature entry for key {key!r}")
        lines.append(SIG_PREFIX + name.encode("utf-8") + b" " + str(sig).encode("ascii") + b"\n")
    if not lines:
        raise ValueError(f"no {CHECKPOINT_SIG_ALG} signature to build a note from")
    return text + b"\n" + b"".join(lines)


# ---- signer key strings and files -----------------------------------------------------


def format_signer_key(signer: Signer) -> str:
    """``PRIVATE+KEY+<name>+<8 hex>+base64(0x01 || seed)`` (golang.org/x/mod/sumdb/note)."""
    seed64 = base64.b64encode(bytes([ALG_ED25519]) + signer.seed()).decode("ascii")
    return f"{PRIVATE_PREFIX}{signer.key_name()}+{seed64}"


def parse_signer_key(text: str) -> Signer:
    """Parse a private signer key string; raises KeyFileError (never echoing the key)."""
    if not text.startswith(PRIVATE_PREFIX):
        raise KeyFileError("not a signer key: expected PRIVATE+KEY+<name>+<8 hex>+<base64>")
    name, _, rest = text[len(PRIVATE_PREFIX) :].partition("+")
    hash16, _, key64 = rest.partition("+")
    if not is_valid_name(name) or not _HEX8.match(hash16):
        raise KeyFileError("malformed signer key: expected PRIVATE+KEY+<name>+<8 hex>+<base64>")
    key = _b64decode(key64)
    if not key:
        raise KeyFileError(f"malformed signer key {name}+{hash16}: key data is not base64")
    if key[0] != ALG_ED25519:
        raise KeyFileError(f"signer key {name}+{hash16}: unknown algorithm {key[0]:#04x} (only 0x01 Ed25519)")
    if len(key) != 33:
        raise KeyFileError(f"signer key {name}+{hash16}: an Ed25519 seed is 32 bytes")
    signer = Signer(name, key[1:])
    if signer.key_hash != bytes.fromhex(hash16):
        raise KeyFileError(f"signer key {name}+{hash16}: key ID does not match name and key")
    return signer


def generate_signer(name: str) -> Signer:
    """A new random Ed25519 signer named ``name``."""
    return Signer(name, os.urandom(32))


def write_signer_key_file(path: str | os.PathLike[str], signer: Signer) -> str:
    """Write the signer key to a new file (mode 0600, never overwriting); return its verifier key."""
    create_secret_file(path, format_signer_key(signer).encode("ascii") + b"\n")
    return signer.verifier_key()


def load_signer_key_file(path: str | os.PathLike[str]) -> Signer:
    """Read a signer key file (one key string, optional final newline); raises KeyFileError."""
    try:
        with open_regular(path) as f:
            data = f.read(4096)
    except OSError as exc:
        raise KeyFileError(f"cannot read signer key file {path}: {exc.strerror}") from None
    try:
        text = data.decode("utf-8").strip()
        return parse_signer_key(text)
    except UnicodeDecodeError:
        raise KeyFileError(f"bad signer key file {path}: not UTF-8") from None
    except KeyFileError as exc:
        raise KeyFileError(f"bad signer key file {path}: {exc}") from None


def load_verifier_keys(values: Iterable[str]) -> list[Verifier]:
    """Trusted verifier keys from values that are each a verifier key or a file path.

    A value shaped like ``name+<8 hex>+<base64>`` is a key; anything else is a file of
    keys, one a line (blank lines and lines starting with '#' skipped; a file with no
    key is an error). Duplicates are dropped. Raises KeyFileError.
    """
    out: list[Verifier] = []
    for value in values:
        if _VKEY_SHAPE.match(value):
            found = [Verifier.from_vkey(value)]
        elif os.path.exists(value):
            found = _verifier_file(value)
        elif value.startswith(PRIVATE_PREFIX):
            raise KeyFileError(f"{_named(value[len(PRIVATE_PREFIX) :])} is a private signer key, not a verifier key")
        else:
            raise KeyFileError(
                f"verifier key {_named(value)}: not name+<8 hex>+<base64>, and cannot be read as a key file (no such file)"
            )
        out.extend(v for v in found if v not in out)
    return out


def _named(value: str) -> str:
    """A key value by its name (the part before the first '+') and length, never whole."""
    name = value.partition("+")[0]
    name = name if len(name) <= 40 and name.isprintable() else name[:40].encode("unicode_escape").decode() + "..."
    return f"{name!r} ({len(value)} characters)"


def _verifier_file(path: str) -> list[Verifier]:
    try:
        with open_regular(path) as f:
            data = f.read(1 << 20)
    except OSError as exc:
        raise KeyFileError(f"{path}: not a verifier key, and cannot be read as a key file: {exc.strerror}") from None
    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise KeyFileError(f"bad verifier key file {path}: not UTF-8") from None
    found = []
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(PRIVATE_PREFIX):
            raise KeyFileError(f"{path} line {number}: a private signer key, not a verifier key")
        try:
            found.append(Verifier.from_vkey(line))
        except KeyFileError as exc:
            raise KeyFileError(f"{path} line {number}: {exc}") from None
    if not found:
        raise KeyFileError(f"verifier key file {path} holds no key")
    return found
