"""Artifact storage behind one small interface, for ``file://`` and ``s3://`` URIs.

Flows and the registry only see '/'-separated keys, so the same code runs on a laptop (``file://.visionflow``)
and against S3 or any S3-compatible server (``s3://bucket/prefix``).

``read_versioned`` / ``write_if`` are the compare-and-swap behind the registry's commit point (the alias):
- file://: read-compare-write under an exclusive ``flock`` on a lock file (the kernel drops it if its holder
  dies, so there is no stale lock to break); every write goes to a temp file in the same directory and is
  ``os.replace``-d, so readers never see a half-written object.
- s3://: ``put_object(IfMatch=etag | IfNoneMatch='*')`` where the server enforces it. Checked 2026-11: AWS S3
  and moto 5.2.5 answer 412 PreconditionFailed; ``rclone serve s3`` 1.75.2 accepts both headers and IGNORES
  them. So the store probes once and, where conditions are ignored, does read-compare-write under a lock made
  of plain puts and a listing: a writer puts an announcement under ``.locks/<key>/``, lists that folder, and
  goes ahead only if alone (else withdraws and retries after a random pause). If A's listing missed B, B
  announced after A, so B's listing sees A: mutual exclusion on any server with read-after-write consistent
  puts and listings (AWS since 2020, rclone over a directory). Announcements ``LOCK_STALE_S`` older than ours
  (server clock) were left by a crashed writer and are removed.

How long an S3 request may wait is bounded by ``storage.connect_timeout_s``, ``read_timeout_s`` and
``max_attempts`` (botocore's standard retry mode): a request to an endpoint that accepts connections and never
answers fails within ``worst_case_wait_s`` (57 s with the defaults: 3 x (3 + 15) s + at most 3 s of backoff), as
``StoreUnreachable``, naming the endpoint and the bucket. The bound is per request; it assumes a resolvable host
name (DNS is not under botocore's timeouts), and ``read_timeout_s`` bounds each socket read, not a transfer that
trickles. s3transfer's own download retries are off (``num_download_attempts=1``) so they do not multiply
botocore's, and a store task retried by Prefect is not retried after a timeout (tasks.registry.worth_retrying).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import shutil
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote, urlparse

import boto3
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError
from s3transfer.exceptions import RetriesExceededError

from ml.config.publishing import StorageConfig
from ml.core.files import atomic_write, sha256_bytes

LOCKS = ".locks/"  # reserved key prefix for locks and probes; never listed
LOCK_TIMEOUT_S = 10.0
LOCK_STALE_S = 30.0
_MISSING = ("404", "NoSuchKey", "NotFound")
# answers that a retry would only get again: wrong or missing credentials, no such bucket, no access
_REFUSALS = ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "NoSuchBucket", "AllAccessDisabled")


def worst_case_wait_s(limits: StorageConfig) -> float:
    """Upper bound on one S3 request's wall time against an endpoint that never answers: every attempt waits its
    full connect + read timeout, and before retry i (1-based) standard mode sleeps at most min(20, 2**(i-1)) s
    (that is the throttling scale; botocore 1.44 sleeps at most 0.05 x 2**(i-1) s after a timeout)."""
    backoff = sum(min(20.0, 2.0 ** (i - 1)) for i in range(1, limits.max_attempts))
    return limits.max_attempts * (limits.connect_timeout_s + limits.read_timeout_s) + backoff


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
    return isinstance(err, ClientError) and err.response.get("Error", {}).get("Code") in _REFUSALS


class ObjectNotFound(KeyError):
    """A key that does not exist; a KeyError so ``except KeyError`` callers keep working."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class ConflictError(RuntimeError):
    """A conditional write lost: the object changed since it was read (or its lock could not be taken)."""


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
    def list(self, prefix: str = "") -> list[str]: ...
    @abstractmethod
    def delete(self, key: str) -> None: ...
    @abstractmethod
    def url(self, key: str = "") -> str: ...
    @abstractmethod
    def read_versioned(self, key: str) -> tuple[bytes, str] | None: ...

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

    def list(self, prefix: str = "") -> list[str]:
        keys = []
        for dirpath, _, filenames in os.walk(self.root / prefix.rpartition("/")[0]):
            rel = Path(dirpath).relative_to(self.root).as_posix()
            for name in filenames:
                key = name if rel == "." else f"{rel}/{name}"
                temp = name.startswith(".") and name.endswith(".tmp")
                if key.startswith(prefix) and not temp and not key.startswith(LOCKS):
                    keys.append(key)
        return sorted(keys)

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


class S3Store(ArtifactStore):
    """Objects under ``s3://bucket/prefix``; see the module docstring for how ``write_if`` stays safe and how long
    a request may wait (``limits``; None: StorageConfig's defaults)."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        client: Any = None,
        limits: StorageConfig | None = None,
    ) -> None:
        self.bucket, self.prefix = bucket, (prefix.strip("/") + "/").lstrip("/")
        self.limits = limits or StorageConfig()
        config = Config(
            connect_timeout=self.limits.connect_timeout_s,
            read_timeout=self.limits.read_timeout_s,
            retries={"total_max_attempts": self.limits.max_attempts, "mode": "standard"},  # the first one included
        )
        self.client = client or boto3.client("s3", endpoint_url=endpoint_url, config=config)
        self._transfer = TransferConfig(num_download_attempts=1)  # botocore retries; s3transfer would multiply them
        self._conditional: bool | None = None

    @property
    def endpoint(self) -> str:
        return self.client.meta.endpoint_url

    @contextlib.contextmanager
    def _named_errors(self, action: str, key: str) -> Iterator[None]:
        """Turn botocore's timeouts, connection failures and NoSuchBucket into errors that name the endpoint, the
        bucket and the setting that bounded the wait."""
        try:
            yield
        except (BotoConnectionError, ReadTimeoutError, ConnectionClosedError, RetriesExceededError) as e:
            cause = e.last_exception if isinstance(e, RetriesExceededError) else e
            if not isinstance(cause, BotoConnectionError | ReadTimeoutError | ConnectionClosedError):
                raise
            where = f"while {action} s3://{self.bucket}/{key} (bucket {self.bucket!r})"
            limits = self.limits
            tries = f"{limits.max_attempts} attempt(s) (storage.max_attempts)"
            if isinstance(cause, ReadTimeoutError):
                lim = f"did not answer within {limits.read_timeout_s:g} s (storage.read_timeout_s)"
            elif isinstance(cause, ConnectTimeoutError):
                lim = f"did not accept a connection within {limits.connect_timeout_s:g} s (storage.connect_timeout_s)"
            else:
                lim = "could not be reached"
            timed_out = isinstance(cause, ReadTimeoutError | ConnectTimeoutError)
            raise StoreUnreachable(f"S3 endpoint {self.endpoint} {lim} {where}, {tries}: {cause}", timed_out) from e
        except (ClientError, S3UploadFailedError) as e:
            client_error = e if isinstance(e, ClientError) else e.__context__
            if isinstance(client_error, ClientError) and client_error.response["Error"]["Code"] == "NoSuchBucket":
                raise BucketNotFound(
                    f"bucket {self.bucket!r} does not exist at {self.endpoint} (NoSuchBucket, while {action} "
                    f"s3://{self.bucket}/{key})"
                ) from e
            raise

    def _k(self, key: str) -> str:
        return self.prefix + check_key(key)

    def _put(self, key: str, data: bytes, **conditions: str) -> str:
        with self._named_errors("writing", self._k(key)):
            return self.client.put_object(Bucket=self.bucket, Key=self._k(key), Body=data, **conditions)["ETag"]

    def put_file(self, key: str, path: str | Path) -> None:
        with self._named_errors("uploading", self._k(key)):
            self.client.upload_file(str(path), self.bucket, self._k(key), Config=self._transfer)

    def get_file(self, key: str, dest_path: str | Path) -> Path:
        def download(f: IO[bytes]) -> None:
            self.client.download_fileobj(self.bucket, self._k(key), f, Config=self._transfer)

        try:
            with self._named_errors("downloading", self._k(key)):
                return atomic_write(Path(dest_path), download)
        except ClientError as e:
            if e.response["Error"]["Code"] in _MISSING:
                raise self._missing(key) from None
            raise

    def exists(self, key: str) -> bool:
        return any(o["Key"] == self._k(key) for o in self._list_raw(self._k(key)))

    def _list_raw(self, full_prefix: str) -> list[dict[str, Any]]:
        with self._named_errors("listing", full_prefix):
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full_prefix)
            return [obj for page in pages for obj in page.get("Contents", [])]

    def list(self, prefix: str = "") -> list[str]:
        keys = (o["Key"][len(self.prefix) :] for o in self._list_raw(self.prefix + prefix))
        return sorted(k for k in keys if not k.startswith(LOCKS))

    def delete(self, key: str) -> None:
        self._delete_raw(self._k(key))

    def _delete_raw(self, full_key: str) -> None:
        with self._named_errors("deleting", full_key):
            self.client.delete_object(Bucket=self.bucket, Key=full_key)

    def url(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{self._k(key) if key else self.prefix}".rstrip("/")

    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        try:
            with self._named_errors("reading", self._k(key)):
                resp = self.client.get_object(Bucket=self.bucket, Key=self._k(key))
                return resp["Body"].read(), resp["ETag"]
        except ClientError as e:
            if e.response["Error"]["Code"] in _MISSING:
                return None
            raise

    @property
    def conditional_writes(self) -> bool:
        """Whether the server enforces both conditions the alias moves use, probed once on a fresh key: a second
        IfNoneMatch put and an IfMatch put with a stale ETag must each be refused with 412."""
        if self._conditional is None:
            probe = f"{self.prefix}{LOCKS}.probe-{uuid.uuid4().hex}"
            with self._cleanup(probe):
                self._conditional = all(
                    self._refused(probe, **cond) for cond in ({"IfNoneMatch": "*"}, {"IfMatch": '"stale"'})
                )
        return self._conditional

    @contextlib.contextmanager
    def _cleanup(self, full_key: str) -> Iterator[None]:
        """Delete `full_key` afterwards, unless the endpoint stopped answering: the delete would wait as long again
        (a lock announcement left behind goes stale after LOCK_STALE_S; a probe is never listed)."""
        try:
            yield
        except StoreUnreachable:
            raise
        except BaseException:
            self._delete_raw(full_key)
            raise
        self._delete_raw(full_key)

    def _refused(self, probe: str, **condition: str) -> bool:
        """Whether a conditional put over an existing `probe` is refused with 412 (any other refusal: do not rely
        on conditions)."""
        with self._named_errors("probing conditional writes at", probe):
            self.client.put_object(Bucket=self.bucket, Key=probe, Body=b"")
            try:
                self.client.put_object(Bucket=self.bucket, Key=probe, Body=b"", **condition)
            except ClientError as e:
                if e.response["Error"]["Code"] == "NoSuchBucket":
                    raise
                return e.response["Error"]["Code"] == "PreconditionFailed"
            return False

    def write_if(self, key: str, data: bytes, expected_token: str | None) -> str:
        if not self.conditional_writes:
            return super().write_if(key, data, expected_token)  # read-compare-write under _lock
        cond = {"IfNoneMatch": "*"} if expected_token is None else {"IfMatch": expected_token}
        try:
            return self._put(key, data, **cond)
        except ClientError as e:
            if e.response["Error"]["Code"] in ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey"):
                raise ConflictError(f"{self.url(key)} changed since read (expected token {expected_token})") from e
            raise

    @contextlib.contextmanager
    def _lock(self, key: str) -> Iterator[None]:
        folder = f"{self.prefix}{LOCKS}{check_key(key)}/"
        mine = folder + uuid.uuid4().hex
        deadline = time.monotonic() + LOCK_TIMEOUT_S
        while True:
            with self._named_errors("locking", mine):
                self.client.put_object(Bucket=self.bucket, Key=mine, Body=b"")
            seen = {o["Key"]: o["LastModified"] for o in self._list_raw(folder)}
            stale = [k for k in seen if mine in seen and (seen[mine] - seen[k]).total_seconds() > LOCK_STALE_S]
            for k in stale:
                self._delete_raw(k)
            if set(seen) - set(stale) == {mine}:
                break
            self._delete_raw(mine)
            if time.monotonic() > deadline:
                raise ConflictError(f"could not lock {self.url(key)} within {LOCK_TIMEOUT_S}s")
            time.sleep(random.uniform(0.01, 0.1))
        with self._cleanup(mine):
            yield


def open_store(uri: str, endpoint_url: str | None = None, limits: StorageConfig | None = None) -> ArtifactStore:
    """``file://.visionflow`` (relative to cwd), ``file:///abs`` or ``s3://bucket/prefix``.

    For S3, ``endpoint_url`` wins; otherwise boto3 itself reads AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL, and region
    and credentials from the standard AWS environment variables and profiles. ``limits`` (a StorageConfig, say)
    bounds each request's wait; None: StorageConfig's defaults.
    """
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        path = unquote(("" if parsed.netloc == "localhost" else parsed.netloc) + parsed.path)
        if not path:
            raise ValueError(f"store URI {uri!r} names no directory")
        return FileStore(path)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ValueError(f"store URI {uri!r} names no bucket")
        return S3Store(parsed.netloc, unquote(parsed.path), endpoint_url=endpoint_url, limits=limits)
    raise ValueError(f"unsupported store URI {uri!r}: use file://PATH or s3://BUCKET[/PREFIX]")
