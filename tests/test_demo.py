"""`make demo`'s entry point on the demo preset shrunk: all four steps run and leave their outputs where it says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flows.demo import main as demo_main
from ml.registry.storage import open_store
from tests.conftest import tiny_overrides


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.usefixtures("prefect_harness")
def test_demo_retrains_scores_monitors_and_picks_a_labeling_batch(tmp_path: Path, capsys: pytest.CaptureFixture):
    sets = [f"--set={k}={json.dumps(v)}" for k, v in tiny_overrides(tmp_path, **{"train.epochs": 3}).items()]
    assert demo_main(["--preset", "demo", *sets]) == 0
    out = capsys.readouterr().out
    assert "== 4/4" in out and "verdict:" in out
    store = open_store(f"file://{tmp_path / 'store'}")
    assert store.list("monitoring/demo/predictions/") and store.list("reports/monitor/demo/")
    assert [k for k in store.list("labeling/demo/") if k.endswith("tasks.json")]
    assert list((tmp_path / "pool" / "demo").iterdir())  # where the select-for-labeling/demo deployment looks


def test_demo_refuses_a_preset_it_cannot_show(capsys: pytest.CaptureFixture):
    assert demo_main(["--preset", "demo-seg"]) == 2
    assert "data.synthetic.kind=shapes" in capsys.readouterr().out
