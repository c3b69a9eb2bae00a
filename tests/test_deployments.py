"""prefect.yaml on a real Prefect server: `make server`, `make deploy`, a CLI trigger of `retrain/demo` that a
worker runs, the registry gets the version, the UI lists the run; a run whose worker is killed is marked Crashed.

    .venv/bin/pytest -q tests/test_deployments.py      # ~5 min: a server, tiny retrains, a dead worker, a browser

Everything started here (server, worker, the flow run's process) is stopped at the end, even on failure.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psutil
import pytest
import yaml
from PIL import Image
from prefect.exceptions import ParameterTypeError
from prefect.utilities.callables import parameter_schema

from flows.evaluate import evaluate
from flows.experiment import experiment
from flows.gc import gc
from flows.import_labels import import_labels
from flows.monitor import monitor
from flows.retrain import retrain
from flows.score import main as score_main
from flows.score import score
from flows.select_for_labeling import select_for_labeling
from flows.tune import tune
from flows.validate_data import validate_data_flow
from ml.config.run import PRESET_DIR, load_config
from ml.registry.storage import open_store
from ml.registry.versions import Registry
from tasks.gpus import TRAINING_LIMIT
from tests.conftest import Receiver, tiny_overrides
from tests.prefect_server import FINAL, MAKE, PREFECT, REPO, Server, serving
from tests.prefect_server import kill_group as _kill_group
from tests.prefect_server import run as _run
from tests.prefect_server import started as _started
from tests.prefect_server import tail as _tail

CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)


@dataclass
class DemoRun:
    id: str
    name: str
    state: str
    store: str
    worker_log: Path


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    """`make server` on a free loopback port, with its own PREFECT_HOME (SQLite) under tmp."""
    with serving(tmp_path_factory.mktemp("prefect")) as srv:
        yield srv


@pytest.fixture(scope="module")
def deployed(server: Server) -> dict:
    """`make deploy`: prefect.yaml's deployments and the automations."""
    env = server.env | {"VISIONFLOW_WEBHOOK_URL": "http://127.0.0.1:9/never-called"}
    _run([*MAKE, "deploy"], env)
    return server.api.get("/deployments/name/retrain/demo").raise_for_status().json()


@pytest.fixture(scope="module")
def demo_run(server: Server, deployed: dict, tmp_path_factory) -> DemoRun:
    """`prefect deployment run 'retrain/demo'` with the demo shrunk to seconds, run by a --run-once worker."""
    tmp = tmp_path_factory.mktemp("demo-run")
    overrides = tiny_overrides(tmp, **{"train.epochs": 1, "train.device": "cpu"})
    trigger = [PREFECT, "deployment", "run", "retrain/demo", "--param", f"overrides={json.dumps(overrides)}"]
    out = _run(trigger, server.env)
    run_id = re.search(r"UUID: ([0-9a-f-]{36})", out).group(1)
    log = tmp / "worker.log"
    with _started([PREFECT, "worker", "start", "--pool", "visionflow", "--run-once"], server.env, log):
        deadline = time.monotonic() + 150
        while (run := server.api.get(f"/flow_runs/{run_id}").json())["state"]["type"] not in FINAL:
            assert time.monotonic() < deadline, f"flow run not finished after 150 s:\n{_tail(log)}"
            time.sleep(1)
    return DemoRun(run_id, run["name"], run["state"]["type"], overrides["storage.uri"], log)


def test_prefect_yaml_has_a_nightly_retrain_per_preset():
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    retrain = {d["name"]: d for d in spec["deployments"] if d["entrypoint"] == "flows/retrain.py:retrain"}
    assert set(retrain) == {p.stem for p in PRESET_DIR.glob("*.yaml")}, "prefect.yaml: one retrain per preset"
    for name, d in retrain.items():
        assert d["parameters"]["preset"] == name
        assert [(s["cron"], s["timezone"]) for s in d["schedules"]] == [("0 2 * * *", "UTC")]
        assert d["concurrency_limit"]["limit"] == 1
        assert d["work_pool"]["name"] == "visionflow"


def test_prefect_yaml_monitors_every_classifier_and_labels_every_model_weekly():
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    by_flow: dict[str, dict[str, dict]] = {}
    for d in spec["deployments"]:
        by_flow.setdefault(d["entrypoint"], {})[d["name"]] = d
    presets = {p.stem: load_config(p.stem) for p in PRESET_DIR.glob("*.yaml")}
    classifiers = {name for name, cfg in presets.items() if cfg.model.task == "classify"}
    monitors = by_flow["flows/monitor.py:monitor"]
    assert set(monitors) == classifiers and all(d["parameters"]["model"] == n for n, d in monitors.items())
    labeling = by_flow["flows/select_for_labeling.py:select_for_labeling"]
    assert set(labeling) == set(presets)
    for name, d in labeling.items():
        assert d["parameters"] == {"model": name, "pool": f".visionflow/pool/{name}"}
        assert [s["cron"] for s in d["schedules"]] == ["0 4 * * 1"]  # Mondays
    imports = by_flow["flows/import_labels.py:import_labels"]
    assert set(imports) == set(labeling)
    for name, d in imports.items():
        assert d["parameters"] == {"model": name}
        assert [s["cron"] for s in d["schedules"]] == ["0 1 * * 0"]  # Sundays, before the 02:00 retrain


def test_prefect_yaml_runs_retention_nightly_per_preset_after_the_retrains():
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    gcs = {d["name"]: d for d in spec["deployments"] if d["entrypoint"] == "flows/gc.py:gc"}
    assert set(gcs) == {p.stem for p in PRESET_DIR.glob("*.yaml")}
    for name, d in gcs.items():
        assert d["parameters"] == {"preset": name, "overrides": {}}
        assert [s["cron"] for s in d["schedules"]] == ["0 5 * * *"]  # after retrain (2), monitor (3), labeling (4)


def test_prefect_yaml_has_an_unscheduled_tune_per_preset_with_a_search_space():
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    tunes = {d["name"]: d for d in spec["deployments"] if d["entrypoint"] == "flows/tune.py:tune"}
    assert set(tunes) == {p.stem for p in PRESET_DIR.glob("*.yaml") if load_config(p.stem).tune.params}
    for name, d in tunes.items():
        assert d["parameters"]["preset"] == name and not d.get("schedules")  # run from the CLI or the UI


FLOWS = (
    retrain,
    validate_data_flow,
    experiment,
    evaluate,
    score,
    monitor,
    select_for_labeling,
    import_labels,
    gc,
    tune,
)


@pytest.mark.parametrize("flow", FLOWS, ids=lambda f: f.name)
def test_every_flow_parameter_is_described_for_the_ui_form(flow):
    props = parameter_schema(flow).model_dump()["properties"]
    assert props and all(p.get("description") for p in props.values()), props


@pytest.mark.usefixtures("prefect_harness")
def test_bad_flow_parameters_fail_before_any_work(tmp_path):
    with pytest.raises(ParameterTypeError, match="preset"):
        retrain("no-such-preset")
    with pytest.raises(ParameterTypeError, match="window"):
        monitor("demo", f"file://{tmp_path}", window="7 days")
    with pytest.raises(ParameterTypeError, match="store"):
        score("demo", str(tmp_path), store=str(tmp_path))  # a path, not file://
    for bad in (["--store", str(tmp_path)], ["--endpoint-url", "localhost:9000"]):  # the CLI: exit 2, as argparse
        with pytest.raises(SystemExit) as exit_info:
            score_main(["--model", "demo", "--source", str(tmp_path), *bad])
        assert exit_info.value.code == 2
    assert not list(tmp_path.iterdir())


@pytest.mark.integration
@pytest.mark.slow
def test_make_deploy_registers_schedule_limits_and_automations(server: Server, deployed: dict):
    assert deployed["work_pool_name"] == "visionflow"
    assert deployed["pull_steps"] == [{"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}]
    assert [s["schedule"]["cron"] for s in deployed["schedules"]] == ["0 2 * * *"]
    assert "demo" in deployed["parameter_openapi_schema"]["properties"]["preset"]["enum"]  # the UI form's choice
    assert deployed["global_concurrency_limit"]["limit"] == 1
    assert deployed["concurrency_options"]["collision_strategy"] == "ENQUEUE"
    for name in ("monitor/demo", "select-for-labeling/demo"):
        server.api.get(f"/deployments/name/{name}").raise_for_status()
    automations = {a["name"] for a in server.api.post("/automations/filter", json={}).raise_for_status().json()}
    for path in (REPO / "deployments" / "automations").glob("*.yaml"):
        assert yaml.safe_load(path.read_text())["name"] in automations, f"{path.name} was not created"


@pytest.mark.integration
@pytest.mark.slow
def test_a_cli_triggered_run_completes_on_the_worker_and_publishes(server: Server, demo_run: DemoRun):
    assert demo_run.state == "COMPLETED", _tail(demo_run.worker_log)
    assert re.fullmatch(r"demo-\d{8}-\d{6}", demo_run.name), demo_run.name  # the UI lists it by model and time
    registry = Registry(open_store(demo_run.store))
    (version,) = registry.versions("demo")
    assert registry.get_alias("demo", "production")["version"] == version
    flt = {"artifacts": {"flow_run_id": {"any_": [demo_run.id]}}}
    keys = {a["key"] for a in server.api.post("/artifacts/filter", json=flt).raise_for_status().json()}
    assert {"demo-metrics", "demo-summary"} <= keys
    logs = server.api.post("/logs/filter", json={"logs": {"flow_run_id": {"any_": [demo_run.id]}}, "limit": 200})
    by_logger = {(log["name"], log["message"].split(" ")[0]) for log in logs.raise_for_status().json()}
    assert {("ml.training.loop", "epoch"), ("ml.training.run_dirs", "run")} <= by_logger  # ml/ logs reach the UI


def _slot_logs(api: httpx.Client, since: str) -> dict[str, list[tuple[str, str, str]]]:
    """Flow run id -> [(timestamp, "holding" | "released", message)] of the training-slot log lines since `since`."""
    found: dict[str, list[tuple[str, str]]] = {}
    offset = 0
    while page := api.post("/logs/filter", json={"logs": {"timestamp": {"after_": since}}, "offset": offset}).json():
        for log in page:
            word = log["message"].split(" ")[0]
            if TRAINING_LIMIT in log["message"] and word in ("holding", "released"):
                found.setdefault(log["flow_run_id"], []).append((log["timestamp"], word, log["message"]))
        offset += len(page)
    return found


@pytest.mark.integration
@pytest.mark.slow
def test_two_trainings_on_one_cpu_machine_queue_for_its_training_slot(server: Server, tmp_path):
    _run([*MAKE, "training-limit"], server.env)  # no GPU here: 1 slot
    assert server.api.get(f"/v2/concurrency_limits/{TRAINING_LIMIT}").raise_for_status().json()["limit"] == 1
    since = datetime.now(UTC).isoformat()
    cmds = []
    for i in range(2):
        over = tiny_overrides(tmp_path / str(i), **{"train.epochs": 2, "train.device": "cpu"})
        cmds.append([sys.executable, "-m", "flows.retrain", "--preset", "demo"])
        cmds[-1] += [f"--set={k}={json.dumps(v)}" for k, v in over.items()]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True, "start_new_session": True}
    procs = [subprocess.Popen(c, cwd=REPO, env=server.env, **pipes) for c in cmds]
    try:
        outs = [p.communicate(timeout=300)[0] for p in procs]
    finally:
        for p in procs:
            _kill_group(p, grace=0)
    assert all(p.returncode == 0 for p in procs), [o[-3000:] for o in outs]
    slots = _slot_logs(server.api, since)
    assert len(slots) == 2 and all([w for _, w, _ in s] == ["holding", "released"] for s in slots.values()), slots
    first, second = sorted(slots.values())
    released, taken = datetime.fromisoformat(first[1][0]), datetime.fromisoformat(second[0][0])
    assert released <= taken, slots  # the second training started only after the first released its slot
    assert "(waited 0 s)" not in second[0][2], slots  # both asked at once: the second queued


@pytest.mark.integration
@pytest.mark.slow
def test_pausing_the_nightly_schedule(server: Server, deployed: dict):
    (schedule,) = deployed["schedules"]
    _run([PREFECT, "deployment", "schedule", "pause", "retrain/demo", schedule["id"]], server.env)
    paused = server.api.get("/deployments/name/retrain/demo").raise_for_status().json()["schedules"]
    assert [s["active"] for s in paused] == [False]


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium (apt-get install -y chromium)")
def test_the_ui_flow_runs_page_shows_the_run(server: Server, demo_run: DemoRun, tmp_path):
    headless = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,900"]
    browse = [CHROMIUM, *headless, f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=15000"]
    for _ in range(3):  # on a loaded machine the page's first API answers may miss the time budget
        dom = _run([*browse, "--dump-dom", f"{server.url}/runs"], server.env, timeout=90)
        if demo_run.name in dom:
            break
    (tmp_path / "runs.html").write_text(dom)
    assert demo_run.name in dom, f"the UI's runs page does not list {demo_run.name}: {tmp_path / 'runs.html'}"
    shot = tmp_path / "flow-runs.png"
    _run([*browse, f"--screenshot={shot}", f"{server.url}/runs"], server.env, timeout=90)
    with Image.open(shot) as img:
        assert img.size == (1400, 900) and len(img.convert("RGB").getcolors(maxcolors=1 << 21)) > 50  # not blank


def _descendants(pid: int) -> list[psutil.Process]:
    proc = psutil.Process(pid)
    return [proc, *proc.children(recursive=True)]


@pytest.mark.integration
@pytest.mark.slow
def test_a_run_whose_worker_and_process_die_is_marked_crashed_and_alerted_once(
    server: Server, deployed: dict, receiver: Receiver, tmp_path
):
    """kill -9 of the worker and its flow process: no hook can run; dead-runs.yaml (here with a 45 s window on
    30 s heartbeats) marks the run Crashed and dead-run-alert.yaml sends one message naming it."""
    hook = f"Webhook(url={receiver.url + '/dead'!r}, allow_private_urls=True).save('visionflow-alerts', overwrite=True)"
    _run([sys.executable, "-c", f"from prefect.blocks.webhook import Webhook; {hook}"], server.env)  # same block id
    dead_runs = yaml.safe_load((REPO / "deployments" / "automations" / "dead-runs.yaml").read_text())
    dead_runs["trigger"]["within"] = 45
    (tmp_path / "dead-runs.yaml").write_text(yaml.safe_dump(dead_runs))
    _run([PREFECT, "--no-prompt", "automation", "delete", dead_runs["name"]], server.env)
    _run([PREFECT, "automation", "create", "--from-file", str(tmp_path / "dead-runs.yaml")], server.env)

    overrides = tiny_overrides(tmp_path, **{"train.epochs": 1000, "train.device": "cpu"})  # far longer than the test
    trigger = [PREFECT, "deployment", "run", "retrain/demo", "--param", f"overrides={json.dumps(overrides)}"]
    run_id = re.search(r"UUID: ([0-9a-f-]{36})", _run(trigger, server.env)).group(1)
    heartbeats = {"event": {"name": ["prefect.flow-run.heartbeat"]}, "resource": {"id": [f"prefect.flow-run.{run_id}"]}}
    log = tmp_path / "worker.log"
    env = server.env | {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30"}
    with _started([PREFECT, "worker", "start", "--pool", "visionflow"], env, log) as worker:
        deadline = time.monotonic() + 120
        while not server.api.post("/events/filter", json={"filter": heartbeats}).json()["events"]:
            assert time.monotonic() < deadline, f"no heartbeat of {run_id} after 120 s:\n{_tail(log)}"
            time.sleep(1)
        run = server.api.get(f"/flow_runs/{run_id}").json()
        assert run["state"]["type"] == "RUNNING", _tail(log)
        for proc in _descendants(worker.pid):  # the worker and the flow process it started: nobody left to report
            proc.kill()
    deadline = time.monotonic() + 150
    while (state := server.api.get(f"/flow_runs/{run_id}").json()["state"])["type"] == "RUNNING":
        assert time.monotonic() < deadline, "the dead run is still RUNNING after 150 s"
        time.sleep(2)
    assert state["type"] == "CRASHED" and state["message"].startswith("visionflow: no heartbeat"), state
    receiver.wait_for(1, timeout=60)
    time.sleep(10)  # a second message would come now
    texts = [t for t in receiver.texts("/dead") if run["name"] in t]
    assert len(texts) == 1 and "process died" in texts[0], receiver.posts
