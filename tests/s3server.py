"""Test helpers for the cold tier: moto's S3 server over real HTTP, a flaky proxy, botocore hooks.

A plain module (not a conftest): tests import it as ``from s3server import ...``.

* ``moto_server()``: a context manager running ``ThreadedMotoServer`` on
  127.0.0.1 with an OS-chosen port; one per test session is enough, ``reset()``
  between tests wipes every bucket.
* ``aws_env(monkeypatch)``: fake credentials and region, and nothing from the
  machine's own AWS configuration.
* ``FlakyProxy``: a reverse proxy in front of the server that can pass through,
  answer with S3-style errors, or go down (connections refused) and come back.
* ``DeleteCounter`` / ``SentHeaders``: botocore event hooks that record what went
  over the wire (moto does not enforce the 1,000-key DeleteObjects limit).
"""

from __future__ import annotations

import http.client
import logging
import os
import socket
import threading
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from moto.server import ThreadedMotoServer

ACCOUNT_ID = "123456789012"  # moto's default account
REGION = "us-east-1"
AWS_VARS = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_REGION",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_REQUEST_CHECKSUM_CALCULATION",
    "AWS_RESPONSE_CHECKSUM_VALIDATION",
)


class MotoS3:
    """A running moto server: its endpoint, a raw client, and bucket helpers."""

    def __init__(self, server: ThreadedMotoServer) -> None:
        self.server = server
        host, port = server.get_host_and_port()
        self.host = host
        self.port = port
        self.endpoint = f"http://{host}:{port}"

    def reset(self) -> None:
        """Wipe every bucket and object (moto's ``/moto-api/reset``)."""
        req = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST", data=b"")
        with urllib.request.urlopen(req, timeout=10) as resp:
            resp.read()

    def client(self, endpoint: str | None = None) -> Any:
        """A plain boto3 client (test credentials) for setting up and inspecting state."""
        return boto3.client(
            "s3",
            endpoint_url=endpoint or self.endpoint,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(retries={"max_attempts": 1, "mode": "standard"}),
        )

    def create_bucket(self, name: str, *, object_lock: bool = False, versioning: bool = False) -> None:
        """Create ``name``; Object Lock implies versioning (S3 enables it with the lock)."""
        c = self.client()
        if object_lock:
            c.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
        else:
            c.create_bucket(Bucket=name)
        if versioning and not object_lock:
            c.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})

    def seed(self, bucket: str, keys: Iterable[str], body: bytes = b"x") -> None:
        """Create many objects fast, straight in moto's in-process backend (no HTTP).

        moto answers roughly 100 requests/s, so 2,500 PUTs would take half a minute.
        These objects carry no checksum or ``sha256`` metadata.
        """
        from moto.s3.models import s3_backends

        backend = s3_backends[ACCOUNT_ID]["aws"]
        for key in keys:
            backend.put_object(bucket, key, body)

    def versions(self, bucket: str, prefix: str = "") -> list[tuple[str, str, bool]]:
        """(key, version id, is delete marker) for everything under ``prefix``."""
        out = []
        for page in self.client().get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
            out += [(v["Key"], v["VersionId"], False) for v in page.get("Versions", ())]
            out += [(v["Key"], v["VersionId"], True) for v in page.get("DeleteMarkers", ())]
        return sorted(out)


@contextmanager
def moto_server() -> Iterator[MotoS3]:
    """Run moto's S3 (and everything else) on 127.0.0.1:<free port> for the duration."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log on stderr
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        yield MotoS3(server)
    finally:
        server.stop()


def aws_env(
    monkeypatch: Any,
    *,
    access_key: str = "testing",
    secret_key: str = "testing",
    region: str = REGION,
    config_file: Path | None = None,
    credentials_file: Path | None = None,
) -> None:
    """Fake credentials via the environment, and none of the machine's AWS config."""
    for var in AWS_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret_key)
    monkeypatch.setenv("AWS_DEFAULT_REGION", region)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config_file) if config_file else os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials_file) if credentials_file else os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


# ---- FlakyProxy ------------------------------------------------------------------------

_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "expect",
}


def s3_error_xml(code: str, message: str, extra: str = "") -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>{extra}"
        "<RequestId>FLAKYPROXY0000000</RequestId><HostId>flaky</HostId></Error>"
    ).encode()


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    proxy: FlakyProxy

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # connections cut by down() are expected


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like a real endpoint
    server: _ProxyServer

    def setup(self) -> None:
        super().setup()
        self.server.proxy._opened(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.proxy._closed(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _forward(self) -> None:
        proxy = self.server.proxy
        body = self._body()
        failure = proxy._next_failure(self.command, self.path)
        if failure is not None:
            status, payload = failure
            self.send_response_only(status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", "0" if self.command == "HEAD" else str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
            return
        upstream = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=60)
        try:
            upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                    upstream.putheader(name, value)
            if body or self.command in ("PUT", "POST"):
                upstream.putheader("Content-Length", str(len(body)))
            upstream.endheaders(body or None)
            resp = upstream.getresponse()
            data = resp.read()
            headers = resp.getheaders()
        finally:
            upstream.close()
        self.send_response_only(resp.status, resp.reason)
        has_length = False
        for name, value in headers:
            lower = name.lower()
            if lower in _HOP_BY_HOP:
                continue
            if lower == "content-length":
                if self.command != "HEAD":
                    value = str(len(data))
                has_length = True
            self.send_header(name, value)
        if not has_length and self.command != "HEAD":
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward


class FlakyProxy:
    """A reverse proxy on 127.0.0.1:<free port> in front of ``upstream`` (http://host:port).

    Modes: ``passthrough()``; ``fail(n)`` answers the next ``n`` requests (every
    request if ``n`` is None) with an S3-style error (500 InternalError unless told
    otherwise); ``down()`` closes the listening socket and every open connection so
    new connections are refused; ``up()`` listens again on the same port.
    ``requests`` and ``failed`` count what it saw.
    """

    def __init__(self, upstream: str) -> None:
        host_port = upstream.split("://", 1)[-1].rstrip("/")
        host, _, port = host_port.rpartition(":")
        self.upstream_host = host
        self.upstream_port = int(port)
        self.requests = 0
        self.failed = 0
        self.seen: list[tuple[str, str]] = []  # (method, path) of every request
        self._lock = threading.Lock()
        self._fail_left: int | None = 0  # None: fail everything
        self._failure = (500, s3_error_xml("InternalError", "We encountered an internal error. Please try again."))
        self._conns: set[socket.socket] = set()
        self._server: _ProxyServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0
        self._listen()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _listen(self) -> None:
        server = _ProxyServer(("127.0.0.1", self.port), _Handler)
        server.proxy = self
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    # -- modes

    def passthrough(self) -> None:
        with self._lock:
            self._fail_left = 0

    def fail(self, n: int | None = None, *, status: int = 500, code: str = "InternalError", message: str = "") -> None:
        """Answer the next ``n`` requests (None: all) with ``status`` and an S3 error body."""
        body = s3_error_xml(code, message or f"FlakyProxy says {code}")
        with self._lock:
            self._fail_left = n
            self._failure = (status, body)

    def fail_with(self, n: int | None, status: int, payload: bytes) -> None:
        """Like ``fail`` with a verbatim body (e.g. an error that echoes request details)."""
        with self._lock:
            self._fail_left = n
            self._failure = (status, payload)

    def down(self) -> None:
        """Stop accepting: close the listening socket and cut open connections."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)

    def up(self) -> None:
        """Listen again on the same port."""
        if self._server is None:
            self._listen()

    def close(self) -> None:
        self.down()

    def __enter__(self) -> FlakyProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- called by the handler

    def _opened(self, conn: socket.socket) -> None:
        with self._lock:
            self._conns.add(conn)

    def _closed(self, conn: socket.socket) -> None:
        with self._lock:
            self._conns.discard(conn)

    def _next_failure(self, method: str, path: str) -> tuple[int, bytes] | None:
        with self._lock:
            self.requests += 1
            self.seen.append((method, path))
            if self._fail_left is None or self._fail_left > 0:
                if self._fail_left is not None:
                    self._fail_left -= 1
                self.failed += 1
                return self._failure
            return None


# ---- botocore hooks -------------------------------------------------------------------


class DeleteCounter:
    """Keys per DeleteObjects request as sent on the wire (retries included)."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def attach(self, client: Any) -> DeleteCounter:
        client.meta.events.register("before-send.s3.DeleteObjects", self._count)
        return self

    def _count(self, request: Any, **kwargs: Any) -> None:
        body = request.body
        if hasattr(body, "read"):
            pos = body.tell()
            raw = body.read()
            body.seek(pos)
        else:
            raw = body or b""
        root = ET.fromstring(raw)
        self.batches.append(sum(1 for el in root if el.tag.rpartition("}")[2] == "Object"))


class SentHeaders:
    """Headers of every request for one operation (e.g. "PutObject"), lower-cased names."""

    def __init__(self, operation: str) -> None:
        self.operation = operation
        self.requests: list[dict[str, str]] = []
        self.bodies: list[Any] = []

    def attach(self, client: Any) -> SentHeaders:
        client.meta.events.register(f"before-send.s3.{self.operation}", self._record)
        return self

    def _record(self, request: Any, **kwargs: Any) -> None:
        headers = {}
        for name, value in request.headers.items():
            headers[name.lower()] = value.decode() if isinstance(value, bytes) else str(value)
        self.requests.append(headers)
        self.bodies.append(request.body)
