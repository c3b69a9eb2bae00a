"""The nightly retrain: validate -> train -> evaluate -> export -> gate -> publish (promote if passed) -> alert.

    python -m flows.retrain --preset demo
    python -m flows.retrain --preset demo --set train.epochs=2 --set gate.min.accuracy=0.9
    python -m flows.retrain --preset demo --set data.root=/data/shapes --store s3://models/visionflow

No server is needed (Prefect runs an ephemeral one); with PREFECT_API_URL set, the run shows in the UI.
The last stdout line is a JSON summary; the exit code is 0 when a version was published and promoted, or held
(it missed the champion rule by a difference its bootstrap interval cannot tell from zero: production kept, the run
completes, no alert), 1 when validation, training or the gate failed or another run promoted first, 2 for a bad
configuration. A failed gate, a regression against production or a crash sends an alert (Prefect event + webhook).
Training happens in <storage.workdir>/<model>/<split id>-<training-config hash>/: run again after its process
died, a retrain of the same data and config continues after the last finished epoch; once published, it is done.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path
from typing import Any

from prefect.runtime import flow_run
from prefect.states import State

from flows.cli.args import overrides_of, print_summary, resolve_or_exit, run_parser
from flows.cli.params import Overrides, Preset
from flows.cli.runs import alerting_flow, failed_with
from ml.config.run import RunConfig, load_config
from ml.monitoring.alerts import NotPromoted
from ml.registry.records import RunRecords
from ml.registry.report import summary_markdown
from ml.training.run_dirs import mark_published
from tasks.alerts import send_alerts
from tasks.data import validate_data
from tasks.evaluation import (
    challenge_production,
    evaluate_model,
    export_model,
    gate_model,
    measure_latency,
    score_shipped,
)
from tasks.monitoring import drift_reference
from tasks.registry import promote_model, publish_model, reach_store, read_production
from tasks.reporting import publish_artifacts, write_report
from tasks.training import run_folder, train_model


class _Verdict(NotPromoted):
    """A NotPromoted that carries the run summary; Prefect pickles a failed run's exception with its state."""

    def __init__(self, message: str, summary: dict[str, Any]):
        super().__init__(message)
        self.summary = summary

    def __reduce__(self):
        return type(self), (self.summary,)


class GateFailed(_Verdict):
    """The candidate was published but not promoted; carries the run summary."""

    def __init__(self, summary: dict[str, Any]):
        failed = [r["rule"] for r in summary["gate"]["rules"] if not r["passed"]]
        super().__init__(f"gate failed for {summary['model']} {summary['version']}: {', '.join(failed)}", summary)


class PromotionLost(_Verdict):
    """The gate passed, but another run moved `production` after this one read it; says who won."""

    def __init__(self, summary: dict[str, Any]):
        super().__init__(summary["promotion"], summary)


def scratch_dir_for(cfg: RunConfig) -> Path:
    """Where this flow run validates: the run folder is keyed by the split, known only after validation."""
    return cfg.storage.workdir / cfg.name / f"validate-{flow_run.get_id() or uuid.uuid4()}"


@alerting_flow("retrain", named_by="preset")
def retrain(preset: Preset = "demo", overrides: Overrides = None) -> dict[str, Any] | State:
    """Retrain the model of a preset: validate, train, evaluate, export, gate, publish, promote.

    Args:
        preset: deployments/presets/<preset>.yaml, the run's config.
        overrides: dotted config keys over the preset, e.g. {"train.epochs": 2, "gate.min.accuracy": 0.9}.
    """
    cfg = load_config(preset, overrides)  # a bad key or value fails here, before any work
    reach_store(cfg)  # a wrong endpoint, bucket or credentials fail here, not after training

    # 1. data: index, check, split (stops the run on unreadable images or empty classes)
    scratch = scratch_dir_for(cfg)
    validated = validate_data(cfg, scratch, return_state=True)
    if validated.is_failed():
        return failed_with(validated.result(raise_on_failure=False))  # the failed rules and their files
    # 2. train in <workdir>/<model>/<split id>-<config hash>/: continues an unpublished run of the same data and
    #    config from its last epoch, whichever process ran it; best checkpoint by train.monitor
    folder = run_folder(cfg, validated.result(), scratch)
    prepared, run_dir = folder.prepared, folder.path
    trained = train_model(cfg, prepared, run_dir)
    # 3. evaluate on the validation split (and on test, at validation's threshold, when there is one)
    evaluation = evaluate_model(cfg, prepared, trained, run_dir)
    # 4. export to ONNX, parity-checked against torch; with flips or int8 inside, scored again as it ships
    exported = export_model(cfg, prepared, trained, run_dir)
    shipped = score_shipped(cfg, prepared, evaluation, exported)
    # 5. gate: absolute, per-class, bias, cost (ONNX size, latency) and champion/challenger rules from config,
    #    the metric rules on the test split when there is one;
    #    `production` is read once, before the comparison, and may later move only if it is still that version
    production = read_production(cfg)
    champion = challenge_production(cfg, prepared, exported, production, run_dir)
    latency_ms = measure_latency(cfg, prepared, exported)
    gate = gate_model(cfg, shipped, exported, latency_ms, champion)
    # 6. publish the version with its report and drift reference; `production` moves only if the gate passed and
    #    no other run promoted meanwhile
    records = RunRecords(prepared, trained, shipped, exported, gate, champion, latency_ms)
    report_md = write_report(cfg, records, run_dir)
    # what flows.monitor compares production with, predicted at the version's decision threshold
    reference = drift_reference(cfg, prepared, exported, run_dir, shipped.threshold)
    published = publish_model(cfg, records, report_md, reference)
    mark_published(run_dir, published.version)  # done: the next run of this data and config trains afresh
    promotion = promote_model(cfg, published.version, gate, production)

    summary = {
        "model": cfg.name,
        "version": published.version,
        "promoted": promotion.promoted,
        "production": promotion.production,
        "promotion": promotion.message,
        "gate": gate.to_dict(),
        "metrics": shipped.scalars(),
        "store": cfg.storage.uri,
        "version_uri": published.version_uri,
        "training": {
            "run_dir": str(run_dir),
            "run_folder": folder.why,
            "resumed_from": trained.resumed_from,
            "epochs_run": trained.epochs_run,
        },
    }
    publish_artifacts(cfg.name, shipped, gate, summary_markdown(summary, report_md.read_text()))
    # 7. alert: a failed gate or a regression against production -> Prefect event + webhook (crashes: the hook)
    summary["alerts"] = send_alerts(cfg, published.version, gate, champion)
    if gate.held:  # not promoted, nothing wrong: production stays, tonight's candidate is published for inspection
        return summary
    if not gate.passed:
        return failed_with(GateFailed(summary))
    if not promotion.promoted:
        return failed_with(PromotionLost(summary))
    return summary


def main(argv: list[str] | None = None) -> int:
    args = run_parser(__doc__).parse_args(argv)
    overrides = overrides_of(args)
    cfg = resolve_or_exit(args.preset, overrides)
    state = retrain(args.preset, overrides, return_state=True)
    if state.is_completed():
        summary = state.result()
    else:
        err = state.result(raise_on_failure=False)
        if not isinstance(err, NotPromoted):
            print(f"retrain failed: {err}", file=sys.stderr)
            print_summary({"model": cfg.name, "promoted": False, "error": str(err)})
            return 1
        print(err, file=sys.stderr)  # the failed rules, or who won the promotion race
        summary = err.summary
    print(f"gate:       {summary['gate']['verdict']}")
    print(f"version:    {summary['version']} ({'promoted' if summary['promoted'] else 'not promoted'})")
    print(f"production: {summary['production']}")
    print(f"model:      {summary['version_uri']}/model.onnx")
    print(f"reports:    {summary['version_uri']}/report.md, metadata.json, plots/")
    print_summary(summary)
    return 0 if summary["promoted"] or summary["gate"]["held"] else 1


if __name__ == "__main__":
    sys.exit(main())
