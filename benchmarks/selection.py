"""Selection throughput and memory: flows.select_for_labeling's hot loop over a generated pool, 10k vs 100k images.

    python benchmarks/selection.py                       # 32x32 RGB PNGs, 10k and 100k; diversity, 100 of them
    python benchmarks/selection.py --counts 10000 50000 --strategy balanced --budget 200

The pool images and the random-init resnet10t (ONNX + PCA projection) are benchmarks/scoring.py's, generated once
into --data and shared with it. A run is ml.labeling.batch.select_batch: the pool streamed through onnxruntime
(score_stream, each file's sha256 noted as it is read), the strategy's shortlist kept, --budget picked, tasks.json,
label_config.xml and selection.csv written to a file store. Each count runs in a fresh subprocess, so its peak RSS
(VmHWM) is its own. Goal: peak RSS at the largest count within 10% of the smallest (memory flat in the pool
size). Prints a table, writes benchmarks/results/selection.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from benchmarks.scoring import CLASSES, KINDS, generate, peak_rss_mb, prepare_model, warm  # noqa: E402
from ml.config.production import LabelingConfig, MonitorConfig  # noqa: E402
from ml.labeling.batch import BatchRequest, select_batch  # noqa: E402
from ml.monitoring.production import Production  # noqa: E402
from ml.registry.file_store import FileStore  # noqa: E402

GOAL_RSS = 1.10


def run(kind: str, root: str, paths: dict[str, str], strategy: str, budget: int) -> dict:
    """One selection over `root` in this (fresh) process: images/s and peak RSS."""
    side, channels = KINDS[kind]
    production = Production(
        "bench", "v1", paths["onnx"], paths["pca"], None, CLASSES, side, channels, {}, {"model": {"task": "classify"}}
    )
    lab, mon = LabelingConfig(strategy=strategy, budget=budget), MonitorConfig()
    with tempfile.TemporaryDirectory() as store:
        batch = select_batch(FileStore(store), production, BatchRequest(root, lab, mon, "bench"))
    return {
        "images": batch.scored,
        "selected": batch.selected,
        "seconds": batch.seconds,
        "images_per_s": batch.scored / batch.seconds,
        "peak_rss_mb": peak_rss_mb(),
    }


def in_subprocess(*args: object) -> dict:
    """run(*args) in a fresh interpreter; its JSON result."""
    cmd = [sys.executable, __file__, "--worker", json.dumps(args)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--counts", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--kind", default="rgb32", choices=list(KINDS))
    p.add_argument("--strategy", default="diversity", choices=["uncertainty", "diversity", "balanced", "random"])
    p.add_argument("--budget", type=int, default=100)
    p.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "visionflow-bench")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "selection.json")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        print(json.dumps(run(*json.loads(a.worker))))
        return
    paths = prepare_model(a.data / "selection-model", a.kind)  # its own copy: scoring.py may be reading its own
    rows = []
    for count in sorted(a.counts):
        root = generate(a.data, a.kind, count)
        warm(root)
        rows.append({"kind": a.kind, "count": count, **in_subprocess(a.kind, str(root), paths, a.strategy, a.budget)})
        print(json.dumps(rows[-1]), flush=True)
    print(f"\n{'images':8} {'count':>8} {'strategy':10} {'selected':>8} {'images/s':>9} {'peak RSS MB':>12}")
    for r in rows:
        print(
            f"{r['kind']:8} {r['count']:8} {a.strategy:10} {r['selected']:8} {r['images_per_s']:9.0f} "
            f"{r['peak_rss_mb']:12.0f}"
        )
    ratio = rows[-1]["peak_rss_mb"] / rows[0]["peak_rss_mb"]
    goal = {"rss_ratio": ratio, "rss_ok": ratio <= GOAL_RSS}
    print(f"peak RSS {rows[-1]['count']} / {rows[0]['count']}: {ratio:.3f} (goal <= {GOAL_RSS})")
    meta = {"cpus": os.cpu_count(), "strategy": a.strategy, "budget": a.budget, **MonitorConfig().model_dump(
        include={"batch_size", "workers"})}  # fmt: skip
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({"machine": meta, "runs": rows, "goal": goal}, indent=1))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
