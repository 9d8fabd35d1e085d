"""Contract tests for ledger.cold.stores: one suite run against every store.

``backend`` is parametrized: ``file`` (a directory under tmp_path) and ``s3``
(moto's server over real HTTP, bucket ``ledger-cold``, prefix ``fleet``). The
S3-only tests at the end cover what a directory cannot show: error mapping,
retries through ``FlakyProxy``, the headers put on the wire, boto3's own
configuration, and Object Lock.

moto quirks these tests pin down (moto 5.2):
* It does not verify ``x-amz-checksum-sha256`` on PUT, and keeps a checksum only
  when ``x-amz-sdk-checksum-algorithm`` is sent too (so the store sends both).
* It does not enforce the 1,000-key DeleteObjects limit (counted on the wire here).
* HEAD of a key in a missing bucket is a bare 404, like S3: the store asks
  HeadBucket to tell the two apart.
* A DeleteObjects without version ids on an Object Lock bucket "deletes" the
  locked key (adds a delete marker; the version stays), exactly as S3 does; only
  deleting the version is refused with AccessDenied.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import os
import stat
import threading
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from s3server import DeleteCounter, FlakyProxy, SentHeaders, aws_env, s3_error_xml

from ledger.cold import stores
from ledger.cold.stores import (
    DigestMismatch,
    ObjectConflict,
    ObjectInfo,
    ObjectNotFound,
    StoreError,
    StoreOptions,
    StoreUnavailable,
    open_store,
)
from ledger.errors import EvidenceError, LedgerError, UsageError

BUCKET = "ledger-cold"
LOCKED_BUCKET = "ledger-locked"
PREFIX = "fleet"
MiB = 1 << 20


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert text and "\n" not in text, text
    return text


# ---- fixtures ---------------------------------------------------------------------------


class Backend:
    """How to open a store of one kind, and how to reach behind it for setup."""

    def __init__(self, kind: str, tmp_path: Path, moto=None) -> None:
        self.kind = kind
        self.tmp_path = tmp_path
        self.moto = moto

    def url(self, prefix: str = PREFIX, bucket: str = BUCKET) -> str:
        if self.kind == "file":
            return (self.tmp_path / "cold" / prefix).as_uri()
        return f"s3://{bucket}/{prefix}"

    def open(self, prefix: str = PREFIX, *, bucket: str = BUCKET, endpoint: str | None = None, **options):
        if self.kind == "s3":
            options.setdefault("endpoint_url", endpoint or self.moto.endpoint)
        return open_store(self.url(prefix, bucket), StoreOptions(**options))

    def seed(self, store, keys: list[str], body: bytes = b"x") -> None:
        """Create many small objects quickly, behind the store's back."""
        if self.kind == "s3":
            self.moto.seed(store.bucket, [f"{store.prefix}/{k}" for k in keys], body)
            return
        origin = self.tmp_path / "seed-origin"  # creating inodes is slow here; links are not
        origin.write_bytes(body)
        for k in keys:
            path = store.root / k
            path.parent.mkdir(parents=True, exist_ok=True)
            os.link(origin, path)

    def hook(self, store, hook):
        """Attach a botocore hook (S3 only); returns it, or None for file://."""
        return hook.attach(store.client) if self.kind == "s3" else None


@pytest.fixture(params=["file", "s3"])
def backend(request, tmp_path):
    moto = request.getfixturevalue("s3") if request.param == "s3" else None
    return Backend(request.param, tmp_path, moto)


@pytest.fixture
def store(backend):
    return backend.open()


# ---- the contract -----------------------------------------------------------------------


def test_put_head_open_list_round_trip(backend, store, tmp_path):
    small = b'{"seq": 1}\n'
    big = os.urandom(3 * MiB + 123)
    big_path = tmp_path / "big.pcap"
    big_path.write_bytes(big)

    r1 = store.put("ns/sessions/s1.ndjson.gz", small, sha256=sha(small), content_type="application/gzip")
    r2 = store.put("ns/captures/c1.pcap", big_path, sha256=sha(big))
    assert (r1.created, r1.size, r1.sha256, r1.key) == (True, len(small), sha(small), "ns/sessions/s1.ndjson.gz")
    assert (r2.created, r2.size, r2.sha256) == (True, len(big), sha(big))

    info = store.head("ns/captures/c1.pcap")
    assert isinstance(info, ObjectInfo)
    assert (info.key, info.size, info.sha256) == ("ns/captures/c1.pcap", len(big), sha(big))
    assert info.last_modified and abs(info.last_modified - time.time()) < 300

    with store.open("ns/captures/c1.pcap") as f:
        first = f.read(1000)
        assert len(first) == 1000
        h = hashlib.sha256(first)
        while block := f.read(256 * 1024):
            h.update(block)
    assert h.hexdigest() == sha(big)
    with store.open("ns/sessions/s1.ndjson.gz") as f:
        assert f.read() == small

    listed = list(store.list())
    assert [i.key for i in listed] == ["ns/captures/c1.pcap", "ns/sessions/s1.ndjson.gz"]
    assert [i.size for i in listed] == [len(big), len(small)]
    assert all(i.last_modified for i in listed)
    assert [i.key for i in store.list("ns/sess")] == ["ns/sessions/s1.ndjson.gz"]
    assert store.url == backend.url()


def test_put_from_path_is_streamed(backend, store, tmp_path):
    data = os.urandom(16 * MiB)
    path = tmp_path / "capture.pcap"
    path.write_bytes(data)
    sent = backend.hook(store, SentHeaders("PutObject"))
    tracemalloc.start()
    try:
        store.put("captures/big.pcap", path, sha256=sha(data))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    if sent is None:
        assert peak < 8 * MiB, f"FileStore.put held {peak} bytes for a 16 MiB file"
    else:  # moto holds the body in this process, so check what botocore was given
        assert len(sent.bodies) == 1 and not isinstance(sent.bodies[0], bytes | bytearray)
    assert store.head("captures/big.pcap").sha256 == sha(data)


def test_identical_reput_is_not_created(store, tmp_path):
    data = b"sealed session bytes"
    assert store.put("a/b.gz", data, sha256=sha(data)).created is True
    again = store.put("a/b.gz", data, sha256=sha(data))
    assert (again.created, again.size, again.sha256) == (False, len(data), sha(data))
    path = tmp_path / "same"
    path.write_bytes(data)
    assert store.put("a/b.gz", path, sha256=sha(data).upper()).created is False


def test_different_reput_raises_conflict_and_keeps_the_original(store):
    store.put("a/b.gz", b"first", sha256=sha(b"first"))
    with pytest.raises(ObjectConflict) as info:
        store.put("a/b.gz", b"second!", sha256=sha(b"second!"))
    exc = info.value
    assert isinstance(exc, EvidenceError)
    text = one_line(exc)
    assert f"{store.url}/a/b.gz" in text and sha(b"first") in text and sha(b"second!") in text
    assert exc.key == "a/b.gz" and exc.found == (5, sha(b"first")) and exc.expected == (7, sha(b"second!"))
    assert store.head("a/b.gz").sha256 == sha(b"first")
    with pytest.raises(ObjectConflict):  # same size, different bytes
        store.put("a/b.gz", b"fir5t", sha256=sha(b"fir5t"))


def test_same_rules_without_conditional_writes(backend):
    store = backend.open(conditional_writes=False)
    sent = backend.hook(store, SentHeaders("PutObject"))
    assert store.put("k", b"one", sha256=sha(b"one")).created is True
    assert store.put("k", b"one", sha256=sha(b"one")).created is False
    with pytest.raises(ObjectConflict):
        store.put("k", b"two", sha256=sha(b"two"))
    if sent is not None:  # only the first call reached PUT; the others stopped at HEAD
        assert len(sent.requests) == 1 and "if-none-match" not in sent.requests[0]


def test_wrong_sha256_is_a_digest_mismatch_and_stores_nothing(backend, store, tmp_path):
    path = tmp_path / "x"
    path.write_bytes(b"actual bytes")
    for source in (b"actual bytes", path):
        with pytest.raises(DigestMismatch) as info:
            store.put("k/x", source, sha256=sha(b"claimed bytes"))
        assert isinstance(info.value, EvidenceError)
        one_line(info.value)
    assert store.head("k/x") is None
    assert list(store.list()) == []
    if backend.kind == "file":
        assert [p.name for p in store.root.rglob("*") if p.is_file()] == []


def test_absent_keys(store):
    assert store.head("nope/none") is None
    with pytest.raises(ObjectNotFound) as info:
        store.open("nope/none")
    assert isinstance(info.value, StoreError) and "nope/none" in one_line(info.value)
    assert list(store.list("nope/")) == []
    result = store.delete_many(["nope/none"])
    assert (result.deleted, result.errors) == (["nope/none"], [])  # S3: absent keys count as deleted


def test_list_paginates_in_key_order(backend, store):
    keys = [f"many/{i:05d}.gz" for i in range(1100)]
    backend.seed(store, [*keys, "other/x"])
    pages = backend.hook(store, SentHeaders("ListObjectsV2"))
    listed = [i.key for i in store.list("many/")]
    assert listed == keys
    if pages is not None:
        assert len(pages.requests) == 2  # 1,000 per page
    assert len(list(store.list())) == 1101


def test_list_order_matches_s3_byte_order(store):
    keys = ["a/b", "a-c", "a0", "ab", "a/a/z", "A", "é"]
    for k in keys:
        store.put(k, k.encode(), sha256=sha(k.encode()))
    assert [i.key for i in store.list()] == sorted(keys)
    assert [i.key for i in store.list("a/")] == ["a/a/z", "a/b"]
    assert [i.key for i in store.list("a")] == sorted(k for k in keys if k.startswith("a"))


def test_delete_many_in_chunks_of_at_most_1000(backend, store):
    keys = [f"batch/{i:05d}" for i in range(2500)]
    backend.seed(store, keys)
    counter = backend.hook(store, DeleteCounter())
    result = store.delete_many([*keys, "batch/never-there", keys[0]])
    assert result.errors == []
    assert result.deleted == [*keys, "batch/never-there"]
    if counter is not None:
        assert counter.batches == [1000, 1000, 501]
        assert result.requests == 3
    assert list(store.list()) == []


def test_delete_many_reports_per_key_errors(backend, monkeypatch):
    if backend.kind == "s3":
        backend.moto.create_bucket(LOCKED_BUCKET, object_lock=True)
        locking = backend.open(bucket=LOCKED_BUCKET, object_lock_mode="GOVERNANCE")
        store = backend.open(bucket=LOCKED_BUCKET, versioned_deletes=True)
    else:
        store = locking = backend.open()
        real_unlink = os.unlink

        def unlink(path, *args, **kwargs):
            if str(path).endswith("/locked"):
                raise PermissionError(errno.EPERM, "Operation not permitted")
            return real_unlink(path, *args, **kwargs)

        monkeypatch.setattr(os, "unlink", unlink)
    until = datetime.now(UTC) + timedelta(days=1)
    locking.put("evidence/locked", b"keep me", sha256=sha(b"keep me"), retain_until=until)
    store.put("evidence/free", b"drop me", sha256=sha(b"drop me"))

    result = store.delete_many(["evidence/locked", "evidence/free", "evidence/absent"])
    assert result.deleted == ["evidence/free", "evidence/absent"]
    assert [(e["key"], e["code"]) for e in result.errors] == [("evidence/locked", "AccessDenied")]
    assert result.errors[0]["message"]
    assert store.head("evidence/locked").sha256 == sha(b"keep me")
    assert store.head("evidence/free") is None


def test_bad_keys_are_rejected(store):
    bad = ["", "/abs", "a//b", "a/../b", "..", ".", "a/./b", "a/", "nul\x00x", ".ledger-tmp-1/x", "k" * 1025]
    for key in bad:
        for call in (
            lambda key=key: store.put(key, b"x", sha256=sha(b"x")),
            lambda key=key: store.head(key),
            lambda key=key: store.open(key),
            lambda key=key: store.delete_many(["fine", key]),
        ):
            with pytest.raises(UsageError):
                call()
    for prefix in ("/x", "../x", "a//", "a/../"):
        with pytest.raises(UsageError):
            list(store.list(prefix))
    with pytest.raises(UsageError):
        store.put("k", b"x", sha256="not-a-digest")
    with pytest.raises(UsageError):
        store.put("k", b"x", sha256=sha(b"x"), retain_until=datetime(2099, 1, 1))  # naive
    assert list(store.list()) == []  # nothing was written, nothing was deleted


def test_prefixes_do_not_see_each_other(backend):
    a, b, nested = backend.open("fleet"), backend.open("fleet-b"), backend.open("fleet/sub")
    a.put("k", b"from a", sha256=sha(b"from a"))
    b.put("k", b"from b!", sha256=sha(b"from b!"))  # same key, other prefix: no conflict
    nested.put("k", b"nested", sha256=sha(b"nested"))
    assert [i.key for i in a.list()] == ["k", "sub/k"]  # a nested prefix is inside, as in S3
    assert [i.key for i in b.list()] == ["k"]
    assert a.head("k").sha256 == sha(b"from a") and b.head("k").sha256 == sha(b"from b!")
    assert b.delete_many(["k"]).deleted == ["k"]
    assert a.head("k").size == 6 and b.head("k") is None


# ---- URLs and options -------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/x",
        "ftp://host/x",
        "gs://bucket/x",
        "",
        "bucket/prefix",
        "/var/lib/cold",
        "s3://",
        "s3://Bad_Bucket/x",
        "s3://bucket:9000/x",
        "s3://bucket/a//b",
        "s3://bucket/x?versionId=1",
        "file://host/dir",
        "file://",
        "file:relative/dir",
    ],
)
def test_bad_urls_are_usage_errors(url):
    with pytest.raises(UsageError) as info:
        open_store(url)
    one_line(info.value)


@pytest.mark.parametrize(
    "url",
    [
        "s3://AKIAURLCANARY:urlsecretCANARY@bucket/x",
        "s3://AKIAURLCANARY:url/secretCANARY@bucket/x",  # a "/" in the secret moves the "@" into the path
        "s3://AKIAURLCANARY@bucket",
        "file://AKIAURLCANARY:secretCANARY@localhost/dir",
    ],
)
def test_credentials_in_urls_are_refused_without_echo(url):
    with pytest.raises(UsageError) as info:
        open_store(url)
    assert "CANARY" not in str(info.value)


@pytest.mark.parametrize(
    "options",
    [
        {"max_attempts": 0},
        {"connect_timeout_s": 0},
        {"object_lock_days": -1},
        {"sse": "aws:kms2"},
        {"object_lock_mode": "LEGAL"},
        {"kms_key_id": "alias/x"},
        {"object_lock_mode": "GOVERNANCE", "checksums": False},
    ],
)
def test_bad_options_are_usage_errors(options):
    with pytest.raises(UsageError):
        open_store("file:///tmp/never-created", StoreOptions(**options))


def test_file_store_layout(tmp_path):
    store = open_store((tmp_path / "cold" / "fleet").as_uri())
    assert not (tmp_path / "cold").exists()  # nothing is created until the first put
    store.put("a/b/c", b"x", sha256=sha(b"x"))
    for d in (tmp_path / "cold", tmp_path / "cold/fleet", tmp_path / "cold/fleet/a", tmp_path / "cold/fleet/a/b"):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "cold/fleet/a/b/c").stat().st_mode) == 0o600
    stray = tmp_path / "cold/fleet/a/b/.ledger-tmp-deadbeef"  # as a crash would leave it
    stray.write_bytes(b"half")
    assert [i.key for i in store.list()] == ["a/b/c"]
    assert open_store(f"file://{tmp_path}/cold/./fleet/").url == store.url


def test_file_store_concurrent_puts_create_once(tmp_path):
    store = open_store((tmp_path / "cold").as_uri())
    data = os.urandom(256 * 1024)
    results, barrier = [], threading.Barrier(8)

    def put():
        barrier.wait()
        results.append(store.put("race/k", data, sha256=sha(data)).created)

    threads = [threading.Thread(target=put) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 7 + [True]
    assert [p.name for p in (tmp_path / "cold/race").iterdir()] == ["k"]


# ---- S3 only: errors, retries, wire format, configuration ----------------------------------


def s3_store(s3, url=f"s3://{BUCKET}/{PREFIX}", **options):
    options.setdefault("endpoint_url", s3.endpoint)
    return open_store(url, StoreOptions(**options))


def test_missing_bucket_is_one_clear_store_error(s3):
    store = s3_store(s3, "s3://no-such-bucket/fleet")
    for call in (
        lambda: store.put("k", b"x", sha256=sha(b"x")),
        lambda: store.head("k"),  # a bare 404: HeadBucket tells key from bucket
        lambda: store.open("k"),
        lambda: list(store.list()),
        lambda: store.delete_many(["k"]),
    ):
        with pytest.raises(StoreError) as info:
            call()
        assert type(info.value) is StoreError
        assert one_line(info.value) == f"bucket no-such-bucket does not exist (at {s3.endpoint})"


def test_a_few_500s_are_retried_by_botocore(s3):
    with FlakyProxy(s3.endpoint) as proxy:
        store = s3_store(s3, endpoint_url=proxy.url, max_attempts=5)
        proxy.fail(2)
        assert store.put("k", b"data", sha256=sha(b"data")).created is True
        assert proxy.failed == 2
        for call in (
            lambda: store.head("k"),
            lambda: list(store.list()),
            lambda: store.open("k").read(),
            lambda: store.delete_many(["k"]),
        ):
            proxy.fail(2)
            call()
        assert proxy.failed == 10 and store.head("k") is None


@pytest.mark.parametrize(("status", "code"), [(500, "InternalError"), (503, "SlowDown"), (502, "BadGateway")])
def test_lasting_server_errors_are_unavailable(s3, status, code):
    with FlakyProxy(s3.endpoint) as proxy:
        store = s3_store(s3, endpoint_url=proxy.url, max_attempts=3)
        proxy.fail(None, status=status, code=code)
        with pytest.raises(StoreUnavailable) as info:
            store.put("k", b"x", sha256=sha(b"x"))
        assert proxy.failed == 3
        assert one_line(info.value) == f"put s3://{BUCKET}/{PREFIX}/k: {code} (HTTP {status}) after 3 attempt(s)"


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (403, "AccessDenied", f"access denied to s3://{BUCKET}/{PREFIX}/k (put, AccessDenied)"),
        (403, "InvalidAccessKeyId", f"credentials rejected by {{endpoint}} for s3://{BUCKET}/{PREFIX}/k"),
        (403, "SignatureDoesNotMatch", f"credentials rejected by {{endpoint}} for s3://{BUCKET}/{PREFIX}/k"),
        (501, "NotImplemented", "does not support this put request"),
        (400, "InvalidArgument", f"put s3://{BUCKET}/{PREFIX}/k failed: InvalidArgument (HTTP 400)"),
    ],
)
def test_client_errors_are_not_retryable(s3, status, code, expected):
    with FlakyProxy(s3.endpoint) as proxy:
        store = s3_store(s3, endpoint_url=proxy.url)
        proxy.fail(None, status=status, code=code)
        with pytest.raises(StoreError) as info:
            store.put("k", b"x", sha256=sha(b"x"))
        assert not isinstance(info.value, StoreUnavailable)
        assert proxy.failed == 1  # no retries
        assert expected.format(endpoint=proxy.url) in one_line(info.value)


def test_proxy_down_is_unavailable_quickly_then_recovers(s3):
    with FlakyProxy(s3.endpoint) as proxy:
        store = s3_store(s3, endpoint_url=proxy.url, max_attempts=2, connect_timeout_s=1, read_timeout_s=2)
        store.put("k", b"x", sha256=sha(b"x"))
        port = proxy.port
        proxy.down()
        started = time.monotonic()
        for call in (
            lambda: store.head("k"),
            lambda: store.put("k2", b"y", sha256=sha(b"y")),
            lambda: list(store.list()),
            lambda: store.delete_many(["k"]),
        ):
            with pytest.raises(StoreUnavailable) as info:
                call()
            assert f"cannot reach {proxy.url}" in one_line(info.value)
        assert time.monotonic() - started < 5
        proxy.up()
        assert proxy.port == port
        assert store.head("k").size == 1
        assert store.put("k2", b"y", sha256=sha(b"y")).created is True


def test_a_racing_write_409_is_retried_once(s3):
    with FlakyProxy(s3.endpoint) as proxy:
        store = s3_store(s3, endpoint_url=proxy.url)
        proxy.fail(1, status=409, code="ConditionalRequestConflict")
        assert store.put("k", b"x", sha256=sha(b"x")).created is True
        assert [m for m, _ in proxy.seen] == ["PUT", "HEAD", "HEAD", "PUT"]  # 409, HEAD key, HeadBucket, PUT


def test_credentials_never_appear_in_errors(s3, monkeypatch, tmp_path):
    key_id, secret = "AKIACANARYKEYID0001", "CanarySecret/DoNotLeak+xyz0123456789"
    aws_env(monkeypatch, access_key=key_id, secret_key=secret)
    raised: list[BaseException] = []

    def collect(call):
        with pytest.raises(LedgerError) as info:
            call()
        raised.append(info.value)

    collect(lambda: s3_store(s3, "s3://no-such-bucket/x").put("k", b"x", sha256=sha(b"x")))
    store = s3_store(s3)
    store.put("k", b"one", sha256=sha(b"one"))
    collect(lambda: store.put("k", b"two", sha256=sha(b"two")))
    with FlakyProxy(s3.endpoint) as proxy:
        flaky = s3_store(s3, endpoint_url=proxy.url, max_attempts=2, connect_timeout_s=1)
        echo = f"<AWSAccessKeyId>{key_id}</AWSAccessKeyId><StringToSign>AWS4-HMAC-SHA256 {key_id}</StringToSign>"
        proxy.fail_with(None, 403, s3_error_xml("SignatureDoesNotMatch", "signature mismatch", echo))
        collect(lambda: flaky.put("k", b"x", sha256=sha(b"x")))
        proxy.fail_with(None, 403, s3_error_xml("InvalidAccessKeyId", f"no such key id {key_id}", echo))
        collect(lambda: flaky.head("k"))
        proxy.fail(None)
        collect(lambda: flaky.delete_many(["k"]))
        proxy.down()
        collect(lambda: flaky.head("k"))
    collect(lambda: open_store(f"s3://{key_id}:{secret}@bucket/x"))  # the secret holds a "/"
    collect(lambda: open_store(f"s3://{key_id}:{secret.replace('/', '')}@bucket/x"))
    collect(lambda: s3_store(s3, profile="no-such-profile"))
    assert len(raised) == 9
    for exc in raised:
        text = f"{exc} {exc!r}"
        assert key_id not in text and secret not in text, text
        chain: BaseException | None = exc
        while chain is not None:  # nothing further down the chain carries the secret either
            assert secret not in str(chain)
            chain = chain.__cause__ or chain.__context__


def test_wire_headers_follow_the_options(s3):
    data = b"payload"
    digest_b64 = base64.b64encode(hashlib.sha256(data).digest()).decode()
    cases = {
        "plain": {},
        "aes": {"sse": "AES256"},
        "kms": {"sse": "aws:kms", "kms_key_id": "alias/ledger"},
        "bare": {"checksums": False, "conditional_writes": False},
    }
    sent = {}
    for name, options in cases.items():
        store = s3_store(s3, f"s3://{BUCKET}/{name}", **options)
        sent[name] = SentHeaders("PutObject").attach(store.client)
        store.put("k", data, sha256=sha(data))
        assert store.head("k").sha256 == sha(data)  # from the checksum, or the metadata when "bare"
    plain, aes, kms, bare = (sent[n].requests[-1] for n in cases)
    assert plain["x-amz-checksum-sha256"] == digest_b64 and plain["x-amz-meta-sha256"] == sha(data)
    assert plain["if-none-match"] == "*" and "x-amz-server-side-encryption" not in plain
    assert aes["x-amz-server-side-encryption"] == "AES256"
    assert kms["x-amz-server-side-encryption"] == "aws:kms"
    assert kms["x-amz-server-side-encryption-aws-kms-key-id"] == "alias/ledger"
    assert not [h for h in bare if h.startswith(("x-amz-checksum", "x-amz-sdk-checksum", "x-amz-trailer"))]
    assert "if-none-match" not in bare and bare["x-amz-meta-sha256"] == sha(data)


def test_object_lock_headers_and_head_state(s3):
    s3.create_bucket(LOCKED_BUCKET, object_lock=True)
    store = s3_store(s3, f"s3://{LOCKED_BUCKET}/{PREFIX}", object_lock_mode="GOVERNANCE", object_lock_days=2)
    sent = SentHeaders("PutObject").attach(store.client)
    store.put("by-days", b"a", sha256=sha(b"a"))
    until = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    store.put("by-date", b"b", sha256=sha(b"b"), retain_until=until)
    assert [h["x-amz-object-lock-mode"] for h in sent.requests] == ["GOVERNANCE", "GOVERNANCE"]
    by_days, by_date = store.head("by-days"), store.head("by-date")
    assert by_days.lock_mode == by_date.lock_mode == "GOVERNANCE"
    assert abs(by_days.retain_until - (time.time() + 2 * 86400)) < 300
    assert by_date.retain_until == until.timestamp()
    with pytest.raises(UsageError):
        s3_store(s3, f"s3://{LOCKED_BUCKET}/{PREFIX}", object_lock_mode="GOVERNANCE").put(
            "no-date", b"c", sha256=sha(b"c")
        )


def test_plain_delete_on_a_locked_bucket_only_hides_the_object(s3):
    """Documents S3 (and moto): without version ids a locked key is "deleted" but kept."""
    s3.create_bucket(LOCKED_BUCKET, object_lock=True)
    until = datetime.now(UTC) + timedelta(days=1)
    locking = s3_store(s3, f"s3://{LOCKED_BUCKET}/{PREFIX}", object_lock_mode="GOVERNANCE")
    locking.put("locked", b"keep", sha256=sha(b"keep"), retain_until=until)
    plain = s3_store(s3, f"s3://{LOCKED_BUCKET}/{PREFIX}", versioned_deletes=False)
    result = plain.delete_many(["locked"])
    assert (result.deleted, result.errors) == (["locked"], [])
    assert plain.head("locked") is None
    kinds = [marker for key, _, marker in s3.versions(LOCKED_BUCKET, f"{PREFIX}/")]
    assert sorted(kinds) == [False, True]  # the locked version is still there, under a delete marker
    # versioned deletes (the default with object_lock_mode) remove the marker, and are refused the version
    result = locking.delete_many(["locked"])
    assert [e["code"] for e in result.errors] == ["AccessDenied"]
    assert locking.head("locked").sha256 == sha(b"keep")


def test_objects_without_a_recorded_digest_are_hashed_to_compare(s3):
    raw = s3.client()
    raw.put_object(Bucket=BUCKET, Key=f"{PREFIX}/old", Body=b"legacy")  # no checksum, no metadata
    store = s3_store(s3)
    assert store.head("old").sha256 is None
    assert store.put("old", b"legacy", sha256=sha(b"legacy")).created is False
    with pytest.raises(ObjectConflict):
        store.put("old", b"LEGACY", sha256=sha(b"LEGACY"))


def test_read_checks_the_stored_checksum(s3):
    raw = s3.client()
    wrong = base64.b64encode(hashlib.sha256(b"something else").digest()).decode()
    # moto stores a checksum without checking it, which lets us plant a corrupt object
    raw.put_object(
        Bucket=BUCKET, Key=f"{PREFIX}/bad", Body=b"corrupt", ChecksumAlgorithm="SHA256", ChecksumSHA256=wrong
    )
    store = s3_store(s3)
    with pytest.raises(DigestMismatch), store.open("bad") as f:
        f.read()


def test_endpoint_from_the_environment(s3, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3.endpoint)
    store = open_store(f"s3://{BUCKET}/{PREFIX}")
    assert store.endpoint == s3.endpoint
    assert store.put("k", b"x", sha256=sha(b"x")).created is True


def test_profile_option(s3, monkeypatch, tmp_path):
    config, creds = tmp_path / "config", tmp_path / "credentials"
    config.write_text(f"[profile cold]\nregion = us-east-1\nendpoint_url = {s3.endpoint}\n")
    creds.write_text("[cold]\naws_access_key_id = testing\naws_secret_access_key = testing\n")
    aws_env(monkeypatch, config_file=config, credentials_file=creds)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    store = open_store(f"s3://{BUCKET}/{PREFIX}", StoreOptions(profile="cold"))
    assert store.endpoint == s3.endpoint
    assert store.put("k", b"x", sha256=sha(b"x")).created is True
    with pytest.raises(StoreError) as info:
        open_store(f"s3://{BUCKET}/{PREFIX}", StoreOptions(profile="missing"))
    assert "missing" in one_line(info.value)


def test_store_module_surface():
    assert issubclass(StoreUnavailable, StoreError) and issubclass(StoreError, LedgerError)
    assert issubclass(ObjectConflict, EvidenceError) and issubclass(DigestMismatch, EvidenceError)
    assert issubclass(ObjectNotFound, StoreError)
    assert stores.DELETE_BATCH == 1000


def test_cold_s3_config_is_store_options_checked_at_load(tmp_path):
    from ledger.config import load_config

    config = tmp_path / "ledger.toml"
    config.write_text('[cold.s3]\nmax_attempts = 1\nsse = "AES256"\n')
    options = load_config(config, env={}).cold.s3
    assert options == StoreOptions(max_attempts=1, sse="AES256")
    assert load_config(env={}).cold.s3 == StoreOptions()
    for bad, where in (("max_attempt = 1", "$.cold.s3"), ("max_attempts = 0", "$.cold.s3.max_attempts")):
        config.write_text(f"[cold.s3]\n{bad}\n")
        with pytest.raises(UsageError) as info:
            load_config(config, env={})
        assert where in one_line(info.value)
