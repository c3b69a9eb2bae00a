"""Whole-page segmentation on CPU: time and peak memory of tiled onnxruntime inference on the largest page.

    python benchmarks/segmentation.py [--preset strokes] [--image PATH] [--onnx model.onnx] [--threads 2]

Without --onnx the preset's network is exported with random weights (speed and memory do not depend on the
weights). The page is decoded and predicted at full size, never resized (ml.core.tiling.predict_tiled with the
preset's eval.tile / overlap / batch). Peak memory is the process's max RSS, measured in a fresh process so
nothing else counts. Goal: < 2 GiB on the largest stroke page (4161 x 1613). Prints a table, writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def largest_image(root: Path) -> Path:
    from PIL import Image

    def area(p: Path) -> int:
        with Image.open(p) as im:
            return im.width * im.height

    return max(sorted((root / "images").glob("*.png")), key=area)


def measure(preset: str, image: Path, onnx: Path | None, threads: int) -> dict:
    """Runs in its own process: load, (export), predict once, report time and max RSS."""
    import onnxruntime as ort
    import torch

    from ml.config.run import load_config
    from ml.core.tiling import onnx_predictor, predict_tiled
    from ml.data.layouts import load_image
    from ml.training.datasets import to_chw

    cfg = load_config(preset)
    if onnx is None:
        from ml.export.onnx import export_onnx
        from ml.training.models import build_model

        onnx = Path(tempfile.mkdtemp()) / "model.onnx"
        tile = cfg.eval.tile or cfg.data.crop_size
        model = build_model(cfg.model, cfg.data.channels, 1).eval()
        export_onnx(model, torch.rand(1, cfg.data.channels, tile, tile), onnx)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    session = ort.InferenceSession(str(onnx), opts, providers=["CPUExecutionProvider"])
    page = load_image(str(image), -1, cfg.data.channels)
    start = time.perf_counter()
    logits = predict_tiled(
        to_chw(page), onnx_predictor(session), cfg.eval.tile or cfg.data.crop_size, cfg.eval.overlap, cfg.eval.batch
    )
    seconds = time.perf_counter() - start
    assert logits.shape[1:] == page.shape[:2]
    return {
        "preset": preset,
        "image": image.name,
        "height": page.shape[0],
        "width": page.shape[1],
        "tile": cfg.eval.tile or cfg.data.crop_size,
        "overlap": cfg.eval.overlap,
        "threads": threads,
        "seconds": round(seconds, 2),
        "megapixels_per_s": round(page.shape[0] * page.shape[1] / seconds / 1e6, 3),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="strokes")
    p.add_argument("--image", type=Path)
    p.add_argument("--onnx", type=Path)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "segmentation.json")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        print(json.dumps(measure(a.preset, a.image, a.onnx, a.threads)))
        return
    if a.image is None:
        from ml.config.run import load_config

        a.image = largest_image(Path(load_config(a.preset).data.root))
    cmd = [sys.executable, __file__, "--child", "--preset", a.preset, "--image", str(a.image)]
    cmd += ["--threads", str(a.threads)]
    cmd += ["--onnx", str(a.onnx)] if a.onnx else []
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    row = json.loads(out.stdout.strip().splitlines()[-1])
    print("| " + " | ".join(row) + " |\n|" + "---|" * len(row) + "\n| " + " | ".join(map(str, row.values())) + " |")
    print("goal peak < 2048 MiB:", "PASS" if row["peak_rss_mib"] < 2048 else "FAIL")
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(row, indent=1))
    print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
