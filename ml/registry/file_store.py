"""``file://`` stores: objects as files, written atomically, compare-and-swap under ``flock`` (ml.registry.storage)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from ml.core.files import atomic_write, sha256_bytes
from ml.registry.store import (
    LOCK_TIMEOUT_S,
    LOCKS,
    ArtifactStore,
    ConflictError,
    StoredObject,
    check_key,
)


class FileStore(ArtifactStore):
    """Objects are files under ``root``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _put(self, key: str, data: bytes) -> str:
        atomic_write(self._path(key), lambda f: f.write(data))
        return sha256_bytes(data)

    def put_file(self, key: str, path: str | Path) -> None:
        with open(path, "rb") as src:
            atomic_write(self._path(key), lambda f: shutil.copyfileobj(src, f, 1 << 20))

    def get_file(self, key: str, dest_path: str | Path) -> Path:
        try:
            with open(self._path(key), "rb") as src:
                return atomic_write(Path(dest_path), lambda f: shutil.copyfileobj(src, f, 1 << 20))
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise self._missing(key) from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list_objects(self, prefix: str = "") -> dict[str, StoredObject]:
        found = {}
        for dirpath, _, filenames in os.walk(self.root / prefix.rpartition("/")[0]):
            rel = Path(dirpath).relative_to(self.root).as_posix()
            for name in filenames:
                key = name if rel == "." else f"{rel}/{name}"
                temp = name.startswith(".") and name.endswith(".tmp")
                if key.startswith(prefix) and not temp and not key.startswith(LOCKS):
                    with contextlib.suppress(FileNotFoundError):  # deleted while listing
                        st = (Path(dirpath) / name).stat()
                        found[key] = StoredObject(st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))
        return found

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def url(self, key: str = "") -> str:
        return (self._path(key) if key else self.root).as_uri()

    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        try:
            data = self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        return data, sha256_bytes(data)

    @contextlib.contextmanager
    def _lock(self, key: str) -> Iterator[None]:
        lock = self.root / LOCKS / (check_key(key) + ".lock")
        lock.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + LOCK_TIMEOUT_S
        with open(lock, "a") as f:  # closing it releases the lock; so does the kernel when its holder dies
            while True:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise ConflictError(f"lock {lock} held for more than {LOCK_TIMEOUT_S}s") from None
                    time.sleep(random.uniform(0.002, 0.02))
            yield
