"""RFC 3161 timestamps over manifest digests, through rfc3161-client.

rfc3161-client builds the request and parses and verifies the response (ASN.1 and
CMS are not code to hand-write); the HTTP POST is one stdlib call.
"""

from __future__ import annotations

import functools
import hashlib
import re
import urllib.error
import urllib.request

import rfc3161_client
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from ..errors import EvidenceError, LedgerError, UsageError


class TsaError(LedgerError):
    """The TSA could not be reached or refused the request (retryable: the archive waits)."""


class TimestampInvalid(EvidenceError):
    """A stored .tsr that does not verify against the manifest or the TSA's CA."""


def request_token(tsa_url: str, data: bytes, timeout_s: float = 15.0) -> bytes:
    """Ask the TSA to timestamp SHA-256(data); return the DER TimeStampResp (the .tsr)."""
    # rfc3161-client hashes with SHA-512 unless told: the manifest digest is SHA-256.
    req = (
        rfc3161_client.TimestampRequestBuilder()
        .data(data)
        .hash_algorithm(rfc3161_client.HashAlgorithm.SHA256)
        .nonce(nonce=True)
        .cert_request(cert_request=True)
        .build()
    )
    http = urllib.request.Request(
        tsa_url, data=req.as_bytes(), headers={"Content-Type": "application/timestamp-query"}, method="POST"
    )
    try:
        with urllib.request.urlopen(http, timeout=timeout_s) as resp:  # noqa: S310 - URL is configuration
            body = resp.read(1 << 20)
    except (urllib.error.URLError, OSError) as exc:
        raise TsaError(f"TSA {tsa_url}: {getattr(exc, 'reason', exc)}") from None
    try:
        tsr = rfc3161_client.decode_timestamp_response(body)
    except Exception as exc:  # noqa: BLE001 - the library raises several types for bad DER
        raise TsaError(f"TSA {tsa_url}: not a timestamp response ({exc})") from None
    if tsr.status not in (0, 1):
        raise TsaError(f"TSA {tsa_url}: status {tsr.status} {tsr.status_string}")
    if tsr.tst_info.message_imprint.message != hashlib.sha256(data).digest():
        raise TsaError(f"TSA {tsa_url}: token covers another digest")
    return body


def load_ca(pem: bytes, name: str = "--tsa-ca") -> list[x509.Certificate]:
    """The TSA CA certificates of a PEM file; anything else is a UsageError naming it."""
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError:
        certs = []
    if not certs:
        raise UsageError(f"{name}: not a PEM certificate file (expected -----BEGIN CERTIFICATE-----)")
    return certs


def _verdict_only(check):
    """Any failure of ``check`` but a usage error is the verdict: a flipped byte in a stored
    token raises ValueError, UnsupportedAlgorithm or KeyError in the parsers, never past here."""

    @functools.wraps(check)
    def checked(*args, **kwargs):
        try:
            return check(*args, **kwargs)
        except (TimestampInvalid, UsageError):
            raise
        except Exception as exc:  # noqa: BLE001 - bad DER surfaces as many types
            raise TimestampInvalid(f"timestamp token is malformed ({type(exc).__name__}: {_one_line(exc)})") from None

    return checked


@_verdict_only
def verify_token(tsr_bytes: bytes, data: bytes, ca_pem: bytes | None) -> str:
    """Check a .tsr against SHA-256(data); return a one-line account of what held.

    Always: the token parses and its message imprint is SHA-256(data). With ``ca_pem``:
    the token verifies and chains to one of those CAs (rfc3161-client). Without: its
    CMS signature verifies against the certificate the token carries, when it carries
    one, and the account says plainly that the certificate itself was not checked.
    Raises TimestampInvalid (one line) when anything checked does not hold.
    """
    try:
        tsr = rfc3161_client.decode_timestamp_response(tsr_bytes)
    except Exception as exc:  # noqa: BLE001
        raise TimestampInvalid(f"timestamp token does not parse ({_one_line(exc)})") from None
    if tsr.status not in (0, 1):  # granted, grantedWithMods: any other is no timestamp, CA or not
        raise TimestampInvalid(f"timestamp token status is {tsr.status}, not granted")
    if tsr.tst_info.message_imprint.message != hashlib.sha256(data).digest():
        raise TimestampInvalid("timestamp token covers another digest")
    stamped = tsr.tst_info.gen_time.isoformat()
    if ca_pem is not None:
        builder = rfc3161_client.VerifierBuilder()
        for cert in load_ca(ca_pem):
            builder = builder.add_root_certificate(cert)
        try:
            builder.build().verify_message(tsr, data)
        except Exception as exc:  # noqa: BLE001 - VerificationError, or the Rust layer's ValueError
            raise TimestampInvalid(f"timestamp token does not verify against the TSA CA: {_one_line(exc)}") from None
        return f"RFC 3161 timestamp {stamped}: imprint, signature and TSA certificate chain verified"
    signer = _check_embedded_signature(tsr)
    return (
        f"RFC 3161 timestamp {stamped}: imprint matches the manifest; signature verified with the certificate "
        f"the token carries ({signer}); TSA certificate not checked: no CA given (--tsa-ca or tsa_ca_file)"
        if signer
        else f"RFC 3161 timestamp {stamped}: imprint matches the manifest; signature and TSA certificate not "
        "checked: the token carries no certificate and no CA was given (--tsa-ca or tsa_ca_file)"
    )


def _one_line(exc: BaseException) -> str:
    """An exception as one short line: an OpenSSL ErrorStack reduced to its reasons."""
    text = str(exc)
    if "ErrorStack" in text:
        found = re.findall(r'(?:reason|data): "([^"]+)"', text)
        text = text.split("ErrorStack", 1)[0].rstrip(" :(") + (": " + "; ".join(dict.fromkeys(found)) if found else "")
    text = " ".join(text.split())
    return text if len(text) <= 300 else text[:300] + "..."


# ---- the token's CMS signature against its own certificate (no CA) -----------------------------
#
# rfc3161-client verifies only against a trusted root. Without one, the signature can still
# be checked against the certificate the token carries (RFC 5652 section 5.4): SignerInfo's
# signed attributes hold messageDigest = H(eContent), where eContent is the TSTInfo the
# imprint was read from, and the signature is over the DER of those attributes as a SET.

_OID_MESSAGE_DIGEST = bytes.fromhex("2a864886f70d010904")  # 1.2.840.113549.1.9.4
_OID_RSASSA_PSS = bytes.fromhex("2a864886f70d01010a")  # 1.2.840.113549.1.1.10
_DIGESTS = {
    bytes.fromhex("608648016503040201"): hashes.SHA256,
    bytes.fromhex("608648016503040202"): hashes.SHA384,
    bytes.fromhex("608648016503040203"): hashes.SHA512,
}


def _tlv(buf: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of content, end of content) of the DER element at ``pos``."""
    if pos + 2 > len(buf):
        raise ValueError("truncated DER")
    tag, first = buf[pos], buf[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        n = first & 0x7F
        if not 0 < n <= 4 or pos + n > len(buf):
            raise ValueError("bad DER length")
        length = int.from_bytes(buf[pos : pos + n], "big")
        pos += n
    if pos + length > len(buf):
        raise ValueError("truncated DER")
    return tag, pos, pos + length


def _children(buf: bytes, start: int, end: int) -> list[tuple[int, int, int, int]]:
    """(tag, content start, content end, element start) of each element in [start, end)."""
    out = []
    while start < end:
        tag, c0, c1 = _tlv(buf, start)
        out.append((tag, c0, c1, start))
        start = c1
    return out


@_verdict_only
def _check_embedded_signature(tsr) -> str | None:
    """Verify the token's signature with the certificate it carries; return that
    certificate's subject, or None when it carries none. Raises TimestampInvalid."""
    try:
        certs = [x509.load_der_x509_certificate(c) for c in tsr.signed_data.certificates]
        signer_infos = list(tsr.signed_data.signer_infos)
    except Exception as exc:  # noqa: BLE001
        raise TimestampInvalid(f"timestamp token certificates do not parse ({_one_line(exc)})") from None
    if len(signer_infos) != 1:
        raise TimestampInvalid(f"timestamp token has {len(signer_infos)} signers, expected one")
    si = signer_infos[0]
    cert = next((c for c in certs if c.issuer == si.issuer and c.serial_number == si.serial_number), None)
    if cert is None:
        if certs:
            raise TimestampInvalid("timestamp token carries no certificate of its signer")
        return None
    try:
        econtent, digest_oid, attrs_der, sig_oid, signature = _signer_parts(tsr.time_stamp_token())
    except (ValueError, IndexError) as exc:
        raise TimestampInvalid(f"timestamp token signature does not parse ({exc})") from None
    if econtent != tsr.tst_info.as_bytes():
        raise TimestampInvalid("timestamp token: the signed content is not the TSTInfo read")
    algo = _DIGESTS.get(digest_oid)
    if algo is None or sig_oid == _OID_RSASSA_PSS:
        raise TimestampInvalid("timestamp token: signature algorithm not supported without a CA (give --tsa-ca)")
    h = hashes.Hash(algo())
    h.update(econtent)
    if _message_digest(attrs_der) != h.finalize():
        raise TimestampInvalid("timestamp token signature does not verify: messageDigest is not the TSTInfo's")
    key = cert.public_key()
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, attrs_der, ec.ECDSA(algo()))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, attrs_der, padding.PKCS1v15(), algo())
        elif isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, attrs_der)
        else:
            raise TimestampInvalid("timestamp token: key type not supported without a CA (give --tsa-ca)")
    except InvalidSignature:
        raise TimestampInvalid("timestamp token signature does not verify with the certificate it carries") from None
    return cert.subject.rfc4514_string()


def _signer_parts(token: bytes) -> tuple[bytes, bytes, bytes, bytes, bytes]:
    """(eContent, digest OID, signed attributes as a DER SET, signature OID, signature)."""
    _, c0, c1 = _tlv(token, 0)  # ContentInfo
    _, content = _children(token, c0, c1)[:2]  # contentType, [0] EXPLICIT
    _, s0, s1 = _tlv(token, content[1])  # SignedData
    parts = _children(token, s0, s1)
    encap = parts[2]  # version, digestAlgorithms, encapContentInfo, [certificates], [crls], signerInfos
    econ = _children(token, encap[1], encap[2])[1]  # eContentType, [0] EXPLICIT OCTET STRING
    tag, o0, o1 = _tlv(token, econ[1])
    if tag != 0x04:
        raise ValueError("eContent is not an OCTET STRING")
    econtent = token[o0:o1]
    signer_infos = parts[-1]
    if signer_infos[0] != 0x31:
        raise ValueError("no signerInfos")
    (si,) = _children(token, signer_infos[1], signer_infos[2])
    fields = _children(token, si[1], si[2])  # version, sid, digestAlgorithm, [0] signedAttrs, sigAlg, sig
    digest = fields[2]
    digest_oid = token[slice(*_tlv(token, digest[1])[1:])]
    attrs = fields[3]
    if attrs[0] != 0xA0:
        raise ValueError("no signed attributes")
    attrs_der = b"\x31" + token[attrs[3] + 1 : attrs[2]]  # [0] IMPLICIT -> SET OF, for the signature
    sig_alg = fields[4]
    sig_oid = token[slice(*_tlv(token, sig_alg[1])[1:])]
    sig = fields[5]
    if sig[0] != 0x04:
        raise ValueError("signature is not an OCTET STRING")
    return econtent, digest_oid, attrs_der, sig_oid, token[sig[1] : sig[2]]


def _message_digest(attrs_der: bytes) -> bytes | None:
    _, a0, a1 = _tlv(attrs_der, 0)
    for _, c0, c1, _ in _children(attrs_der, a0, a1):
        oid_el, values = _children(attrs_der, c0, c1)[:2]
        if attrs_der[oid_el[1] : oid_el[2]] == _OID_MESSAGE_DIGEST:
            (value,) = _children(attrs_der, values[1], values[2])
            return attrs_der[value[1] : value[2]] if value[0] == 0x04 else None
    return None
