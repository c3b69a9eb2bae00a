"""Which GPUs of this machine a training takes: the first free ones, so trainings that share a machine spread.

A slot of Prefect's `gpu` limit counts GPUs across the pool; it does not say which. Each training therefore holds
an exclusive lock on `<lock_dir>/gpu-<i>.lock` for every GPU it trains on, taken all at once (never a partial
set, so two multi-GPU trainings cannot deadlock). The kernel drops the locks when the process ends, a crash
included, so a GPU is never left claimed by a dead run.

    with claim_gpus(2, torch.cuda.device_count()) as ids:   # e.g. [1, 3]; waits while fewer are free
        ...
"""

from __future__ import annotations

import fcntl
import logging
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

LOCK_DIR = Path(tempfile.gettempdir()) / "visionflow-gpus"  # machine-wide: checkouts on one machine share its GPUs


@contextmanager
def claim_gpus(n: int, visible: int, lock_dir: Path = LOCK_DIR, poll_s: float = 5.0) -> Iterator[list[int]]:
    """Hold `n` of the `visible` GPUs (indices) that no other training holds, for the `with` block."""
    if n > visible:
        raise ValueError(f"{n} GPUs wanted, but only {visible} are visible")
    lock_dir.mkdir(parents=True, exist_ok=True)
    waited = False
    while True:
        held = _try_claim(n, visible, lock_dir)
        if held is not None:
            break
        if not waited:
            log.info("waiting for %d free GPU(s) of %d (locks in %s)", n, visible, lock_dir)
            waited = True
        time.sleep(poll_s)
    try:
        yield sorted(held)
    finally:
        for f in held.values():
            f.close()  # closing the file releases its lock


def _try_claim(n: int, visible: int, lock_dir: Path) -> dict[int, IO[str]] | None:
    """The locks of n free GPUs, or None (and nothing held) when fewer are free."""
    held: dict[int, IO[str]] = {}
    for i in range(visible):
        if len(held) == n:
            break
        f = open(lock_dir / f"gpu-{i}.lock", "a")  # noqa: SIM115  (kept open: the open file holds the lock)
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            continue
        held[i] = f
    if len(held) == n:
        return held
    for f in held.values():
        f.close()
    return None
