"""The ``file://`` store: objects as files under a root directory.

A stand-in for a bucket on one host (a mounted disk, a test); it keeps the same
contract as S3 (see ``base``), written with an exclusive link so a crash never
leaves half an object under its key.
"""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
import stat
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from ...errors import UsageError
from ...files import fsync_dir, sha256_file
from .base import (
    TMP_PREFIX,
    DeleteResult,
    DigestMismatch,
    ObjectInfo,
    ObjectNotFound,
    PutResult,
    StoreError,
    StoreUnavailable,
    _as_stream,
    _check_prefix,
    _check_retain,
    _check_sha256,
    _chunks,
    _same_or_conflict,
    _stream_size,
    _unique,
    check_key,
)


class FileStore:
    """Objects as files under a root directory (0700 directories, 0600 files).

    ``put`` writes a temp file in the target directory, fsyncs it, then links it
    into place with ``os.link`` (which fails if the name exists), so a crash never
    leaves a half-written object under its key. A key cannot be both an object
    and a "directory" of other keys here (S3 allows that).
    """

    def __init__(self, root: Path) -> None:
        if not root.is_absolute():
            raise UsageError(f"file:// store needs an absolute path, got {str(root)!r}")
        self.root = Path(os.path.normpath(root))
        self.url = self.root.as_uri()

    def __repr__(self) -> str:
        return f"FileStore({self.url!r})"

    def close(self) -> None:
        """Nothing to release; present for symmetry with S3Store."""

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _fail(self, exc: OSError, what: str) -> StoreError:
        detail = exc.strerror or type(exc).__name__
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return StoreUnavailable(f"{what}: {detail}")
        if isinstance(exc, PermissionError):
            return StoreError(f"permission denied: {what}")
        return StoreError(f"{what}: {detail}")

    def put(
        self,
        key: str,
        source: Path | bytes,
        *,
        sha256: str,
        content_type: str = "application/octet-stream",
        retain_until: datetime | None = None,
    ) -> PutResult:
        """Store ``source`` under ``key`` once; content_type and retain_until are not kept."""
        final = self._path(key)
        sha = _check_sha256(sha256)
        _check_retain(retain_until)
        with _as_stream(source) as src:
            size = _stream_size(src)
            found = self._info(key, final, hashed=True)
            if found is not None:
                return _same_or_conflict(self.url, key, size, sha, found)
            try:
                self._makedirs(final.parent)
                tmp = final.parent / f"{TMP_PREFIX}{secrets.token_hex(8)}"
                written = self._write_tmp(tmp, src)
            except OSError as exc:
                raise self._fail(exc, f"put {self.url}/{key}") from exc
        try:
            if written != (size, sha):
                raise DigestMismatch(
                    f"{self.url}/{key}: source is {written[0]} bytes sha256 {written[1]}, "
                    f"caller said {size} bytes sha256 {sha}",
                    path=f"{self.url}/{key}",
                )
            try:
                os.link(tmp, final)
            except FileExistsError:
                found = self._info(key, final, hashed=True)
                if found is None:
                    raise StoreError(f"cannot put {self.url}/{key}: a directory of that name exists") from None
                return _same_or_conflict(self.url, key, size, sha, found)
            except OSError as exc:
                raise self._fail(exc, f"put {self.url}/{key}") from exc
        finally:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        fsync_dir(final.parent)
        return PutResult(key=key, size=size, sha256=sha, created=True)

    def _write_tmp(self, tmp: Path, src: BinaryIO) -> tuple[int, str]:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        h = hashlib.sha256()
        n = 0
        try:
            with os.fdopen(fd, "wb") as out:
                for block in _chunks(src):
                    h.update(block)
                    n += len(block)
                    out.write(block)
                out.flush()
                os.fsync(out.fileno())
        except BaseException:
            os.unlink(tmp)
            raise
        return n, h.hexdigest()

    def _makedirs(self, directory: Path) -> None:
        missing = []
        while not directory.is_dir():
            missing.append(directory)
            if directory.parent == directory:
                break
            directory = directory.parent
        for d in reversed(missing):
            try:
                os.mkdir(d, 0o700)
            except FileExistsError:
                if not d.is_dir():
                    raise StoreError(f"cannot create {d}: a file of that name exists") from None
                continue
            fsync_dir(d.parent)

    def _info(self, key: str, path: Path, *, hashed: bool) -> ObjectInfo | None:
        try:
            st = os.stat(path)
            if not stat.S_ISREG(st.st_mode):  # a directory of other keys, or something odd: no object
                return None
            digest = None
            if hashed:
                with open(path, "rb") as f:
                    digest = sha256_file(f)[1]
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise self._fail(exc, f"read {self.url}/{key}") from exc
        return ObjectInfo(key=key, size=st.st_size, sha256=digest, last_modified=st.st_mtime)

    def head(self, key: str) -> ObjectInfo | None:
        """Size, mtime and sha256 (by hashing the file) of ``key``, or None."""
        return self._info(key, self._path(key), hashed=True)

    def open(self, key: str) -> BinaryIO:
        path = self._path(key)
        try:
            # O_NONBLOCK: a FIFO in an object's place must not block the open.
            f = open(path, "rb", opener=lambda p, flags: os.open(p, flags | os.O_NONBLOCK))  # noqa: SIM115
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ObjectNotFound(f"no object {self.url}/{key}") from None
        except OSError as exc:
            raise self._fail(exc, f"open {self.url}/{key}") from exc
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            f.close()
            raise ObjectNotFound(f"no object {self.url}/{key}")
        os.set_blocking(f.fileno(), True)
        return f

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects whose key starts with ``prefix``, in key (code point) order, like S3."""
        p = _check_prefix(prefix)
        head = p.rpartition("/")[0]
        yield from self._walk(self.root / head if head else self.root, head, p)

    def _walk(self, directory: Path, rel: str, prefix: str) -> Iterator[ObjectInfo]:
        try:
            with os.scandir(directory) as it:
                entries = [(e.name + "/" if e.is_dir(follow_symlinks=False) else e.name, e) for e in it]
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:
            raise self._fail(exc, f"list {self.url}/{rel}") from exc
        for sort_name, entry in sorted(entries, key=lambda t: t[0]):
            if entry.name.startswith(TMP_PREFIX):
                continue
            key = f"{rel}/{entry.name}" if rel else entry.name
            if sort_name.endswith("/"):
                if (key + "/").startswith(prefix) or prefix.startswith(key + "/"):
                    yield from self._walk(Path(entry.path), key, prefix)
            elif key.startswith(prefix) and entry.is_file(follow_symlinks=False):
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                yield ObjectInfo(key=key, size=st.st_size, last_modified=st.st_mtime)

    def object_lock_enabled(self) -> bool:
        """A directory has no Object Lock."""
        return False

    def delete_many(self, keys: Sequence[str]) -> DeleteResult:
        """Unlink each key; absent keys count as deleted. Empty directories stay."""
        wanted = _unique(check_key(k) for k in keys)
        deleted: list[str] = []
        errors: list[dict[str, str]] = []
        dirs: set[Path] = set()
        for key in wanted:
            path = self.root / key
            try:
                os.unlink(path)
                dirs.add(path.parent)
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                pass
            except PermissionError as exc:
                errors.append({"key": key, "code": "AccessDenied", "message": exc.strerror or "permission denied"})
                continue
            except OSError as exc:
                code = errno.errorcode.get(exc.errno or 0, "OSError")
                errors.append({"key": key, "code": code, "message": exc.strerror or str(exc)})
                continue
            deleted.append(key)
        for d in dirs:
            fsync_dir(d)
        return DeleteResult(deleted=deleted, errors=errors, requests=0)
