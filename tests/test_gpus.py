"""Which GPUs a training takes (ml.training.gpus): real file locks, no GPU needed to check who gets which index."""

import threading
import time

import pytest
from pydantic import ValidationError

from ml.config.run import load_config
from ml.training.gpus import claim_gpus


def test_trainings_sharing_a_machine_take_different_gpus_and_wait_when_none_is_free(tmp_path):
    with claim_gpus(1, 2, tmp_path) as first, claim_gpus(1, 2, tmp_path) as second:
        assert (first, second) == ([0], [1])
        got: list[list[int]] = []
        waiting = threading.Thread(target=lambda: got.append(_claim_and_release(1, 2, tmp_path)))
        waiting.start()
        time.sleep(0.3)
        assert not got  # both GPUs held: the third training waits
    waiting.join(timeout=5)
    assert got == [[0]]


def test_a_multi_gpu_claim_never_holds_a_partial_set(tmp_path):
    got: list[list[int]] = []
    with claim_gpus(1, 2, tmp_path):
        pair = threading.Thread(target=lambda: got.append(_claim_and_release(2, 2, tmp_path)))
        pair.start()
        time.sleep(0.3)
        assert not got
        with claim_gpus(1, 2, tmp_path) as single:  # the pair holds nothing while it waits
            assert single == [1]
    pair.join(timeout=5)
    assert got == [[0, 1]]


def test_impossible_requests_fail_at_once(tmp_path):
    with pytest.raises(ValueError, match="3 GPUs wanted, but only 2"), claim_gpus(3, 2, tmp_path):
        pass
    with pytest.raises(ValidationError, match="2 distinct CUDA indices"):
        load_config("demo", {"train.devices": 2, "train.gpus": [1]})
    with pytest.raises(ValidationError, match="distinct"):
        load_config("demo", {"train.devices": 2, "train.gpus": [1, 1]})


def _claim_and_release(n: int, visible: int, lock_dir) -> list[int]:
    with claim_gpus(n, visible, lock_dir, poll_s=0.05) as ids:
        return ids
