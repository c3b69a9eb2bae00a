"""Repeat a preset's training over seeds (and variants) and report mean and 95% CI of each metric.

    python -m flows.experiment --preset cifar10 --seeds 3
    python -m flows.experiment --preset cifar10 --seeds 3 --ablate augment   # + the same without augmentation
    python -m flows.experiment --preset demo --seeds 2 --set train.epochs=2

Nothing is published or promoted: this is for deciding, not shipping. The split is fixed
(data.split_seed); the training seed varies, so the interval measures training noise on one split.
"""

from __future__ import annotations

import json
import sys
import uuid
from typing import Any, Literal

from prefect import flow
from prefect.artifacts import create_table_artifact

from flows.cli.args import overrides_of, print_summary, resolve_or_exit, result_or_report, run_parser
from flows.cli.params import Overrides, Preset, Seeds
from flows.cli.runs import run_named_by
from ml.config.run import load_config
from ml.config.training import AugmentConfig
from ml.evaluation.stats import mean_ci
from tasks.data import validate_data
from tasks.evaluation import evaluate_model
from tasks.training import train_model

ABLATIONS = {
    # every augmentation probability/magnitude set to zero
    "augment": {
        "train.augment": {name: 0 for name, f in AugmentConfig.model_fields.items() if f.annotation in (float, int)}
    },
}
Ablation = Literal[tuple(ABLATIONS)]  # type: ignore[valid-type]


@flow(name="experiment", flow_run_name=run_named_by("preset"), log_prints=True)
def experiment(
    preset: Preset,
    seeds: Seeds = 3,
    overrides: Overrides = None,
    ablate: list[Ablation] | None = None,
) -> dict[str, Any]:
    """Train `seeds` times per variant (baseline + each ablation); summarise every headline metric. With a time
    budget, every run trains the epochs the budget gave the first one, so runs differ by seed and variant only,
    not by how busy the machine was.

    Args:
        preset: deployments/presets/<preset>.yaml, the runs' config.
        seeds: training runs per variant (train.seed 0 .. seeds-1); at least 2 for a 95% interval.
        overrides: dotted config keys over the preset, e.g. {"train.epochs": 5}.
        ablate: variants that switch a technique off, e.g. ["augment"].
    """
    variants = {"baseline": {}, **{f"no-{a}": ABLATIONS[a] for a in ablate or []}}
    runs: list[dict[str, Any]] = []
    pinned: dict[str, Any] = {}  # after a budgeted first run: its epochs, no budget
    for variant, extra in variants.items():
        for seed in range(seeds):
            cfg = load_config(preset, {**(overrides or {}), **extra, **pinned, "train.seed": seed})
            run_dir = cfg.storage.workdir / cfg.name / "experiments" / f"{variant}-seed{seed}-{uuid.uuid4().hex[:6]}"
            prepared = validate_data(cfg, run_dir)
            trained = train_model(cfg, prepared, run_dir)
            if cfg.train.time_budget_min and not pinned:
                pinned = {"train.epochs": trained.epochs_run, "train.time_budget_min": None}
            evaluation = evaluate_model(cfg, prepared, trained, run_dir)
            runs.append({"variant": variant, "seed": seed, "epochs": trained.epochs_run, **evaluation.scalars()})
            print(
                f"{variant} seed {seed}: "
                + ", ".join(f"{k}={v:.4f}" for k, v in evaluation.scalars().items() if isinstance(v, float))
            )
    summary = summarize(runs)
    create_table_artifact(
        key=f"{load_config(preset, overrides).name}-experiment",
        table=summary,
        description=f"{preset}: mean and 95% CI over {seeds} seeds per variant",
    )
    return {"preset": preset, "seeds": seeds, "runs": runs, "summary": summary}


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (variant, metric) with mean, std and the 95% interval."""
    rows = []
    for variant in dict.fromkeys(r["variant"] for r in runs):
        mine = [r for r in runs if r["variant"] == variant]
        for metric in (k for k, v in mine[0].items() if isinstance(v, float) and k != "seed"):
            values = [r[metric] for r in mine if r[metric] is not None]
            if values:
                s = mean_ci(values, bounds=(0.0, None) if "loss" in metric else (0.0, 1.0))
                rows.append(
                    {
                        "variant": variant,
                        "metric": metric,
                        "n": s["n"],
                        "mean": round(s["mean"], 4),
                        "std": round(s["std"], 4),
                        "ci95": [round(s["ci_low"], 4), round(s["ci_high"], 4)],
                    }
                )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = run_parser(__doc__)
    parser.add_argument("--seeds", type=int, default=3, help="training seeds per variant (default 3)")
    parser.add_argument(
        "--ablate",
        action="append",
        choices=sorted(ABLATIONS),
        default=[],
        help="also run each seed with this switched off (repeatable); augment: every augmentation at zero",
    )
    args = parser.parse_args(argv)
    overrides = overrides_of(args)
    resolve_or_exit(args.preset, overrides)
    state = experiment(args.preset, args.seeds, overrides, args.ablate, return_state=True)
    result = result_or_report(state, "experiment", {"preset": args.preset})
    if result is None:
        return 1
    print(f"{'variant':<14} {'metric':<16} {'n':>2} {'mean':>8} {'std':>8}  95% CI")
    for r in result["summary"]:
        low, high = r["ci95"]
        print(f"{r['variant']:<14} {r['metric']:<16} {r['n']:>2} {r['mean']:>8} {r['std']:>8}  [{low}, {high}]")
    print_summary({"preset": args.preset, "summary": json.loads(json.dumps(result["summary"]))})
    return 0


if __name__ == "__main__":
    sys.exit(main())
