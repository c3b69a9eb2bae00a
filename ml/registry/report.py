"""Markdown and table renderings of a run, shared by the stored report.md and the Prefect artifacts."""

from __future__ import annotations

from typing import Any

from ml.evaluation.gate import ChampionEval, GateReport, scalar_metrics
from ml.registry.records import RunRecords


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def decision_text(decision: dict[str, Any]) -> str:
    """One line on a binary model's threshold and what it changed against the argmax."""
    return (
        f"P({decision['positive']}) >= {decision['threshold']:.4f} ({decision['rule']} on validation; "
        f"accuracy at argmax {decision['argmax_accuracy']:.4f}, macro F1 at argmax {decision['argmax_macro_f1']:.4f})"
    )


def metric_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per class (precision, recall, F1, support, share of predictions) plus the overall row; for a
    segmenter one row per validation image (ml.training.segmenter: f1, iou, ..., and <metric>_post beside each)."""
    if "per_image" in metrics:
        return [{k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()} for r in metrics["per_image"]]
    rows = [
        {
            "class": c,
            **{k: round(v, 4) if isinstance(v, float) else v for k, v in pc.items()},
            "predicted_share": round(metrics["prediction_share"][c], 4),
        }
        for c, pc in metrics["per_class"].items()
    ]
    rows.append(
        {
            "class": "(all)",
            "precision": round(metrics["macro_precision"], 4),
            "recall": round(metrics["macro_recall"], 4),
            "f1": round(metrics["macro_f1"], 4),
            "support": metrics["n"],
            "predicted_share": 1.0,
        }
    )
    return rows


def gate_rows(gate: GateReport) -> list[dict[str, Any]]:
    """One row per rule: rule, the split it judged, threshold, measured, result (pass / FAIL), detail."""
    return [
        {
            "rule": r.rule,
            "split": r.split,
            "threshold": "n/a" if r.threshold is None else f"{r.threshold:g}",
            "measured": _fmt(r.measured),
            "result": "pass" if r.passed else "FAIL",
            "detail": r.detail,
        }
        for r in gate.rules
    ]


def source_rows(by_source: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Target-vs-rest: how often each original category was classified right (hard negatives show here)."""
    return [{"source class": name, "n": r["n"], "accuracy": round(r["accuracy"], 4)} for name, r in by_source.items()]


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "_none_\n"
    head = list(rows[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_fmt(r.get(h)) for h in head) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def headline_rows(metrics: dict[str, Any], measured_on: str) -> list[dict[str, Any]]:
    """The headline metrics, one row for validation and one for test when there is a test split; when the shipped
    file is not the checkpoint (flips or int8 inside), the checkpoint's rows too, so the report shows what they
    changed."""
    scored = (
        {"model.onnx as shipped": metrics, "best checkpoint": metrics["checkpoint"]} if measured_on else {"": metrics}
    )
    return [
        {**({"scored": name} if name else {}), "split": split, **{k: _fmt(v) for k, v in scalar_metrics(m).items()}}
        for name, both in scored.items()
        for split, m in (("validation", both), ("test", both.get("test")))
        if m is not None
    ]


def run_markdown(model: str, task: str, records: RunRecords) -> str:
    """The run's report.md (stored with the version): verdict first, then gate rules, headline metrics, the
    per-class (or per-image) table, and the run's facts."""
    gate, metrics, on = records.gate, records.evaluation.metrics, records.evaluation.measured_on
    lines = [
        f"# {model}: gate {gate.verdict}",
        "",
        "## Gate",
        _table(gate_rows(gate)),
        f"## Metrics{f' ({on})' if on else ''}",
        _table(headline_rows(metrics, on)),
        "## Per class / per image (validation)",
        _table(metric_rows(metrics)),
        *(["## Per class / per image (test)", _table(metric_rows(metrics["test"]))] if "test" in metrics else []),
        *(
            ["## By source class (hardest first)", _table(source_rows(metrics["by_source"]))]
            if "by_source" in metrics
            else []
        ),
        "## Run",
        *[f"- **{k}**: {v}" for k, v in run_facts(records, "tile" if task == "segment" else "image").items()],
        "",
    ]
    return "\n".join(lines)


def run_facts(records: RunRecords, unit: str) -> dict[str, str]:
    """The "Run" section of report.md: data, device, epochs, the ONNX file, what production it was compared with,
    and a binary model's decision threshold. `unit`: what latency is per (image, tile)."""
    prepared, trained, exported = records.prepared, records.trained, records.exported
    onnx = f"{exported.size_bytes / 1e6:.2f} MB, parity {exported.max_abs_diff:.1e}, {records.latency_ms:.2f} ms/{unit}"
    if q := exported.quantization:
        onnx += f" (int8 {q['mode']}; fp32 {q['fp32']['size_bytes'] / 1e6:.2f} MB, parity is fp32's)"
    facts = {
        "dataset": str(prepared.root),
        "fingerprint": prepared.fingerprint[:16],
        "/".join(prepared.counts): "/".join(str(sum(n.values())) for n in prepared.counts.values()),
        "device": trained.device,
        "epochs": f"{trained.epochs_run} (best {trained.best_epoch})",
        "onnx": onnx,
        "compared with production": compared_with(records.champion),
    }
    evaluation = records.evaluation
    decision = evaluation.metrics["decision"] if evaluation.threshold is not None else None
    return facts | ({"decision": decision_text(decision)} if decision else {})


def compared_with(champion: ChampionEval) -> str:
    """Which production version, on how many evaluation images, and which were left out and why."""
    if champion.production_version is None:
        return "none (first version)"
    used = f"{champion.n_images} {champion.split} images, {champion.n_excluded} excluded"
    return f"{champion.production_version} on {used} ({champion.excluded})"


def summary_markdown(summary: dict[str, Any], report: str) -> str:
    """The `<model>-summary` artifact: the verdict, where the model went, then the report."""
    verdict = "promoted to production" if summary["promoted"] else f"NOT promoted ({summary['promotion']})"
    head = (
        f"**{summary['model']} {summary['version']}**: {verdict}; production is now "
        f"`{summary['production']}`.\n\nModel: `{summary['version_uri']}/model.onnx`\n\n"
    )
    return head + report
