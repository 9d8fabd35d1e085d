"""Fixtures shared by the cold-tier test modules: one moto S3 server on 127.0.0.1 per run."""

from __future__ import annotations

import pytest
from s3server import aws_env, moto_server

BUCKET = "ledger-cold"


@pytest.fixture(scope="session")
def moto():
    with moto_server() as server:
        yield server


@pytest.fixture
def s3(moto, monkeypatch):
    """A clean moto with bucket ``ledger-cold`` and test credentials in the environment."""
    moto.reset()
    aws_env(monkeypatch)
    moto.create_bucket(BUCKET)
    return moto
