"""Validate a preset's dataset without training: profile (cached) -> Great Expectations suite -> report.

    python -m flows.validate_data --preset demo
    python -m flows.validate_data --preset demo --set data.root=/data/shapes --set data.expect.min_per_class=50
    python -m flows.validate_data --preset demo --set data.expect.quarantine_unreadable=true

The same task opens every retrain. Exit code 0 when every rule passed, 1 when one failed (each failed rule
is printed with its threshold, the observed value and the offending files, and published as the
`<model>-data-validation` markdown artifact), 2 for a bad configuration. The last stdout line is JSON.
"""

from __future__ import annotations

import sys
import uuid
from typing import Any

from prefect import flow
from prefect.runtime import flow_run
from prefect.states import State

from flows.cli.args import overrides_of, print_summary, resolve_or_exit, run_parser
from flows.cli.params import Overrides, Preset
from flows.cli.runs import failed_with, run_named_by
from ml.config.run import load_config
from tasks.data import validate_data


@flow(name="validate-data", flow_run_name=run_named_by("preset"), log_prints=True)
def validate_data_flow(preset: Preset = "demo", overrides: Overrides = None) -> dict[str, Any] | State:
    """Validate the dataset of a preset (profile, Great Expectations suite, split) without training.

    Args:
        preset: deployments/presets/<preset>.yaml, the run's config.
        overrides: dotted config keys over the preset, e.g. {"data.root": "/data/x"}.
    """
    cfg = load_config(preset, overrides)  # a bad key or value fails here, before any work
    run_dir = cfg.storage.workdir / cfg.name / f"validate-{flow_run.get_id() or uuid.uuid4()}"

    # 1. profile + GX suite; ends here with the failed rules and their files
    validated = validate_data(cfg, run_dir, return_state=True)
    if validated.is_failed():
        return failed_with(validated.result(raise_on_failure=False))  # the failed rules and their files
    prepared = validated.result()

    return {
        "model": cfg.name,
        "passed": True,
        "counts": prepared.counts,
        "quarantined": prepared.quarantined,
        "split_csv": prepared.split_csv,
        "profile": prepared.profile,
        "fingerprint": prepared.fingerprint,
    }


def main(argv: list[str] | None = None) -> int:
    args = run_parser(__doc__).parse_args(argv)
    overrides = overrides_of(args)
    cfg = resolve_or_exit(args.preset, overrides)
    state = validate_data_flow(args.preset, overrides, return_state=True)
    if not state.is_completed():
        err = state.result(raise_on_failure=False)
        print(f"data validation failed:\n{err}", file=sys.stderr)
        print_summary({"model": cfg.name, "passed": False, "error": str(err).splitlines()[0]})
        return 1
    summary = state.result()
    for label, counts in summary["counts"].items():
        print(f"{label:6s} {sum(counts.values()):6d} images  {counts}")
    if summary["quarantined"]:
        print(f"quarantined {len(summary['quarantined'])} unreadable file(s)")
    print(f"split:   {summary['split_csv']}\nprofile: {summary['profile']}")
    print_summary(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
