"""Configuration: a TOML file and ``LEDGER_*`` environment variables, validated once at start.

Precedence: explicit arguments (the CLI's options) > environment > file > defaults.
The file is found at ``--config``, ``LEDGER_CONFIG`` or not at all. Unknown keys are
errors (a typo must not silently disable offload). Secrets never live here: the HMAC
key is a path to a key file, and S3 credentials come from boto3's usual chain.

    # ledger.toml
    root = "/var/lib/ledger"
    namespace = "edge-1"              # default: the full host name
    host_id = "edge-1.eu"             # optional: this root's identity in a store's owner objects
    hmac_key_file = "/etc/ledger/hmac.key"

    [cold]
    store = "s3://evidence-bucket/fleet"  # or file:///srv/cold; absent = offload disabled
    hot_retention_days = 7               # the default; 0 deletes a session locally once archived
    interval_s = 60
    tsa_url = "http://tsa.example/tsr"    # optional RFC 3161 timestamps

    [cold.s3]                          # ledger.cold.stores.StoreOptions, checked here
    endpoint_url = "https://minio.internal:9000"
    sse = "AES256"
"""

from __future__ import annotations

import os
import socket
import tomllib
from typing import Annotated

import msgspec

from .cold.stores.base import StoreOptions
from .errors import UsageError
from .regular import open_regular

ENV_PREFIX = "LEDGER_"
DEFAULT_HOT_RETENTION_DAYS = 7.0


class ColdConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    store: str | None = None
    # Archived sessions stay local this long. Not 0: a first archive would delete
    # every archived local session at once, leaving the store the only copy.
    hot_retention_days: Annotated[float, msgspec.Meta(ge=0)] = DEFAULT_HOT_RETENTION_DAYS
    interval_s: Annotated[float, msgspec.Meta(gt=0)] = 60.0
    tsa_url: str | None = None
    tsa_ca_file: str | None = None
    backoff_base_s: Annotated[float, msgspec.Meta(gt=0)] = 1.0
    backoff_max_s: Annotated[float, msgspec.Meta(gt=0)] = 300.0
    # Converted here, with the rest of the file, and only here: a typo in [cold.s3]
    # fails at start like any other key, not when a store is first opened.
    s3: StoreOptions = msgspec.field(default_factory=StoreOptions)


class Config(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    root: str = "/var/lib/ledger"
    namespace: Annotated[str, msgspec.Meta(pattern="^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")] | None = None
    hmac_key_file: str | None = None
    # Who owns the namespaces this root archives (SPEC.md 8); default: <root>/.ledger-id.
    host_id: Annotated[str, msgspec.Meta(pattern="^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")] | None = None
    cold: ColdConfig = msgspec.field(default_factory=ColdConfig)

    @property
    def ns(self) -> str:
        return self.namespace or default_namespace()


def default_namespace() -> str:
    """The full host name: edge-1.eu and edge-1.us share one bucket without colliding
    (the first label alone made them one namespace)."""
    name = "".join(c if c.isalnum() or c in "_.-" else "-" for c in socket.gethostname())[:128]
    return name if name[:1].isalnum() else "localhost"


# Environment variables and the config key each sets.
_ENV_KEYS = {
    "ROOT": ("root",),
    "NAMESPACE": ("namespace",),
    "HMAC_KEY_FILE": ("hmac_key_file",),
    "HOST_ID": ("host_id",),
    "STORE": ("cold", "store"),
    "HOT_RETENTION_DAYS": ("cold", "hot_retention_days"),
    "ARCHIVE_INTERVAL_S": ("cold", "interval_s"),
    "TSA_URL": ("cold", "tsa_url"),
    "TSA_CA_FILE": ("cold", "tsa_ca_file"),
}


def load_config(path: str | os.PathLike[str] | None = None, env: dict[str, str] | None = None, **overrides) -> Config:
    """File, then environment, then ``overrides`` (None values ignored). Raises UsageError."""
    env = os.environ if env is None else env
    raw: dict = {}
    path = path or env.get(ENV_PREFIX + "CONFIG")
    if path:
        try:
            with open_regular(path) as f:
                raw = tomllib.load(f)
        except OSError as exc:
            raise UsageError(f"cannot read config {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise UsageError(f"config {path}: {exc}") from None
    for name, keys in _ENV_KEYS.items():
        value = env.get(ENV_PREFIX + name)
        if value is not None and value != "":
            _set(raw, keys, value)
    for key, value in overrides.items():
        if value is not None:
            _set(raw, _ENV_KEYS.get(key.upper(), (key,)), value)
    try:
        return msgspec.convert(raw, Config, strict=False)
    except msgspec.ValidationError as exc:
        where = f"config {path}" if path else "configuration"
        raise UsageError(f"{where}: {exc}") from None


def _set(raw: dict, keys: tuple[str, ...], value: object) -> None:
    for k in keys[:-1]:
        raw = raw.setdefault(k, {})
    raw[keys[-1]] = value
