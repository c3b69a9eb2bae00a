"""Orchestration overhead: the retrain flow's `train` task vs a bare PyTorch loop, same model/data/epochs.

    python benchmarks/overhead.py [--epochs 6] [--per-class 100] [--repeats 1]

The bare loop decodes the same images, applies the same augmentation and runs the same model, optimizer
and validation pass each epoch, but has no Prefect, checkpoints, metrics or schedules. The flow's figure
is the train task's run time as Prefect recorded it. Goal: ratio <= 1.10. Prints a table, writes JSON.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if "PREFECT_HOME" not in os.environ:  # a scratch Prefect database, removed at exit
    os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="visionflow-bench-")
    atexit.register(shutil.rmtree, os.environ["PREFECT_HOME"], ignore_errors=True)
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

import torch  # noqa: E402
from prefect.client.orchestration import get_client  # noqa: E402
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, TaskRunFilter, TaskRunFilterName  # noqa: E402
from torch import nn  # noqa: E402

from flows.retrain import retrain  # noqa: E402
from ml.config.run import RunConfig, load_config  # noqa: E402
from ml.data.prepare import prepare_dataset  # noqa: E402
from ml.training.augment import build_transforms  # noqa: E402
from ml.training.datasets import ImageDataset, load_resized, make_loader  # noqa: E402
from ml.training.loop import seed_everything  # noqa: E402
from ml.training.models import build_model  # noqa: E402


def bare_loop(cfg: RunConfig, split_csv: str, classes: list[str]) -> float:
    """The trimmed hot loop: decode, augment, forward/backward, a validation forward pass per epoch."""
    import pandas as pd

    start = time.perf_counter()
    seed_everything(cfg.train.seed)
    frame = pd.read_csv(split_csv, keep_default_na=False)
    index = {c: i for i, c in enumerate(classes)}
    parts = {}
    for side in ("train", "val"):
        f = frame[frame["split"] == side]
        parts[side] = (load_resized(f, cfg.data.channels, cfg.data.image_size), f["label"].map(index).to_numpy())
    train = ImageDataset(*parts["train"], build_transforms(cfg.train.augment, cfg.data.image_size, True))
    val = ImageDataset(*parts["val"])
    model = build_model(cfg.model, cfg.data.channels, len(classes))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(cfg.train.epochs):
        model.train()
        for x, y in make_loader(train, cfg.train.batch_size, True, 0, cfg.train.seed):
            opt.zero_grad()
            loss_fn(model(x), y).backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            for x, _ in make_loader(val, cfg.train.batch_size, False, 0, 0):
                model(x)
    return time.perf_counter() - start


def flow_train_seconds(overrides: dict) -> float:
    """Run the whole retrain flow; return its train task's run time as recorded by Prefect."""
    state = retrain("demo", overrides, return_state=True)
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id])),
            task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_="train")),
        )
    train = [r for r in runs if r.name.startswith("train")][0]
    return train.total_run_time.total_seconds()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--per-class", type=int, default=100)
    p.add_argument("--repeats", type=int, default=1)
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="visionflow-overhead-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    overrides = {
        "data.root": str(tmp / "data"),
        "data.synthetic.per_class": args.per_class,
        "train.epochs": args.epochs,
        "train.progress": False,
        "storage.workdir": str(tmp / "runs"),
        "storage.uri": f"file://{tmp / 'store'}",
    }
    cfg = load_config("demo", overrides)
    prepared = prepare_dataset(cfg.data, tmp / "prep")
    rows = []
    for r in range(args.repeats):
        flow_s = flow_train_seconds(overrides)
        bare_s = bare_loop(cfg, prepared.split_csv, prepared.classes)
        rows.append(
            {
                "repeat": r,
                "flow_train_s": round(flow_s, 2),
                "bare_loop_s": round(bare_s, 2),
                "ratio": round(flow_s / bare_s, 3),
            }
        )
    print(f"{'repeat':>6} {'flow train s':>13} {'bare loop s':>12} {'ratio':>7}")
    for row in rows:
        print(f"{row['repeat']:>6} {row['flow_train_s']:>13} {row['bare_loop_s']:>12} {row['ratio']:>7}")
    result = {
        "benchmark": "overhead",
        "epochs": args.epochs,
        "images": sum(sum(c.values()) for c in prepared.counts.values()),
        "model": cfg.model.name,
        "torch_threads": torch.get_num_threads(),
        "rows": rows,
        "goal": "ratio <= 1.10",
    }
    out = ROOT / "benchmarks" / "results" / "overhead.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
