"""``s3://`` stores on AWS or any S3-compatible server, with bounded waits (ml.registry.storage)."""

from __future__ import annotations

import contextlib
import random
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import boto3
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    ReadTimeoutError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError
from s3transfer.exceptions import RetriesExceededError

from ml.config.publishing import StorageConfig
from ml.core.files import atomic_write
from ml.registry.store import (
    LOCK_STALE_S,
    LOCK_TIMEOUT_S,
    LOCKS,
    MISSING_CODES,
    ArtifactStore,
    BucketNotFound,
    ConflictError,
    StoredObject,
    StoreUnreachable,
    check_key,
)


def worst_case_wait_s(limits: StorageConfig) -> float:
    """Upper bound on one S3 request's wall time against an endpoint that never answers: every attempt waits its
    full connect + read timeout, and before retry i (1-based) standard mode sleeps at most min(20, 2**(i-1)) s
    (that is the throttling scale; botocore 1.44 sleeps at most 0.05 x 2**(i-1) s after a timeout)."""
    backoff = sum(min(20.0, 2.0 ** (i - 1)) for i in range(1, limits.max_attempts))
    return limits.max_attempts * (limits.connect_timeout_s + limits.read_timeout_s) + backoff


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
            if e.response["Error"]["Code"] in MISSING_CODES:
                raise self._missing(key) from None
            raise

    def exists(self, key: str) -> bool:
        return any(o["Key"] == self._k(key) for o in self._list_raw(self._k(key)))

    def _list_raw(self, full_prefix: str) -> list[dict[str, Any]]:
        with self._named_errors("listing", full_prefix):
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full_prefix)
            return [obj for page in pages for obj in page.get("Contents", [])]

    def list_objects(self, prefix: str = "") -> dict[str, StoredObject]:
        found = {o["Key"][len(self.prefix) :]: o for o in self._list_raw(self.prefix + prefix)}
        return {k: StoredObject(o["Size"], o["LastModified"]) for k, o in found.items() if not k.startswith(LOCKS)}

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
            if e.response["Error"]["Code"] in MISSING_CODES:
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
