"""Configuration: a TOML file and ``LEDGER_*`` environment variables, validated once at start.

Precedence: explicit arguments (the CLI's options) > environment > file > defaults.
The file is found at ``--config``, ``LEDGER_CONFIG`` or not at all. Unknown keys are
errors (a typo must not silently disable offload). Secrets never live here: keys are
paths to key files (``hmac_key_file``, ``signer_key_file``, ``fs_state_file``), and S3
credentials come from boto3's usual chain.

Every table is one msgspec Struct, converted here and only here: ``[writer]`` is
``WriterConfig`` (what ``Ledger.open`` takes), ``[capture]`` is
``ledger.capture.CaptureOptions``, ``[cold]`` is ``ColdConfig`` and ``[cold.s3]`` is
``ledger.cold.stores.StoreOptions``. ``ledger.example.toml`` at the repository root
lists every key with its default (tests/test_config.py keeps it complete).

    # ledger.toml
    root = "/var/lib/ledger"
    namespace = "edge-1"                        # default: the full host name
    hmac_key_file = "/etc/ledger/hmac.key"      # ledger keygen --hmac FILE
    signer_key_file = "/etc/ledger/edge-1.signer.key"  # ledger keygen edge-1: Ed25519 notes
    fs_state_file = "/etc/ledger/fs.seed.state" # ledger keygen --fs-seed FILE: forward-secure seals

    [writer]
    durability = "always"

    [cold]
    store = "s3://evidence-bucket/fleet"  # or file:///srv/cold; absent = offload disabled
"""

from __future__ import annotations

import os
import socket
import tomllib
from typing import Annotated, Literal

import msgspec

from . import format as fmt
from . import layout
from .capture import CaptureOptions
from .cold.stores.base import StoreOptions
from .errors import UsageError
from .regular import open_regular

ENV_PREFIX = "LEDGER_"
DEFAULT_HOT_RETENTION_DAYS = 7.0
# Anchored with \Z, not $: msgspec searches with re, where $ also matches before a final
# newline ("edge-1\n" would pass as a namespace and end up in paths and store keys).
NAMESPACE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\Z"
HOST_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}\Z"
# A path: not empty, no NUL (the same constraint as CaptureOptions.capture_dir).
PathStr = Annotated[str, msgspec.Meta(min_length=1, pattern="^[^\x00]+$")]


class WriterConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """``[writer]``: everything ``Ledger.open`` accepts besides root, namespace and keys.

    Defined here rather than in ``ledger.writer`` (which re-exports it) because the writer
    imports this module: the configuration cannot import the writer back.
    """

    queue_size: Annotated[int, msgspec.Meta(ge=1)] = 16384
    durability: Literal["always", "batch", "none"] = "batch"
    checkpoint_every: Annotated[int, msgspec.Meta(ge=1)] = 1000
    checkpoint_interval_s: Annotated[float, msgspec.Meta(gt=0)] = 5.0
    rotate_bytes: Annotated[int, msgspec.Meta(ge=4096)] = 64 * 2**20
    rotate_interval_s: Annotated[float, msgspec.Meta(gt=0)] = 3600.0
    max_event_bytes: Annotated[int, msgspec.Meta(ge=256, le=fmt.MAX_LINE_BYTES // 2)] = 2**20
    fsync_interval_s: Annotated[float, msgspec.Meta(ge=0)] = 0.020


class ColdConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    store: str | None = None
    # Archived sessions stay local this long. Not 0: a first archive would delete
    # every archived local session at once, leaving the store the only copy.
    hot_retention_days: Annotated[float, msgspec.Meta(ge=0)] = DEFAULT_HOT_RETENTION_DAYS
    interval_s: Annotated[float, msgspec.Meta(gt=0)] = 60.0
    tsa_url: str | None = None
    tsa_ca_file: PathStr | None = None
    backoff_base_s: Annotated[float, msgspec.Meta(gt=0)] = 1.0
    backoff_max_s: Annotated[float, msgspec.Meta(gt=0)] = 300.0
    # Converted here, with the rest of the file, and only here: a typo in [cold.s3]
    # fails at start like any other key, not when a store is first opened.
    s3: StoreOptions = msgspec.field(default_factory=StoreOptions)


class Config(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    root: PathStr = "/var/lib/ledger"
    namespace: Annotated[str, msgspec.Meta(pattern=NAMESPACE_PATTERN)] | None = None
    hmac_key_file: PathStr | None = None
    # The writer the CLI opens signs every checkpoint and seal with these too: an Ed25519
    # signer key (`ledger keygen NAME`, C2SP signed notes) and the forward-secure writer
    # state (`ledger keygen --fs-seed FILE` writes FILE.state; the seed stays off the host).
    signer_key_file: PathStr | None = None
    fs_state_file: PathStr | None = None
    # Who owns the namespaces this root archives (SPEC.md 8); default: <root>/.ledger-id.
    host_id: Annotated[str, msgspec.Meta(pattern=HOST_ID_PATTERN)] | None = None
    writer: WriterConfig = msgspec.field(default_factory=WriterConfig)
    # capture_dir defaults to <root>/<namespace>/captures (filled in by load_config).
    capture: CaptureOptions = msgspec.field(default_factory=CaptureOptions)
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
    "SIGNER_KEY_FILE": ("signer_key_file",),
    "FS_STATE_FILE": ("fs_state_file",),
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
        config = msgspec.convert(raw, Config, strict=False)
    except msgspec.ValidationError as exc:
        where = f"config {path}" if path else "configuration"
        raise UsageError(f"{where}: {exc}") from None
    if "capture_dir" not in raw.get("capture", {}):
        # The namespace's own directory, where capture, gc, captures and demo all look.
        capture_dir = str(layout.captures_dir(config.root, config.ns))
        config.capture = msgspec.structs.replace(config.capture, capture_dir=capture_dir)
    return config


def _set(raw: dict, keys: tuple[str, ...], value: object) -> None:
    for k in keys[:-1]:
        raw = raw.setdefault(k, {})
    raw[keys[-1]] = value
