"""The interface every artifact store implements, its key rules and its errors (ml.registry.storage opens one)."""

from __future__ import annotations

import contextlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from botocore.exceptions import (
    ClientError,
    NoCredentialsError,
    PartialCredentialsError,
)

LOCKS = ".locks/"  # reserved key prefix for locks and probes; never listed


LOCK_TIMEOUT_S = 10.0


LOCK_STALE_S = 30.0


MISSING_CODES = ("404", "NoSuchKey", "NotFound")


# answers that a retry would only get again: wrong or missing credentials, no such bucket, no access
REFUSAL_CODES = ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "NoSuchBucket", "AllAccessDisabled")


class StoreError(RuntimeError):
    """A store that cannot be used as configured (endpoint silent or unreachable, bucket missing)."""


class StoreUnreachable(StoreError):
    """The S3 endpoint did not answer (``timed_out``) or refused the connection, after botocore's attempts."""

    def __init__(self, message: str, timed_out: bool) -> None:
        super().__init__(message)
        self.timed_out = timed_out


class BucketNotFound(StoreError):
    """The bucket does not exist at the endpoint: a refusal, retrying gets it again."""


def is_refusal(err: BaseException) -> bool:
    """Whether a storage error will repeat on retry (credentials, bucket, access), unlike a timeout or a 5xx."""
    if isinstance(err, NoCredentialsError | PartialCredentialsError | BucketNotFound):
        return True
    return isinstance(err, ClientError) and err.response.get("Error", {}).get("Code") in REFUSAL_CODES


class ObjectNotFound(KeyError):
    """A key that does not exist; a KeyError so ``except KeyError`` callers keep working."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class ConflictError(RuntimeError):
    """A conditional write lost: the object changed since it was read (or its lock could not be taken)."""


@dataclass(frozen=True)
class StoredObject:
    """What a listing knows of an object: retention (ml.registry.retention) sizes and dates deletions by it."""

    size: int  # bytes
    modified: datetime  # last written (UTC)


def check_key(key: str) -> str:
    if not key or "\\" in key or key.startswith(LOCKS) or any(p in ("", ".", "..") for p in key.split("/")):
        raise ValueError(f"invalid key {key!r}: want a relative '/'-separated path without '.', '..' or '.locks/'")
    return key


class ArtifactStore(ABC):
    """Bytes and files under keys. Subclasses supply the primitives; reads, JSON and the locked CAS are shared."""

    @abstractmethod
    def _put(self, key: str, data: bytes) -> str: ...  # returns the new version token
    @abstractmethod
    def _lock(self, key: str) -> contextlib.AbstractContextManager[None]: ...
    @abstractmethod
    def put_file(self, key: str, path: str | Path) -> None: ...
    @abstractmethod
    def get_file(self, key: str, dest_path: str | Path) -> Path: ...
    @abstractmethod
    def exists(self, key: str) -> bool: ...
    @abstractmethod
    def list_objects(self, prefix: str = "") -> dict[str, StoredObject]: ...  # keys from `prefix`, locks left out
    @abstractmethod
    def delete(self, key: str) -> None: ...
    @abstractmethod
    def url(self, key: str = "") -> str: ...
    @abstractmethod
    def read_versioned(self, key: str) -> tuple[bytes, str] | None: ...

    def list(self, prefix: str = "") -> list[str]:
        """The keys starting with `prefix` (a plain string prefix, not only whole folders), sorted."""
        return sorted(self.list_objects(prefix))

    def put_bytes(self, key: str, data: bytes) -> None:
        self._put(key, data)

    def get_bytes(self, key: str) -> bytes:
        found = self.read_versioned(key)
        if found is None:
            raise self._missing(key)
        return found[0]

    def write_if(self, key: str, data: bytes, expected_token: str | None) -> str:
        """Write only if the key's token is still ``expected_token`` (None: key must not exist); new token."""
        with self._lock(key):
            current = self.read_versioned(key)
            token = current[1] if current else None
            if token != expected_token:
                raise ConflictError(f"{self.url(key)} changed: expected token {expected_token}, found {token}")
            return self._put(key, data)

    def put_json(self, key: str, obj: Any) -> None:
        self.put_bytes(key, json.dumps(obj, indent=2, sort_keys=True).encode())

    def get_json(self, key: str) -> Any:
        return json.loads(self.get_bytes(key))

    def _missing(self, key: str) -> ObjectNotFound:
        return ObjectNotFound(f"no object at {self.url(key)}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url()!r})"
