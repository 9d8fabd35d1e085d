"""One root per namespace in a store: the owner object (SPEC.md 8).

Two roots archiving into one namespace interleave two chains under one name, and the
store then fails verification for good (``prev_mismatch``). So the first archive of a
namespace claims it with ``<namespace>/owner.json``, written once with a conditional
write (``If-None-Match: *`` on S3, an exclusive link on ``file://``), naming the root's
identity (ledger/identity.py). A root that finds another's claim is refused before it
uploads anything. The owner object is bookkeeping about who writes, not evidence: it is
never deleted by ledger, and a store without it is claimed by the next archive.
"""

from __future__ import annotations

import hashlib
import socket

import msgspec

from ..errors import UsageError
from ..format import format_ts
from ..layout import owner_key
from .stores import ObjectConflict, ObjectNotFound, Store

MAX_OWNER_BYTES = 4096


class Owner(msgspec.Struct, kw_only=True):
    v: int = 1
    namespace: str
    owner: str  # the root's identity
    host: str = ""  # where it was claimed from, for the operator reading the refusal
    claimed_at: str = ""


class NamespaceOwned(UsageError):
    """The namespace is claimed in the store by another root (exit 2: nothing was done)."""


def claim_namespace(store: Store, namespace: str, identity: str) -> Owner:
    """Return this root's claim on ``namespace``, claiming it if nobody has.

    Also the first contact with the store in a pass: an unreachable store raises
    StoreUnavailable here, before anything else happens.
    """
    key = owner_key(namespace)
    found = read_owner(store, namespace)
    if found is None:
        mine = Owner(namespace=namespace, owner=identity, host=socket.gethostname(), claimed_at=format_ts())
        body = msgspec.json.encode(mine) + b"\n"
        try:
            store.put(key, body, sha256=hashlib.sha256(body).hexdigest(), content_type="application/json")
            return mine
        except ObjectConflict:
            found = read_owner(store, namespace)  # another root won the race
            if found is None:
                raise NamespaceOwned(f"{store.url}/{key}: claimed concurrently and unreadable") from None
    if found.owner != identity:
        raise NamespaceOwned(
            f"namespace {namespace} in {store.url} belongs to root {found.owner}"
            f" (host {found.host or '?'}, claimed {found.claimed_at or '?'}); this root is {identity}:"
            " give this host its own --namespace, or set host_id to the owner's if it moved here"
        )
    return found


def read_owner(store: Store, namespace: str) -> Owner | None:
    key = owner_key(namespace)
    try:
        with store.open(key) as f:
            raw = f.read(MAX_OWNER_BYTES + 1)
    except ObjectNotFound:
        return None
    try:
        if len(raw) > MAX_OWNER_BYTES:
            raise msgspec.DecodeError("too large")
        return msgspec.json.decode(raw, type=Owner)
    except msgspec.DecodeError as exc:
        raise NamespaceOwned(f"{store.url}/{key}: unreadable owner object ({exc}); not archiving into it") from None
