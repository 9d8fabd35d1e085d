"""`rotate-remote --store URL` with a store that cannot be the view's: exit 2, one line.

A mistyped URL (a file:// directory that does not exist, an S3 prefix with nothing in
it, a store that holds other namespaces only) used to print "0 batch(es) ... 0 key(s)
deleted" and exit 0. Real sessions archived to a real file:// store and to moto over
HTTP; the command run as an operator runs it.
"""

from __future__ import annotations

import pytest
from test_rotate import NS, Site, ledger

from ledger.reader import session_paths


@pytest.fixture(params=["file", "s3"])
def site(request, tmp_path, monkeypatch):
    moto = request.getfixturevalue("s3") if request.param == "s3" else None
    return Site(tmp_path, request.param, moto, monkeypatch)


def _wrong_urls(site, tmp_path) -> list[str]:
    other = tmp_path / "other"
    (other / "elsewhere" / "sessions").mkdir(parents=True)
    (other / "elsewhere" / "sessions" / "x.ndjson.gz").write_bytes(b"x")  # a store of another namespace
    urls = [(tmp_path / "nostore").as_uri(), other.as_uri()]
    if site.kind == "s3":
        urls.append(site.url.rstrip("/") + "-typo")
    return urls


@pytest.mark.parametrize("dry", [True, False], ids=["dry-run", "real"])
def test_a_store_without_the_views_batches_is_refused(site, tmp_path, dry):
    before_objects = site.objects()
    sessions = sorted(p.name for p in session_paths(site.root / NS))
    for url in _wrong_urls(site, tmp_path):
        args = ["--before", "15d", *(["--dry-run"] if dry else []), *site.common, "--store", url]
        r = ledger("rotate-remote", *args, env=site.env)
        assert r.returncode == 2, (url, r.stdout, r.stderr)
        assert r.stderr.count("\n") == 1 and r.stderr.startswith("ledger: error: ") and url in r.stderr, r.stderr
        assert r.stdout == ""
        assert sorted(p.name for p in session_paths(site.root / NS)) == sessions  # no writer was opened
    assert site.objects() == before_objects


def test_the_right_store_still_rotates(site):
    r = site.rotate("--before", "15d", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "2 batch(es)" in r.stderr
