"""How long the S3 store waits, against real servers: a silent endpoint, moto behind a proxy that stalls mid-publish,
and moto without the bucket. No mocks: the store's own boto3 client talks to real sockets."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from ml.config.publishing import StorageConfig
from ml.registry.s3_store import S3Store, worst_case_wait_s
from ml.registry.storage import open_store
from ml.registry.store import BucketNotFound, StoreUnreachable, is_refusal
from ml.registry.versions import PRODUCTION, Registry
from tests.s3_servers import S3Server, SilentServer, StallingProxy, aws_env, moto_server  # noqa: F401 (fixtures)

FAST = StorageConfig(connect_timeout_s=1, read_timeout_s=1, max_attempts=2)


def _files(tmp: Path) -> dict[str, Path]:
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "model.onnx").write_bytes(uuid.uuid4().bytes)
    (tmp / "report.md").write_text("# report\n")
    return {"model.onnx": tmp / "model.onnx", "report.md": tmp / "report.md"}


def test_default_limits_bound_a_request_and_reach_the_client(aws_env: None) -> None:  # noqa: F811
    cfg = StorageConfig()
    bound = worst_case_wait_s(cfg)
    c, r, n = cfg.connect_timeout_s, cfg.read_timeout_s, cfg.max_attempts
    print(f"default worst case per S3 request: {n} x ({c:g} + {r:g}) s + <= 3 s backoff = {bound:g} s")
    assert bound == 57 and bound < 60
    assert worst_case_wait_s(FAST) == 2 * (1 + 1) + 1
    store = open_store("s3://bucket/x", "http://127.0.0.1:1", FAST)
    assert isinstance(store, S3Store)
    conf = store.client.meta.config
    assert (conf.connect_timeout, conf.read_timeout) == (1, 1)
    assert conf.retries == {"total_max_attempts": 2, "mode": "standard"}
    assert open_store("s3://bucket/x", "http://127.0.0.1:1").client.meta.config.read_timeout == cfg.read_timeout_s


@pytest.mark.integration
def test_a_silent_endpoint_fails_the_production_read_quickly_naming_it(aws_env: None) -> None:  # noqa: F811
    server = SilentServer()
    try:
        registry = Registry(open_store("s3://bucket/registry", server.endpoint, FAST))
        start = time.monotonic()
        with pytest.raises(StoreUnreachable) as err:
            registry.get_alias("demo", PRODUCTION)  # what reach-store does first
        elapsed = time.monotonic() - start
    finally:
        server.close()
    print(f"silent endpoint, read_timeout_s=1 x max_attempts=2: failed after {elapsed:.2f} s")
    assert 2 <= elapsed < worst_case_wait_s(FAST) + 1 < 60
    assert server.accepted == 2  # botocore's two attempts, one connection each; nothing else retried
    message = str(err.value)
    assert f"S3 endpoint {server.endpoint} did not answer within 1 s (storage.read_timeout_s)" in message
    assert "bucket 'bucket'" in message and "models/demo/aliases/production.json" in message
    assert err.value.timed_out and not is_refusal(err.value)


@pytest.mark.integration
@pytest.mark.parametrize("stall_at", ["report.md", "metadata.json"])
def test_a_stall_mid_publish_leaves_production_and_lists_no_half_version(
    stall_at: str,
    moto_server: S3Server,  # noqa: F811
    aws_env: None,  # noqa: F811
    tmp_path: Path,
) -> None:
    bucket = f"vf-{uuid.uuid4().hex[:12]}"
    moto_server.client().create_bucket(Bucket=bucket)
    host, port = moto_server.endpoint.removeprefix("http://").split(":")
    proxy = StallingProxy((host, int(port)))
    try:
        registry = Registry(open_store(f"s3://{bucket}/registry", proxy.endpoint, FAST))
        v1 = registry.publish("demo", _files(tmp_path / "v1"), {})
        registry.promote("demo", v1, expected_version=None)  # through the proxy while it forwards
        store, written = registry.store, []
        put_file, put_bytes = store.put_file, store.put_bytes

        def stalling(put):
            def put_then_maybe_stall(key: str, what) -> None:
                if key.endswith(stall_at):
                    proxy.stall()  # the server stops answering before this write
                written.append(key)
                put(key, what)

            return put_then_maybe_stall

        store.put_file, store.put_bytes = stalling(put_file), stalling(put_bytes)
        start = time.monotonic()
        with pytest.raises(StoreUnreachable, match=f"S3 endpoint {proxy.endpoint} did not answer") as err:
            registry.publish("demo", _files(tmp_path / "v2"), {})
        elapsed = time.monotonic() - start
    finally:
        proxy.close()
    assert elapsed < worst_case_wait_s(FAST) + 1 and f"bucket {bucket!r}" in str(err.value)
    assert written[-1].endswith(stall_at) and written[0].endswith("model.onnx")
    direct = Registry(open_store(f"s3://{bucket}/registry", moto_server.endpoint, FAST))  # past the proxy
    half = written[0].split("/")[-2]
    assert direct.store.exists(f"models/demo/versions/{half}/model.onnx")  # uploaded before the stall ...
    assert direct.versions("demo") == [v1]  # ... but not listed
    assert direct.get_alias("demo", PRODUCTION)["version"] == v1


@pytest.mark.integration
def test_a_missing_bucket_is_named_with_its_endpoint(moto_server: S3Server, aws_env: None, tmp_path: Path) -> None:  # noqa: F811
    bucket = f"no-such-{uuid.uuid4().hex[:8]}"
    store = open_store(f"s3://{bucket}/models", moto_server.endpoint)
    expected = f"bucket '{bucket}' does not exist at {moto_server.endpoint}"
    for action in (
        lambda: Registry(store).get_alias("demo", PRODUCTION),  # reach-store
        lambda: store.list("models/"),
        lambda: store.put_file("models/x", _files(tmp_path)["report.md"]),  # s3transfer's S3UploadFailedError
        lambda: store.put_bytes("models/y", b"{}"),
    ):
        with pytest.raises(BucketNotFound, match=expected) as err:
            action()
        assert "NoSuchBucket" in str(err.value) and is_refusal(err.value)
