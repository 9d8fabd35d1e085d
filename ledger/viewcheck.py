"""Opening the LMDB views without trusting their bytes.

A view file that is damaged on disk must not stop the commands that read it for
good, nor kill the process: LMDB maps ``data.mdb`` and reads pages through the map,
so a file shorter than its meta page says dies with SIGBUS, and damaged pages give
``MDB_CORRUPTED`` / ``MDB_BAD_TXN`` on every later read. Before LMDB is opened, the two
meta pages are checked (flags, magic, version, page size, and that the last used page
lies inside the file); after, every entry of every database is read once. A view that
fails either is moved aside (``.views.corrupt-<time>``, never deleted: it is evidence
of what happened) and an empty one is opened in its place, which the projector then
rebuilds from the files and the cold store.
"""

from __future__ import annotations

import logging
import os
import struct
import time
from pathlib import Path

import lmdb

log = logging.getLogger("ledger.projections")

_P_META = 0x08
_MAGIC = 0xBEEFC0DE
_VERSION = 1
_PTR = struct.calcsize("P")  # pgno_t and size_t


def meta_problem(data: Path) -> str | None:
    """Why ``data`` (an LMDB data.mdb) cannot be opened safely, or None. A missing or
    empty file is a new environment (LMDB initialises it)."""
    try:
        with open(data, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                return None
            head = f.read(2 * 65536)
    except FileNotFoundError:
        return None
    hdr = _PTR + 8  # page header: pgno, pad, flags, lower, upper
    if len(head) < hdr + 24:
        return f"{size} bytes, shorter than a meta page"
    psize = struct.unpack_from("=I", head, hdr + 8 + 2 * _PTR)[0]  # free DB's md_pad holds the page size
    if psize < 512 or psize > 65536 or psize & (psize - 1) or size < 2 * psize:
        return f"meta page 0 gives page size {psize} for a {size}-byte file"
    metas = []
    for i in (0, 1):
        off = i * psize
        flags = struct.unpack_from("=H", head, off + _PTR + 2)[0]
        magic, version = struct.unpack_from("=II", head, off + hdr)
        last_at = off + hdr + 8 + 2 * _PTR + 2 * (8 + 5 * _PTR)  # after magic, version, address, mapsize, dbs
        last_pg, txnid = struct.unpack_from("=QQ" if _PTR == 8 else "=II", head, last_at)
        if not flags & _P_META or magic != _MAGIC or version != _VERSION:
            return f"meta page {i} is damaged (flags {flags:#x}, magic {magic:#x}, version {version})"
        metas.append((txnid, last_pg))
    last_pg = max(metas)[1]
    if (last_pg + 1) * psize > size:
        return f"the file is {size} bytes but its last used page {last_pg} ends at {(last_pg + 1) * psize}"
    return None


def open_views(path: Path, names: tuple[str, ...], map_size: int) -> tuple[lmdb.Environment, dict, str | None]:
    """(env, dbs, repaired): the views at ``path`` opened and read through once; when
    they are unreadable, moved aside and replaced by an empty view, ``repaired`` says so."""
    problem = meta_problem(path / "data.mdb")
    if problem is None:
        try:
            return (*_open_and_read(path, names, map_size), None)
        except lmdb.Error as exc:
            problem = f"{exc.__class__.__name__}: {exc}"
    aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{os.getpid()}")
    os.rename(path, aside)
    path.mkdir(mode=0o700)
    env, dbs = _open_and_read(path, names, map_size)
    repaired = f"{path} is unreadable ({problem}): moved aside to {aside.name}, rebuilding from the files and the store"
    log.info("%s", repaired)  # the CLI prints it as its one warning line
    return env, dbs, repaired


def _open_and_read(path: Path, names: tuple[str, ...], map_size: int) -> tuple[lmdb.Environment, dict]:
    env = lmdb.open(str(path), max_dbs=8, map_size=map_size, subdir=True, mode=0o600)
    try:
        dbs = {name: env.open_db(name.encode()) for name in names}
        with env.begin() as txn:
            for db in (None, *dbs.values()):
                for _ in txn.cursor(db=db):
                    pass
    except BaseException:
        env.close()
        raise
    return env, dbs
