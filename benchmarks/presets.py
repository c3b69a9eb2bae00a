"""Run the real presets end to end on ../shared/data and record where each stands.

    python benchmarks/presets.py doodle defects logos cifar10 strokes     # CPU budget from each preset
    python benchmarks/presets.py cifar10-resnet20 --full                  # no time budget (for a GPU)
    python benchmarks/presets.py doodle --set train.epochs=2

Each preset runs through the whole retrain flow (validate, train, evaluate, export, gate, publish into a
scratch store). A promoted model is then used as a user would next: its validation images, written as JPEG so
that they are new to the registry, are scored into the prediction log (flows.score) and a labeling batch of
POOL_BUDGET is picked from them (flows.select_for_labeling). Writes benchmarks/results/presets.md and
presets.json: validation and test metrics, train time, training images/s, ONNX latency and size, gate verdict, scoring
images/s and the batch picked, and the machine it ran on.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if "PREFECT_HOME" not in os.environ:  # a scratch Prefect database, removed at exit
    os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="visionflow-bench-")
    atexit.register(shutil.rmtree, os.environ["PREFECT_HOME"], ignore_errors=True)
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from flows.retrain import GateFailed, retrain  # noqa: E402
from flows.score import score  # noqa: E402
from flows.select_for_labeling import select_for_labeling  # noqa: E402
from ml.config.run import RunConfig, load_config, parse_override  # noqa: E402
from ml.data.layouts import load_image  # noqa: E402
from ml.data.prepare import prepare_dataset  # noqa: E402
from ml.export.onnx_eval import latency_ms  # noqa: E402
from ml.registry.storage import open_store  # noqa: E402
from ml.registry.versions import Registry  # noqa: E402

HEADLINE = ("accuracy", "macro_f1", "auroc", "f1", "iou", "edge_iou")
POOL_BUDGET = 20  # images per labeling batch picked from the validation images


def machine() -> str:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.node()}: {os.cpu_count()} CPU cores, {gpu}, torch {torch.__version__}"


def onnx_latency(cfg: RunConfig, registry: Registry, version: str) -> float:
    """The latency gate's measure (median ms per image, or per eval.tile tile for a segmenter; onnxruntime,
    one thread) for presets without that gate rule."""
    side = (cfg.eval.tile or cfg.data.crop_size) if cfg.model.task == "segment" else cfg.data.image_size
    shape = (cfg.gate.latency_images, cfg.data.channels, side, side)
    with tempfile.TemporaryDirectory() as tmp:
        path = registry.fetch(cfg.name, version, "model.onnx", Path(tmp) / "model.onnx")
        return latency_ms(path, np.random.default_rng(0).random(shape, dtype=np.float32))


def operate(cfg: RunConfig, store: str) -> dict:
    """Score new images with the production model and pick a labeling batch from them, through the flows users
    run. The real datasets have no unlabelled images, so the pool is the validation images (rows of .npy files
    included) written as JPEG: new files to the registry (images of the dataset itself are skipped as known), in
    class folders so that scoring logs their labels."""
    with tempfile.TemporaryDirectory(prefix="visionflow-pool-") as tmp:
        # the run folder is gone after a publish (retention); splits are hash-stable, so the same split again
        split = pd.read_csv(prepare_dataset(cfg.data, Path(tmp) / "prepared").split_csv)
        val = split[split["split"] == "val"]
        pool = Path(tmp) / "pool"
        for i, r in enumerate(val.itertuples()):
            copy = pool / (str(r.label) if cfg.model.task == "classify" else "") / f"{i:05d}.jpg"
            copy.parent.mkdir(parents=True, exist_ok=True)
            pixels = load_image(r.path, r.row, cfg.data.channels)
            Image.fromarray(pixels[..., 0] if cfg.data.channels == 1 else pixels).save(copy, quality=95)
        cache = str(Path(tmp) / "cache")
        scored = score(cfg.name, str(pool), store, cache_dir=cache)
        picked = select_for_labeling(cfg.name, str(pool), store, budget=POOL_BUDGET, cache_dir=cache)
    return {
        "scored": scored["rows"],
        "score_images_per_s": round(scored["images_per_s"], 1),
        "selected": picked["selected"],
        "known": picked["known"],
        "select_s": round(picked["seconds"], 1),
    }


def run_preset(preset: str, overrides: dict, store: str) -> dict:
    cfg = load_config(preset, overrides)
    start = time.perf_counter()
    state = retrain(preset, {**overrides, "storage.uri": store}, return_state=True)
    wall = time.perf_counter() - start
    if state.is_completed():
        summary = state.result()
    else:
        err = state.result(raise_on_failure=False)
        if not isinstance(err, GateFailed):
            return {"preset": preset, "error": str(err)[:300], "wall_s": round(wall, 1)}
        summary = err.summary
    meta = Registry(open_store(store)).metadata(cfg.name, summary["version"])
    training, counts = meta["training"], meta["dataset"]["counts"]
    n_train = sum(counts["train"].values())
    latency = next((r["measured"] for r in meta["gate"]["rules"] if r["rule"].startswith("latency")), None)
    if latency is None:
        latency = onnx_latency(cfg, Registry(open_store(store)), summary["version"])
    used = operate(cfg, store) if summary["promoted"] else {"operate": "not promoted: not scored"}
    return {
        "preset": preset,
        "model": cfg.model.name,
        "device": training["device"],
        "metrics": _headline(summary["metrics"]),  # validation
        "test_metrics": _headline(summary["gate"]["metrics"]) if summary["gate"].get("split") == "test" else {},
        "measured_on": summary["gate"].get("measured_on", ""),  # the shipped model.onnx when not the checkpoint
        "gate": summary["gate"]["verdict"],
        "promoted": summary["promoted"],
        "epochs": training["epochs_run"],
        "train_s": round(training["seconds"], 1),
        "train_images_per_s": round(n_train * training["epochs_run"] / max(training["seconds"], 1e-9), 1),
        "onnx_mb": round(meta["export"]["size_bytes"] / 1e6, 2),
        "latency_ms": latency,
        "train_images": n_train,
        "val_images": sum(counts["val"].values()),
        "test_images": sum(counts.get("test", {}).values()),
        "wall_s": round(wall, 1),
        **used,
    }


def _headline(metrics: dict) -> dict:
    """The shipped model's headline metrics (export.tta / export.quantize score model.onnx) on one split."""
    return {k: metrics[k] for k in HEADLINE if metrics.get(k) is not None}


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def _used(row: dict) -> str:
    """The scoring and labeling columns: figures, why they are missing, or blank for rows measured before."""
    if "scored" in row:
        return f"{row['score_images_per_s']} | {row['selected']} of {row['scored']} in {row['select_s']} s"
    return f"{row.get('operate', '')} | "


def _metrics_cell(metrics: dict) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())


def markdown(rows: list[dict], mode: str) -> str:
    """The results table: validation and test metrics side by side (the gate judges test when there is one)."""
    machines = sorted({r["machine"] for r in rows})
    lines = [
        f"# Presets on real data ({mode})",
        "",
        *[f"Machine: {m}" for m in machines],
        "",
        "| preset | model | validation | test (gated when present) | gate | epochs | train s | img/s | ONNX MB "
        "| latency ms | scored img/s | labeling batch |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['preset']} | error: {r['error']} | | | | | | | | | | |")
            continue
        on = f" ({r['measured_on']})" if r.get("measured_on") else ""
        test = _metrics_cell(r.get("test_metrics", {}))
        lines.append(
            f"| {r['preset']} | {r['model']} | {_metrics_cell(r['metrics'])}{on} | {test + on if test else ''} "
            f"| {r['gate']} | {r['epochs']} | {r['train_s']} "
            f"| {r['train_images_per_s']} | {r['onnx_mb']} | {_ms(r['latency_ms'])} | {_used(r)} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("presets", nargs="+")
    p.add_argument("--full", action="store_true", help="no CPU time budget (train.time_budget_min unset)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args()
    overrides = dict(parse_override(o) for o in args.overrides)
    if args.full:
        overrides["train.time_budget_min"] = None
    store = f"file://{tempfile.mkdtemp(prefix='visionflow-presets-')}"
    where, mode = machine(), "full" if args.full else "CPU budget"
    out = ROOT / "benchmarks" / "results" / f"presets{'-full' if args.full else ''}"
    for name in args.presets:
        save(out, run_preset(name, overrides, store), where, mode)
    print(out.with_suffix(".md").read_text())


def save(out: Path, row: dict, where: str, mode: str) -> None:
    """Merge one preset's row into <out>.json (replacing an earlier row of that preset) and rewrite <out>.md,
    so presets run in separate invocations end up in one table."""
    out.parent.mkdir(parents=True, exist_ok=True)
    json_path = out.with_suffix(".json")
    old = json.loads(json_path.read_text()) if json_path.exists() else {"rows": []}
    rows = [{"machine": old.get("machine", where), **r} for r in old["rows"]]
    rows = [r for r in rows if r["preset"] != row["preset"]] + [{**row, "machine": where}]
    json_path.write_text(json.dumps({"mode": mode, "rows": rows}, indent=1))
    out.with_suffix(".md").write_text(markdown(rows, mode))


if __name__ == "__main__":
    main()
