"""`make demo`: retrain on generated shapes, score a shifted batch, monitor it, pick images to label. No server.

    python -m flows.demo                      # ~2 min on 2 CPU cores; data, store and runs under .visionflow/
    python -m flows.demo --set storage.uri=file:///tmp/demo/store --set data.root=/tmp/demo/data

1. flows.retrain --preset demo: validate, train, evaluate, export, gate, publish (+ the drift reference)
2. flows.score: 200 new shapes (another seed) darkened and blurred, like a camera gone dim and out of focus
3. flows.monitor --window 1d: the drift verdict, where the Evidently report went, the alerts raised
4. flows.select_for_labeling: a pool of 200 new shapes (another seed, undistorted) -> the 20 worth labeling, as a
   Label Studio import (tasks.json) in the store
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

from PIL import Image, ImageEnhance, ImageFilter

from flows.cli.args import overrides_of, resolve_or_exit, run_parser
from flows.monitor import main as monitor_main
from flows.retrain import main as retrain_main
from flows.score import main as score_main
from flows.select_for_labeling import main as select_main
from ml.config.run import RunConfig
from ml.data.synthetic import make_shapes_dataset

DARKEN, BLUR = 0.55, 0.8  # brightness factor, Gaussian blur radius (px)
LABEL_BUDGET = 20  # images picked for labeling from the pool
SHAPES = "shapes"  # data.synthetic.kind of the demo's generated data


def shifted_batch(cfg: RunConfig, dest: Path, per_class: int = 50) -> Path:
    """New images of the preset's generator (another seed), darkened and blurred; class folders kept (labels)."""
    fresh = dest.with_name(dest.name + "-original")
    make_shapes_dataset(
        fresh, cfg.data.synthetic.model_copy(update={"seed": cfg.data.synthetic.seed + 1, "per_class": per_class})
    )
    for path in sorted(fresh.rglob("*.png")):
        out = dest / path.relative_to(fresh)
        out.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(path) as im:
            ImageEnhance.Brightness(im.convert("RGB")).enhance(DARKEN).filter(ImageFilter.GaussianBlur(BLUR)).save(out)
    return dest


def main(argv: list[str] | None = None) -> int:
    args = run_parser(__doc__).parse_args(argv)
    preset = resolve_or_exit(args.preset, {})
    if preset.model.task != "classify" or preset.data.synthetic is None or preset.data.synthetic.kind != SHAPES:
        print(f"the demo needs a classifier on generated shapes (data.synthetic.kind={SHAPES}); {args.preset!r} is not")
        return 2
    # generated wherever data.root points (ml.config.run.load_config reads a data.root given alone as real data)
    args.overrides = [*args.overrides, f"data.synthetic.kind={SHAPES}"]
    overrides = overrides_of(args)
    cfg = resolve_or_exit(args.preset, overrides)
    sets = [f"--set={item}" for item in args.overrides] + (["--store", args.store] if args.store else [])
    # steps 2-4 take no preset: the store (and its S3 server) the retrain published to
    store = ["--store", cfg.storage.uri] + (
        ["--endpoint-url", cfg.storage.endpoint_url] if cfg.storage.endpoint_url else []
    )

    print(f"\n== 1/4 retrain: python -m flows.retrain --preset {args.preset}", flush=True)
    if retrain_main(["--preset", args.preset, *sets]) != 0:
        print("retrain did not promote a new version; scoring with the current production version (if any)")

    batch = shifted_batch(cfg, cfg.storage.workdir.parent / "incoming" / f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}")
    print(f"\n== 2/4 score a shifted batch (darkened x{DARKEN}, blurred {BLUR} px): {batch}", flush=True)
    if score_main(["--model", cfg.name, "--source", str(batch), *store]) != 0:
        return 1

    print(f"\n== 3/4 monitor the last day of {cfg.name}'s prediction log", flush=True)
    if monitor_main(["--model", cfg.name, "--window", "1d", *store]) != 0:
        return 1

    # under pool/<model>/: the pool the scheduled select-for-labeling/<model> deployment reads (recursively)
    pool = cfg.storage.workdir.parent / "pool" / cfg.name / f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    make_shapes_dataset(
        pool, cfg.data.synthetic.model_copy(update={"seed": cfg.data.synthetic.seed + 2, "per_class": 50})
    )
    print(f"\n== 4/4 select the {LABEL_BUDGET} images most worth labeling from a new pool: {pool}", flush=True)
    return select_main(["--model", cfg.name, "--pool", str(pool), *store, "--budget", str(LABEL_BUDGET)])


if __name__ == "__main__":
    sys.exit(main())
