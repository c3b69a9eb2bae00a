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

from urllib.parse import unquote, urlparse

from ml.config.publishing import StorageConfig
from ml.registry.file_store import FileStore
from ml.registry.s3_store import S3Store
from ml.registry.store import ArtifactStore


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
