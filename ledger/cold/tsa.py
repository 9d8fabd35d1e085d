"""RFC 3161 timestamps over manifest digests, through rfc3161-client.

rfc3161-client builds the request and parses and verifies the response (ASN.1 and
CMS are not code to hand-write); the HTTP POST is one stdlib call.
"""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request

import rfc3161_client
from cryptography import x509

from ..errors import EvidenceError, LedgerError


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


def verify_token(tsr_bytes: bytes, data: bytes, ca_pem: bytes | None) -> str:
    """Check a .tsr covers SHA-256(data) (and chains to ``ca_pem`` when given); return its time."""
    try:
        tsr = rfc3161_client.decode_timestamp_response(tsr_bytes)
    except Exception as exc:  # noqa: BLE001
        raise TimestampInvalid(f"timestamp token does not parse ({exc})") from None
    if tsr.tst_info.message_imprint.message != hashlib.sha256(data).digest():
        raise TimestampInvalid("timestamp token covers another digest")
    if ca_pem is not None:
        builder = rfc3161_client.VerifierBuilder()
        for cert in x509.load_pem_x509_certificates(ca_pem):
            builder = builder.add_root_certificate(cert)
        try:
            builder.build().verify_message(tsr, data)
        except rfc3161_client.VerificationError as exc:
            raise TimestampInvalid(f"timestamp token does not verify: {exc}") from None
    return tsr.tst_info.gen_time.isoformat()
