"""A real RFC 3161 time-stamping authority for tests: openssl's ``ts -reply`` behind HTTP.

A plain module (not a conftest): tests import it as ``from tsa import openssl_tsa``.

``make_pki(dir)`` makes a throwaway CA and a TSA certificate signed by it
(extendedKeyUsage critical timeStamping) with the ``openssl`` CLI, and the
``openssl ts`` configuration that signs with them. ``TsaServer`` is a small
``http.server`` on 127.0.0.1:<free port> that takes a DER TimeStampReq, runs
``openssl ts -reply`` on it and answers the DER TimeStampResp with content type
``application/timestamp-reply``. ``requests`` counts the queries it answered.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"

_TS_CONF = """\
[ tsa ]
default_tsa = tsa_config1

[ tsa_config1 ]
dir = {dir}
serial = $dir/tsaserial
crypto_device = builtin
signer_cert = $dir/tsa.pem
signer_key = $dir/tsa.key
signer_digest = sha256
default_policy = 1.3.6.1.4.1.55555.1
digests = sha256, sha384, sha512
accuracy = secs:1
clock_precision_digits = 0
ordering = yes
tsa_name = yes
ess_cert_id_chain = no
ess_cert_id_alg = sha256
"""

_TSA_EXT = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = critical, timeStamping
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


@dataclass(frozen=True)
class Pki:
    dir: Path
    ca_pem: Path
    tsa_pem: Path
    tsa_key: Path
    conf: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run([OPENSSL, *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_pki(directory: Path) -> Pki:
    """A CA and a TSA certificate it signed, and an ``openssl ts`` config, in ``directory``."""
    d = directory
    d.mkdir(parents=True, exist_ok=True)
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
    _openssl(
        "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=ledger test CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=d,
    )  # fmt: skip
    _openssl("req", "-new", *ec, "-keyout", "tsa.key", "-out", "tsa.csr", "-subj", "/CN=ledger test TSA", cwd=d)
    (d / "tsa.ext").write_text(_TSA_EXT)
    _openssl(
        "x509", "-req", "-in", "tsa.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "tsa.pem", "-days", "2", "-sha256", "-extfile", "tsa.ext",
        cwd=d,
    )  # fmt: skip
    (d / "tsaserial").write_text("01\n")
    conf = d / "ts.cnf"
    conf.write_text(_TS_CONF.format(dir=d))
    return Pki(d, d / "ca.pem", d / "tsa.pem", d / "tsa.key", conf)


class _Handler(BaseHTTPRequestHandler):
    server: _TsaHttp

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        pki = self.server.pki
        with self.server.lock, tempfile.TemporaryDirectory(dir=pki.dir) as tmp:
            query, reply = Path(tmp) / "q.tsq", Path(tmp) / "r.tsr"
            query.write_bytes(body)
            proc = subprocess.run(
                [
                    OPENSSL, "ts", "-reply", "-config", str(pki.conf), "-queryfile", str(query),
                    "-signer", str(pki.tsa_pem), "-inkey", str(pki.tsa_key), "-out", str(reply),
                ],
                capture_output=True,
                timeout=30,
            )  # fmt: skip
            data = reply.read_bytes() if proc.returncode == 0 and reply.exists() else b""
        if not data:
            self.send_response(500)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.server.requests += 1
        self.send_response(200)
        self.send_header("Content-Type", "application/timestamp-reply")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _TsaHttp(ThreadingHTTPServer):
    daemon_threads = True
    pki: Pki
    lock: threading.Lock
    requests: int


@contextmanager
def tsa_server(pki: Pki) -> Iterator[_TsaHttp]:
    """Serve ``pki``'s TSA at ``http://127.0.0.1:<port>/tsr``; yields the server (``.url``, ``.requests``)."""
    server = _TsaHttp(("127.0.0.1", 0), _Handler)
    server.pki = pki
    server.lock = threading.Lock()  # openssl ts bumps one serial file
    server.requests = 0
    server.url = f"http://127.0.0.1:{server.server_address[1]}/tsr"  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
