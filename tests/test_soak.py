"""benchmarks/soak.py for three nights on real servers: a first version, a worker's flow process SIGKILLed
mid-training, an S3 endpoint that accepts and never answers.

    .venv/bin/pytest -q tests/test_soak.py      # ~6 min: a Prefect server, its worker, rclone serve s3

The 30-night run with every fault is `python -m benchmarks.soak` (benchmarks/results/soak.md).
"""

from __future__ import annotations

import pytest

from benchmarks.soak import SCHEDULES, aws, soak

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_three_nights_with_a_killed_training_and_a_hung_store_pass_the_soak(tmp_path, monkeypatch):
    for key, value in aws(tmp_path).items():
        monkeypatch.setenv(key, value)  # soak() exports the store's credentials; undone after the test
    nights, verdict = soak(3, SCHEDULES["short"], tmp_path)
    assert [n.night for n in nights] == [1, 2, 3]
    assert verdict.passed, verdict.checks
    first, killed, stalled = nights
    assert first.states == ["COMPLETED"] and first.production is not None
    # the killed run is Crashed (one alert), the retrigger resumes after the epoch the dead process saved
    assert killed.states == ["CRASHED", "COMPLETED"] and killed.alerts == 1, killed
    assert killed.resumed_from is not None and killed.resumed_from >= 1 and killed.epochs_lost == 0, killed
    # the hung store fails the run within the storage timeouts, production stays, the retrigger completes
    assert stalled.states == ["FAILED", "COMPLETED"] and stalled.alerts == 1, stalled
    assert stalled.fail_s is not None and stalled.fail_s < 60, stalled
    assert all(n.runs_mb == 0 for n in nights), "retention leaves no run folder after a published night"
