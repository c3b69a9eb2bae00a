"""Scoring throughput and memory: onnxruntime vs torch eager on the same model, over image files on disk.

    python benchmarks/scoring.py                                   # 32x32 RGB and 28x28 grey PNGs, 10k and 100k
    python benchmarks/scoring.py --counts 10000 50000 --data /tmp/visionflow-bench

The images are generated once into --data and reused. Every (images, count, engine) run is its own subprocess,
so its peak RSS (VmHWM) is its own. A run is the hot loop of flows.score: ml.monitoring.scoring.score_stream (walk,
read, decode, measure, resize in a thread pool; the model in batches) feeding ml.monitoring.log.write_log (parquet
parts into a file store); torch eager swaps only the model call. "model only" times the model call alone on a
fixed batch. On a shared machine load comes in spikes, so the engines alternate and the best round counts
(--rounds for the smaller counts; the largest runs once per engine). Goals: onnxruntime >= 1.5x torch eager
images/s; peak RSS at the largest count within 10% of the smallest. Prints a table, writes
benchmarks/results/scoring.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from ml.config.training import ModelConfig  # noqa: E402
from ml.export.onnx import export_checked  # noqa: E402
from ml.monitoring.log import write_log  # noqa: E402
from ml.monitoring.reference import fit_projection  # noqa: E402
from ml.monitoring.scoring import OnnxClassifier, Projection, local_images, score_stream  # noqa: E402
from ml.registry.file_store import FileStore  # noqa: E402
from ml.training.models import build_model  # noqa: E402

KINDS = {"rgb32": (32, 3), "grey28": (28, 1)}  # name -> (side, channels)
CLASSES = ["a", "b", "c", "d"]
BATCH, WORKERS, CHUNK_ROWS = 256, 4, 10_000
ENGINES = ("onnxruntime", "torch eager")
ROUNDS_UP_TO = 20_000  # counts up to this run --rounds times per engine (alternating, best kept); larger ones once
GOAL_SPEEDUP, GOAL_RSS = 1.5, 1.10


def _write_shard(args: tuple[Path, int, int, int, int]) -> None:
    """Images start..stop-1 of one folder: noisy background, one bright or dark rectangle (fast to draw)."""
    folder, side, channels, start, stop = args
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(start)
    for i in range(start, stop):
        img = rng.normal(rng.uniform(40, 215), 20, (side, side, channels))
        x, y = rng.integers(0, side // 2, 2)
        img[y : y + side // 3, x : x + side // 3] = rng.uniform(0, 255, channels)
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8).squeeze()).save(folder / f"{i:06d}.png")


def generate(data: Path, kind: str, count: int) -> Path:
    """`count` PNGs in folders of 1000 under data/<kind>-<count> (kept: a later run reuses them)."""
    side, channels = KINDS[kind]
    root = data / f"{kind}-{count}"
    if (root / ".complete").exists():
        return root
    shards = [(root / f"{s // 1000:03d}", side, channels, s, min(s + 1000, count)) for s in range(0, count, 1000)]
    with ProcessPoolExecutor(max_workers=os.cpu_count()) as pool:
        list(pool.map(_write_shard, shards))
    (root / ".complete").touch()
    return root


def prepare_model(data: Path, kind: str) -> dict[str, str]:
    """One random-init resnet10t per image kind: state dict (torch), ONNX (parity-checked), a PCA projection."""
    side, channels = KINDS[kind]
    data.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = build_model(ModelConfig(), channels, len(CLASSES)).eval()
    paths = {"weights": str(data / f"{kind}.pt"), "onnx": str(data / f"{kind}.onnx"), "pca": str(data / f"{kind}.npz")}
    torch.save(model.state_dict(), paths["weights"])
    export_checked(model, torch.rand(8, channels, side, side), Path(paths["onnx"]), 17, 1e-4)
    features = OnnxClassifier(Path(paths["onnx"]), CLASSES, side, channels).run(
        np.random.default_rng(0).integers(0, 256, (512, side, side, channels), dtype=np.uint8)
    )[1]
    fit_projection(features, 16).save(Path(paths["pca"]))
    return paths


class TorchEager(OnnxClassifier):
    """The same model in torch eager (no grad, CPU): prepare() is inherited, run() swapped."""

    def __init__(self, weights: str, image_size: int, channels: int, projection: Projection):
        self.model = build_model(ModelConfig(), channels, len(CLASSES)).eval()
        self.model.load_state_dict(torch.load(weights, weights_only=True))
        self.classes, self.size, self.channels, self.projection = CLASSES, image_size, channels, projection
        self.has_embedding, self.threshold = True, None  # the attributes OnnxClassifier's scoring reads

    @torch.no_grad()
    def run(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).float().div_(255.0)
        backbone = self.model.backbone
        features = backbone.forward_features((x - self.model.mean) / self.model.std)
        logits = backbone.forward_head(features)
        pooled = backbone.forward_head(features, pre_logits=True).flatten(1)
        return torch.softmax(logits, dim=1).double().numpy(), pooled.numpy()


def _model(engine: str, kind: str, paths: dict[str, str]) -> OnnxClassifier:
    side, channels = KINDS[kind]
    projection = Projection.load(Path(paths["pca"]))
    if engine == "onnxruntime":
        return OnnxClassifier(Path(paths["onnx"]), CLASSES, side, channels, projection)
    return TorchEager(paths["weights"], side, channels, projection)


def model_only(kind: str, paths: dict[str, str], rounds: int = 5, reps: int = 5) -> dict[str, float]:
    """images/s of the model call alone on one fixed batch: the engines alternate, best round of each (a shared
    machine's load spikes hit one round, not one engine)."""
    side, channels = KINDS[kind]
    batch = np.random.default_rng(1).integers(0, 256, (BATCH, side, side, channels), dtype=np.uint8)
    models = {engine: _model(engine, kind, paths) for engine in ENGINES}
    best = dict.fromkeys(ENGINES, 0.0)
    for _ in range(rounds):
        for engine, model in models.items():
            model.run(batch)
            start = time.perf_counter()
            for _ in range(reps):
                model.run(batch)
            best[engine] = max(best[engine], BATCH * reps / (time.perf_counter() - start))
    return best


def end_to_end(engine: str, kind: str, root: str, paths: dict[str, str]) -> dict:
    """One run of the scoring hot loop over `root` in this (fresh) process: images/s and peak RSS."""
    model = _model(engine, kind, paths)
    with tempfile.TemporaryDirectory() as store:
        frames = score_stream(model, local_images(Path(root)), BATCH, WORKERS)
        written = write_log(FileStore(store), "bench", "v1", "run", root, frames, CHUNK_ROWS)
    return {
        "images": written.rows,
        "parts": len(written.keys),
        "images_per_s": written.rows / written.seconds,
        "peak_rss_mb": peak_rss_mb(),
    }


def peak_rss_mb() -> float:
    """This process's high-water RSS (VmHWM). Not ru_maxrss: Linux carries the forking parent's peak into it."""
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) / 1024


def in_subprocess(function: str, *args: object) -> dict:
    """Call `function(*args)` of this file in a fresh interpreter; its JSON result."""
    cmd = [sys.executable, __file__, "--worker", json.dumps([function, *args])]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def warm(root: Path) -> None:
    """Read every file once, so no engine pays for a cold page cache."""
    for item in local_images(root):
        item.read()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--counts", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--kinds", nargs="+", default=list(KINDS), choices=list(KINDS))
    p.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "visionflow-bench")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "scoring.json")
    p.add_argument("--rounds", type=int, default=3, help=f"alternating runs per engine for counts <= {ROUNDS_UP_TO}")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        function, *args = json.loads(a.worker)
        print(json.dumps({"model_only": model_only, "end_to_end": end_to_end}[function](*args)))
        return
    rows = []
    for kind in a.kinds:
        paths = prepare_model(a.data, kind)
        best = in_subprocess("model_only", kind, paths)
        rows += [{"kind": kind, "count": "model only", "engine": e, "images_per_s": best[e]} for e in ENGINES]
        for count in sorted(a.counts):
            root = generate(a.data, kind, count)
            warm(root)
            runs = [
                in_subprocess("end_to_end", engine, kind, str(root), paths) | {"engine": engine}
                for _ in range(a.rounds if count <= ROUNDS_UP_TO else 1)
                for engine in ENGINES
            ]
            for engine in ENGINES:
                mine = [r for r in runs if r["engine"] == engine]
                rows.append(
                    {
                        "kind": kind,
                        "count": count,
                        "engine": engine,
                        "rounds": len(mine),
                        "images_per_s": max(r["images_per_s"] for r in mine),
                        "peak_rss_mb": max(r["peak_rss_mb"] for r in mine),
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
    report(rows, a.out)


def report(rows: list[dict], out: Path) -> None:
    """The table, the two goals per image kind, and the JSON file."""
    print(f"\n{'images':8} {'count':>10} {'engine':12} {'images/s':>9} {'peak RSS MB':>12}")
    for r in rows:
        rss = f"{r['peak_rss_mb']:.0f}" if "peak_rss_mb" in r else ""
        print(f"{r['kind']:8} {r['count']!s:>10} {r['engine']:12} {r['images_per_s']:9.0f} {rss:>12}")
    goals = {}
    for kind in dict.fromkeys(r["kind"] for r in rows):
        runs = {(r["count"], r["engine"]): r for r in rows if r["kind"] == kind}
        counts = sorted(c for c, _ in runs if c != "model only")
        speed = {
            c: runs[c, "onnxruntime"]["images_per_s"] / runs[c, "torch eager"]["images_per_s"]
            for c in ["model only", *counts]
        }
        rss = {e: runs[counts[-1], e]["peak_rss_mb"] / runs[counts[0], e]["peak_rss_mb"] for e in ENGINES}
        goals[kind] = {
            "speedup": speed,
            "speedup_ok": min(speed[c] for c in counts) >= GOAL_SPEEDUP,
            "rss_ratio": rss,
            "rss_ok": rss["onnxruntime"] <= GOAL_RSS,
        }
        print(
            f"{kind}: onnxruntime / torch eager = "
            + ", ".join(f"{v:.2f}x ({c})" for c, v in speed.items())
            + f"; peak RSS {counts[-1]} / {counts[0]}: "
            + ", ".join(f"{e} {v:.3f}" for e, v in rss.items())
        )
    meta = {"cpus": os.cpu_count(), "batch": BATCH, "workers": WORKERS, "torch_threads": torch.get_num_threads()}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": meta, "runs": rows, "goals": goals}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
