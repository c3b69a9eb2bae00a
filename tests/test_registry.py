"""ArtifactStore and Registry behaviour, on file:// and on real S3 servers (moto over HTTP, rclone serve s3)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ml.core.files import sha256_bytes
from ml.registry.file_store import FileStore
from ml.registry.s3_store import S3Store
from ml.registry.storage import open_store
from ml.registry.store import ConflictError, ObjectNotFound
from ml.registry.versions import PRODUCTION, AliasConflict, Registry, RegistryError, VersionNotFound
from tests.s3_servers import S3Server, aws_env, moto_server, rclone_s3_server  # noqa: F401 (fixtures)


@pytest.fixture
def registry(store_uri: str) -> Registry:
    return Registry(open_store(store_uri))


def _files(tmp: Path, onnx: bytes = b"fake-onnx-bytes") -> dict[str, Path]:
    (tmp / "plots").mkdir(parents=True, exist_ok=True)
    contents = {"model.onnx": onnx, "plots/confusion.png": b"\x89PNG fake", "report.md": b"# report\n"}
    for name, data in contents.items():
        (tmp / name).write_bytes(data)
    return {name: tmp / name for name in contents}


def _race(registries: list[Registry], model: str, targets: list[str], **kwargs) -> list[str]:
    """All registries read the alias, then all try to move it; returns 'won' / 'conflict' per registry.

    Each store is held right after its first read of the alias until every one has read, so all of them act
    on the same token and only the store's compare-and-swap can tell them apart. Later reads (the one inside a
    locked read-compare-write) are slowed down, so that a missing lock would let several writers through.
    """
    all_read = threading.Barrier(len(registries))
    for reg in registries:
        real_read, held = reg.store.read_versioned, []

        def read_then_wait(key: str, real_read=real_read, held=held):
            found = real_read(key)
            if key.endswith(f"aliases/{PRODUCTION}.json"):
                if held:
                    time.sleep(0.05)
                else:
                    held.append(key)
                    all_read.wait(timeout=10)
            return found

        reg.store.read_versioned = read_then_wait

    def attempt(i: int) -> str:
        try:
            registries[i].set_alias(model, PRODUCTION, targets[i], **kwargs)
            return "won"
        except AliasConflict:
            return "conflict"

    with ThreadPoolExecutor(len(registries)) as pool:
        return list(pool.map(attempt, range(len(registries))))


def test_store_roundtrip(store_uri: str, tmp_path: Path) -> None:
    store = open_store(store_uri)
    store.put_bytes("a/b/c.bin", b"abc")
    store.put_bytes("a/top.txt", b"top")
    store.put_bytes("z.txt", b"z")
    store.put_json("a/b/d.json", {"x": [1, 2]})
    src = tmp_path / "src.bin"
    src.write_bytes(b"\x00" * 3000)
    store.put_file("files/src.bin", src)

    assert store.get_bytes("a/b/c.bin") == b"abc"
    assert store.get_json("a/b/d.json") == {"x": [1, 2]}
    dest = store.get_file("files/src.bin", tmp_path / "out" / "deep" / "copy.bin")
    assert dest.read_bytes() == src.read_bytes()
    assert store.exists("a/top.txt") and not store.exists("a/nope.txt") and not store.exists("a/b")
    assert store.list("a/") == ["a/b/c.bin", "a/b/d.json", "a/top.txt"]
    assert store.list() == ["a/b/c.bin", "a/b/d.json", "a/top.txt", "files/src.bin", "z.txt"]
    assert store.list("missing/") == []
    store.put_bytes("a/top.txt", b"overwritten")
    assert store.get_bytes("a/top.txt") == b"overwritten"
    store.delete("a/top.txt")
    assert not store.exists("a/top.txt")
    assert store.url("a/b/c.bin") == store_uri.rstrip("/") + "/a/b/c.bin"
    with pytest.raises(ValueError, match="invalid key"):
        store.put_bytes("../escape", b"")


def test_missing_key_error_names_the_uri(store_uri: str, tmp_path: Path) -> None:
    store = open_store(store_uri)
    uri = store.url("no/such.bin")
    with pytest.raises(ObjectNotFound, match=uri) as err:
        store.get_bytes("no/such.bin")
    assert isinstance(err.value, KeyError)
    with pytest.raises(ObjectNotFound, match=uri):
        store.get_file("no/such.bin", tmp_path / "x")
    assert not (tmp_path / "x").exists()
    assert store.read_versioned("no/such.bin") is None


def test_write_if_compares_tokens(store_uri: str) -> None:
    store = open_store(store_uri)
    token = store.write_if("alias.json", b"v1", None)
    with pytest.raises(ConflictError, match="alias.json"):
        store.write_if("alias.json", b"again", None)  # must not exist
    assert store.read_versioned("alias.json") == (b"v1", token)
    token2 = store.write_if("alias.json", b"v2", token)
    with pytest.raises(ConflictError):
        store.write_if("alias.json", b"stale", token)  # token moved on
    assert store.read_versioned("alias.json") == (b"v2", token2)
    with pytest.raises(ConflictError):
        store.write_if("other.json", b"x", token2)  # expected to exist, does not
    assert store.list() == ["alias.json"]  # no lock or probe objects left behind


def test_publish_lists_complete_version(registry: Registry, tmp_path: Path) -> None:
    files = _files(tmp_path / "out")
    version = registry.publish("clf", files, {"metrics": {"acc": 0.9}})
    assert registry.versions("clf") == [version]
    assert registry.models() == ["clf"]
    meta = registry.metadata("clf", version)
    assert meta["version"] == version and meta["metrics"] == {"acc": 0.9}
    assert meta["onnx_sha256"] == sha256_bytes(b"fake-onnx-bytes")
    assert meta["files"] == ["model.onnx", "plots/confusion.png", "report.md"]
    assert meta["created_at"].endswith("+00:00")
    got = registry.fetch("clf", version, "plots/confusion.png", tmp_path / "back" / "c.png")
    assert got.read_bytes() == files["plots/confusion.png"].read_bytes()
    with pytest.raises(KeyError, match="no file 'nope.png'"):
        registry.fetch("clf", version, "nope.png", tmp_path / "n.png")
    second = registry.publish("clf", _files(tmp_path / "out2", b"other"), {})
    assert registry.versions("clf") == [version, second]


def test_interrupted_publish_is_not_a_version(registry: Registry, tmp_path: Path) -> None:
    done = registry.publish("clf", _files(tmp_path / "a"), {})
    broken = registry.new_version_id()  # files uploaded, crash before metadata.json
    for name, path in _files(tmp_path / "b").items():
        registry.store.put_file(f"models/clf/versions/{broken}/{name}", path)
    assert registry.versions("clf") == [done]
    with pytest.raises(VersionNotFound, match=broken):
        registry.metadata("clf", broken)


def test_set_alias_refuses_incomplete_version(registry: Registry, tmp_path: Path) -> None:
    registry.publish("clf", _files(tmp_path), {})
    with pytest.raises(ValueError, match=r"model 'clf' has no complete version 'v-missing'.*models/clf/versions"):
        registry.set_alias("clf", "staging", "v-missing")
    assert registry.get_alias("clf", "staging") is None


def test_a_file_lock_holder_that_dies_leaves_no_lock_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a writer killed inside its read-compare-write: the kernel drops its flock, so the next writer goes ahead
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[1],
    )
    assert holder.stdout.readline().strip() == "locked"
    store = FileStore(tmp_path)
    monkeypatch.setattr("ml.registry.file_store.LOCK_TIMEOUT_S", 0.3)
    with pytest.raises(ConflictError, match="held for more than"), store._lock("alias.json"):  # alive: it holds it
        pass
    holder.kill()
    holder.wait()
    assert store.write_if("alias.json", b"v1", None)  # dead: free at once, no stale-lock wait


HOLD_LOCK = """
import sys, time
from ml.registry.file_store import FileStore
with FileStore(sys.argv[1])._lock("alias.json"):
    print("locked", flush=True)
    time.sleep(600)
"""


def test_alias_conflict_when_token_changed(store_uri: str, tmp_path: Path) -> None:
    """Two registries read the alias, both try to move it: the compare-and-swap lets exactly one win."""
    first = Registry(open_store(store_uri))
    v1, v2, v3 = (first.publish("clf", _files(tmp_path / str(i), bytes([i])), {}) for i in range(3))
    first.promote("clf", v1)
    regs = [Registry(open_store(store_uri)), Registry(open_store(store_uri))]
    assert sorted(_race(regs, "clf", [v2, v3])) == ["conflict", "won"]
    alias = first.get_alias("clf", PRODUCTION)
    assert alias["version"] in (v2, v3) and alias["previous"] == v1


def test_expected_version_guards_stale_reads(registry: Registry, tmp_path: Path) -> None:
    v1, v2 = (registry.publish("clf", _files(tmp_path / str(i), bytes([i])), {}) for i in range(2))
    registry.promote("clf", v1, expected_version=None)
    with pytest.raises(AliasConflict, match=f"clf@production points at {v1}"):
        registry.promote("clf", v2, expected_version=None)
    assert registry.promote("clf", v2, expected_version=v1)["version"] == v2


def test_promote_and_rollback(registry: Registry, tmp_path: Path) -> None:
    v1, v2, v3 = (registry.publish("clf", _files(tmp_path / str(i), bytes([i])), {}) for i in range(3))
    assert registry.get_alias("clf", PRODUCTION) is None
    with pytest.raises(RegistryError, match="no production alias"):
        registry.rollback("clf")
    assert registry.promote("clf", v1)["previous"] is None
    with pytest.raises(RegistryError, match="no previous version"):
        registry.rollback("clf")
    moved = registry.promote("clf", v2)
    assert moved == registry.get_alias("clf", PRODUCTION)
    assert moved["previous"] == v1 and moved["sha256"] == registry.metadata("clf", v2)["onnx_sha256"]
    assert registry.promote("clf", v2) == moved  # already there: no-op, history kept
    back = registry.rollback("clf")
    assert (back["version"], back["previous"]) == (v1, v2)
    assert registry.rollback("clf", v3)["version"] == v3


def test_successive_rollbacks_go_further_back_never_forward(registry: Registry, tmp_path: Path) -> None:
    v1, v2, v3, v4 = (registry.publish("clf", _files(tmp_path / str(i), bytes([i])), {}) for i in range(4))
    for version in (v1, v2, v3):
        registry.promote("clf", version)
    back = registry.rollback("clf")
    assert (back["version"], back["rolled_back_from"]) == (v2, v3)
    assert registry.rollback("clf")["version"] == v1  # not forward to v3, the version just rolled back from
    with pytest.raises(RegistryError, match=f"'clf': production \\({v1}\\) has no previous version.*from {v2}"):
        registry.rollback("clf")
    assert registry.get_alias("clf", PRODUCTION)["version"] == v1
    registry.promote("clf", v4)
    assert registry.rollback("clf")["version"] == v1  # a promotion records the version it replaced again


def test_rollback_onto_gate_failed_version_needs_force(registry: Registry, tmp_path: Path) -> None:
    failed = {"gate": {"passed": False, "verdict": "failed (1/2 rules)"}}
    v1 = registry.publish("clf", _files(tmp_path / "1", b"1"), failed)
    v2 = registry.publish("clf", _files(tmp_path / "2", b"2"), {"gate": {"passed": True, "verdict": "passed"}})
    registry.promote("clf", v1)  # the registry itself does not gate promotions; flows.registry promote does
    registry.promote("clf", v2)
    with pytest.raises(RegistryError, match=f"clf {v1}: its gate failed \\(1/2 rules\\); pass --force to roll back"):
        registry.rollback("clf")
    with pytest.raises(RegistryError, match="its gate failed"):
        registry.rollback("clf", v1)
    assert registry.get_alias("clf", PRODUCTION)["version"] == v2
    assert registry.rollback("clf", force=True)["version"] == v1


def test_version_ids_sort_by_creation() -> None:
    ids = [Registry.new_version_id() for _ in range(200)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert ids[0][8] == "T" and "Z-" in ids[0]


def test_open_store_uris(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    rel = open_store("file://.visionflow")
    assert isinstance(rel, FileStore) and rel.root == tmp_path / ".visionflow"
    assert open_store(f"file://{tmp_path}/abs").root == tmp_path / "abs"
    s3 = open_store("s3://bucket/some/prefix/", endpoint_url="http://127.0.0.1:1")
    assert isinstance(s3, S3Store) and s3.url("k") == "s3://bucket/some/prefix/k"
    with pytest.raises(ValueError, match="gs://bucket/x"):
        open_store("gs://bucket/x")


@pytest.mark.integration
def test_moto_enforces_conditions_and_lock_fallback_is_safe(moto_server: S3Server, aws_env: None, tmp_path: Path):  # noqa: F811
    bucket = f"vf-{uuid.uuid4().hex[:12]}"
    moto_server.client().create_bucket(Bucket=bucket)
    store_uri = f"s3://{bucket}/prefix"
    store = open_store(store_uri, endpoint_url=moto_server.endpoint)
    assert isinstance(store, S3Store) and store.conditional_writes  # moto 5.2.5 answers 412
    v1, v2 = (Registry(store).publish("clf", _files(tmp_path / str(i), bytes([i])), {}) for i in range(2))
    Registry(store).promote("clf", v1)
    regs = [Registry(open_store(store_uri, endpoint_url=moto_server.endpoint)) for _ in range(4)]
    for reg in regs:
        reg.store._conditional = False  # as on a server that ignores IfMatch: the lock path must hold too
    assert sorted(_race(regs, "clf", [v2] * 4)) == ["conflict"] * 3 + ["won"]
    assert store._list_raw(store.prefix) and not store._list_raw(store.prefix + ".locks/")  # locks released


@pytest.mark.integration
def test_rclone_serve_s3_publish_promote(rclone_s3_server: S3Server, aws_env: None, tmp_path: Path):  # noqa: F811
    """A disk-persisting server that IGNORES IfMatch/IfNoneMatch: the store must notice and lock instead."""
    uri = "s3://bucket/registry"
    store = open_store(uri, endpoint_url=rclone_s3_server.endpoint)
    assert isinstance(store, S3Store) and store.conditional_writes is False
    reg = Registry(store)
    v1, v2 = (reg.publish("seg", _files(tmp_path / str(i), bytes([i])), {"run": i}) for i in range(2))
    assert reg.versions("seg") == [v1, v2] and reg.metadata("seg", v2)["run"] == 1
    assert reg.promote("seg", v1)["version"] == v1
    on_disk = rclone_s3_server.data_dir / "bucket" / "registry" / "models" / "seg"
    assert json.loads((on_disk / "aliases" / "production.json").read_text())["version"] == v1
    assert (on_disk / "versions" / v2 / "metadata.json").is_file()

    token = store.write_if("scratch/cas.json", b"1", None)
    store.put_bytes("scratch/cas.json", b"2")  # someone else wrote it since
    with pytest.raises(ConflictError):
        store.write_if("scratch/cas.json", b"3", token)
    with pytest.raises(ConflictError):
        store.write_if("scratch/cas.json", b"3", None)
    assert store.get_bytes("scratch/cas.json") == b"2"

    regs = [Registry(open_store(uri, endpoint_url=rclone_s3_server.endpoint)) for _ in range(4)]
    assert sorted(_race(regs, "seg", [v2] * 4)) == ["conflict"] * 3 + ["won"]
    assert reg.get_alias("seg", PRODUCTION)["version"] == v2
    assert not store._list_raw(store.prefix + ".locks/")  # locks released
