"""`make demo`: retrain on generated shapes, score a batch with a visible shift, monitor it. No server needed.

    python -m flows.demo                      # ~2 min on 2 CPU cores; data, store and runs under .visionflow/
    python -m flows.demo --set storage.uri=file:///tmp/demo/store --set data.root=/tmp/demo/data

1. flows.retrain --preset demo: validate, train, evaluate, export, gate, publish (+ the drift reference)
2. flows.score: 200 new shapes (another seed) darkened and blurred, like a camera gone dim and out of focus
3. flows.monitor --window 1d: the drift verdict, where the Evidently report went, the alerts raised
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

from PIL import Image, ImageEnhance, ImageFilter

from flows.cli import overrides_of, resolve_or_exit, run_parser
from flows.monitor import main as monitor_main
from flows.retrain import main as retrain_main
from flows.score import main as score_main
from ml.config import RunConfig
from ml.data.synthetic import make_shapes_dataset

DARKEN, BLUR = 0.55, 0.8  # brightness factor, Gaussian blur radius (px)


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
    overrides = overrides_of(args)
    cfg = resolve_or_exit(args.preset, overrides)
    if cfg.data.synthetic is None:
        print(f"the demo needs a preset with data.synthetic (generated images); {args.preset!r} has none")
        return 2
    sets = [f"--set={item}" for item in args.overrides] + (["--store", args.store] if args.store else [])

    print(f"\n== 1/3 retrain: python -m flows.retrain --preset {args.preset}", flush=True)
    if retrain_main(["--preset", args.preset, *sets]) != 0:
        print("retrain did not promote a new version; scoring with the current production version (if any)")

    batch = shifted_batch(cfg, cfg.storage.workdir.parent / "incoming" / f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}")
    print(f"\n== 2/3 score a shifted batch (darkened x{DARKEN}, blurred {BLUR} px): {batch}", flush=True)
    if score_main(["--model", cfg.name, "--source", str(batch), "--store", cfg.storage.uri]) != 0:
        return 1

    print(f"\n== 3/3 monitor the last day of {cfg.name}'s prediction log", flush=True)
    return monitor_main(["--model", cfg.name, "--window", "1d", "--store", cfg.storage.uri])


if __name__ == "__main__":
    sys.exit(main())
