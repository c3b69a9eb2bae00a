"""Search a preset's recipe with Optuna: each trial trains the preset with overrides drawn from its `tune:` section.

    python -m flows.tune --preset demo --trials 8 --budget-min 1
    python -m flows.tune --preset doodle-12 --trials 30 --budget-min 4 --store s3://models/visionflow

TPE draws each trial; a median pruner stops one whose validation metric (train.monitor) falls behind at an epoch.
Trials are scored on the validation split only, never the test split. The study lives in the store
(<storage.uri>/tune/<study>.journal, or tune.storage's database): a later call, or another worker, continues it.
Prints the best trial's overrides as YAML to paste into the preset; the last stdout line is a JSON summary.
"""

from __future__ import annotations

import sys
import uuid
from typing import Annotated, Any

from prefect import flow
from prefect.states import State
from pydantic import Field, ValidationError

from flows.cli.args import overrides_of, print_summary, resolve_or_exit, result_or_report, run_parser
from flows.cli.params import Overrides, Preset
from flows.cli.runs import failed_with, run_named_by
from ml.config.run import load_config
from ml.tuning.study import study_name
from ml.tuning.trial import check_space
from tasks.data import validate_data
from tasks.tuning import open_tuning_study, report_study, save_tuning_study, tune_trial

Trials = Annotated[int, Field(ge=1)]
BudgetMin = Annotated[float | None, Field(gt=0)]


@flow(name="tune", flow_run_name=run_named_by("preset"), log_prints=True)
def tune(
    preset: Preset = "demo", trials: Trials = 10, budget_min: BudgetMin = None, overrides: Overrides = None
) -> dict[str, Any] | State:
    """Run `trials` more trials of the preset's study, then report every trial and the best overrides.

    Args:
        preset: deployments/presets/<preset>.yaml, with its `tune:` section (the searched keys).
        trials: trials this run adds to the study.
        budget_min: each trial's train.time_budget_min (unset: the preset's).
        overrides: dotted config keys over the preset, for every trial, e.g. {"train.epochs": 5}.
    """
    base = {**(overrides or {}), **({"train.time_budget_min": budget_min} if budget_min else {})}
    cfg = load_config(preset, base)
    check_space(preset, base)  # every bound and choice makes a valid config, before any work
    root = cfg.storage.workdir / cfg.name / "tune" / f"{study_name(cfg)}-{uuid.uuid4().hex[:6]}"

    # 1. data: validated and split once; every trial trains on its train side and is scored on its val side
    validated = validate_data(cfg, root, return_state=True)
    if validated.is_failed():
        return failed_with(validated.result(raise_on_failure=False))
    # 2. the study, continued from the store when a call (or another worker) made it
    study = open_tuning_study(cfg)
    # 3. trials, one after another here; the study goes back to the store after each
    for _ in range(trials):
        tune_trial(study, preset, base, validated.result(), root)
        save_tuning_study(cfg)
    # 4. every trial as a table, the best as a YAML snippet for the preset
    return report_study(cfg, study)


def main(argv: list[str] | None = None) -> int:
    parser = run_parser(__doc__)
    parser.add_argument("--trials", type=int, default=10, help="trials to add to the study (default 10)")
    parser.add_argument("--budget-min", type=float, help="each trial's time budget in minutes (default: the preset's)")
    args = parser.parse_args(argv)
    overrides = overrides_of(args)
    resolve_or_exit(args.preset, overrides)
    try:
        check_space(args.preset, overrides)
    except (ValidationError, ValueError) as err:
        print(f"invalid tune space (preset {args.preset!r}):\n{err}", file=sys.stderr)
        return 2
    state = tune(args.preset, args.trials, args.budget_min, overrides, return_state=True)
    result = result_or_report(state, "tune", {"preset": args.preset})
    if result is None:
        return 1
    print(f"study {result['study']} at {result['storage']}: {result['trials']} trials, {result['pruned']} pruned")
    print(f"best: trial {result['best']['number']}, value {result['best']['value']:.4f}; paste into the preset:")
    print(result["snippet"])
    print_summary(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
