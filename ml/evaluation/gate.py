"""Gate decisions: pure functions from measured numbers and config rules to a verdict, one row per rule.

    report = evaluate_gate(Candidate(metrics, model_mb=1.2, latency_ms=0.8), champion, cfg.gate)
    report.passed   # the only way to `production`

Rules (GateConfig): absolute (`min`/`max`), per class (`per_class_min`), bias (`max_class_share`), cost
(`max_model_mb`, `max_latency_ms`), int8 vs fp32 (`max_quantized_drop`) and champion/challenger (`champion`:
candidate vs production, both scored by ml.registry.champion on the evaluation images neither trained on).
With a test split (data.test_fraction) the absolute, per-class, bias and champion rules judge the test split's
figures, on which nothing was chosen (checkpoint, threshold, TTA); without one, validation's. Each row names its
split. Measuring happens elsewhere; nothing here reads files.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ml.config.evaluation import ChampionConfig, GateConfig

LOWER_IS_BETTER = {"loss"}


@dataclass
class RuleResult:
    rule: str  # e.g. "accuracy >= 0.9"
    threshold: float | None  # None: the rule has no number (nothing in production to compare with)
    measured: float | None  # None: could not be measured (missing metric, production not comparable)
    passed: bool
    detail: str = ""  # why, when the numbers alone do not say it
    split: str = ""  # the split the rule judged ("test", "validation"); "" for cost rules
    noise: bool = False  # failed by a difference its interval cannot tell from zero (gate.champion.on_noise=hold)


@dataclass
class GateReport:
    rules: list[RuleResult] = field(default_factory=list)
    metrics: dict[str, float | None] = field(default_factory=dict)  # the scalar metrics the rules judged
    measured_on: str = ""  # what scored them when not the plain checkpoint (Candidate.measured_on)
    split: str = ""  # the split those metrics are of

    @property
    def passed(self) -> bool:
        """All rules passed (no rules: nothing blocks, the verdict says so)."""
        return all(r.passed for r in self.rules)

    @property
    def failed(self) -> list[RuleResult]:
        return [r for r in self.rules if not r.passed]

    @property
    def held(self) -> bool:
        """Not passed, but only by champion rows within noise: production stays, and that is no failure."""
        return not self.passed and all(r.noise for r in self.failed)

    @property
    def verdict(self) -> str:
        if not self.rules:
            return "passed (no rules)"
        if self.held:
            return "held (candidate not distinguishable from production: production kept)"
        return "passed" if self.passed else f"failed ({len(self.failed)} of {len(self.rules)} rules failed)"

    def to_dict(self) -> dict[str, Any]:
        rules = [asdict(r) for r in self.rules]
        judged = {"metrics": self.metrics, "measured_on": self.measured_on, "split": self.split}
        return {"passed": self.passed, "held": self.held, "verdict": self.verdict, "rules": rules, **judged}


@dataclass
class Candidate:
    """What the candidate is judged on."""

    metrics: dict[str, Any]  # on the validation split; the test split's under "test" when there is one
    model_mb: float | None = None  # ONNX file size
    latency_ms: float | None = None  # median onnxruntime latency per image
    quantization: dict[str, Any] | None = None  # ml.export.quantize's record: fp32 and int8 accuracy, accuracy_drop
    measured_on: str = ""  # what `metrics` scored when not the plain checkpoint (each metric rule's detail)


@dataclass
class ChampionEval:
    """Candidate and production scored by the same code on the same images (ml.registry.champion.challenge)."""

    production_version: str | None  # what `production` pointed at when the run read it; None: nothing yet
    candidate_metrics: dict[str, float | None] = field(default_factory=dict)
    production_metrics: dict[str, float | None] = field(default_factory=dict)
    n_images: int = 0  # evaluation images both were scored on
    n_excluded: int = 0  # evaluation images left out because one of the two trained on them
    excluded: str = ""  # who trained on those, or why production's training could not be excluded (no list)
    interval: tuple[float, float] | None = None  # paired bootstrap of candidate - production on the rule's metric
    error: str | None = None  # why production could not be scored (other classes, other input, broken file)
    split: str = "validation"  # the split both were scored on ("test" when the run has one)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


ROUNDING = 1e-9  # metrics are ratios of counts: a difference this small is float noise, not a miss


def _compare(name: str, op: str, threshold: float, measured: float | None, detail: str = "") -> RuleResult:
    """`measured op threshold`, up to float rounding: 3 images of 300 is a drop of exactly 0.01, although
    0.7267 - 0.7167 computes as 0.0100000000000002."""
    rule = f"{name} {op} {threshold:g}"
    if measured is None:
        return RuleResult(rule, threshold, None, False, detail or "not measured")
    margin = measured - threshold if op == ">=" else threshold - measured
    return RuleResult(rule, threshold, measured, margin >= -ROUNDING, detail)


def absolute_rules(metrics: dict[str, Any], rules: GateConfig, detail: str = "") -> list[RuleResult]:
    """`min` rules need measured >= threshold, `max` rules measured <= threshold."""
    rows = [_compare(name, ">=", t, metrics.get(name), detail) for name, t in sorted(rules.min.items())]
    return rows + [_compare(name, "<=", t, metrics.get(name), detail) for name, t in sorted(rules.max.items())]


def per_class_rules(
    per_class: dict[str, dict[str, float]], minimums: dict[str, float], detail: str = ""
) -> list[RuleResult]:
    """One row per class and metric: `recall[circle] >= 0.85`."""
    return [
        _compare(f"{metric}[{cls}]", ">=", t, values.get(metric), detail)
        for metric, t in sorted(minimums.items())
        for cls, values in per_class.items()
    ]


def bias_rules(prediction_share: dict[str, float] | None, max_share: float | None) -> list[RuleResult]:
    """No class may take more than `max_share` of the predictions (a model predicting one class for everything)."""
    if max_share is None:
        return []
    name = "max class share of predictions"
    if not prediction_share:
        return [_compare(name, "<=", max_share, None)]
    top = max(prediction_share, key=prediction_share.__getitem__)
    return [_compare(name, "<=", max_share, prediction_share[top], f"most predicted: {top}")]


def cost_rules(candidate: Candidate, rules: GateConfig) -> list[RuleResult]:
    rows = []
    if rules.max_model_mb is not None:
        rows.append(_compare("onnx size MB", "<=", rules.max_model_mb, candidate.model_mb))
    if rules.max_latency_ms is not None:
        detail = "median per image, onnxruntime CPU, 1 thread"
        rows.append(_compare("latency ms/image", "<=", rules.max_latency_ms, candidate.latency_ms, detail))
    return rows


def quantization_rules(quantization: dict[str, Any] | None, max_drop: float | None) -> list[RuleResult]:
    """The int8 model may lose at most `max_drop` accuracy against its fp32 original (same split, onnxruntime)."""
    if max_drop is None:
        return []
    name = "int8 accuracy drop vs fp32"
    if not quantization:
        return [_compare(name, "<=", max_drop, None, "no int8 model (export.quantize=none)")]
    q = quantization
    detail = (
        f"{q['mode']}: accuracy {q['fp32']['accuracy']:.4f} -> {q['int8']['accuracy']:.4f}, "
        f"{q['fp32']['size_bytes'] / 1e6:.2f} -> {q['int8']['size_bytes'] / 1e6:.2f} MB"
    )
    return [_compare(name, "<=", max_drop, q["accuracy_drop"], detail)]


def champion_rule(champion: ChampionEval, rules: ChampionConfig) -> RuleResult:
    """Candidate vs production on `rules.metric`: not worse by more than `tolerance` (or better by `min_delta`).

    Passes, saying so, when nothing is in production; fails with the reason when production cannot be scored or
    fewer than `min_images` evaluation images are left once the images either model trained on are excluded.
    The verdict reads the point difference; the bootstrap interval beside it says whether that difference is
    distinguishable from noise. A miss the interval cannot tell from zero is marked `noise` under on_noise=hold:
    production stays, and the gate's verdict is "held" rather than "failed" (GateReport.held).
    """
    metric, prod = rules.metric, champion.production_version
    measured = champion.candidate_metrics.get(metric)
    name = f"{metric} vs production"
    if prod is None:
        return RuleResult(name, None, measured, True, "no production model yet: nothing to beat")
    if champion.error:
        return RuleResult(name, None, measured, False, f"production {prod} not comparable: {champion.error}")
    images = f"{champion.n_images} images, {champion.n_excluded} excluded ({champion.excluded})"
    if champion.n_images < rules.min_images:
        why = f"refusing to judge production {prod}: {images}, fewer than gate.champion.min_images={rules.min_images}"
        return RuleResult(name, None, measured, False, why)
    base = champion.production_metrics.get(metric)
    if base is None or measured is None:
        return RuleResult(name, None, measured, False, f"{metric} undefined on this split (production {prod})")
    sign = -1 if metric in LOWER_IS_BETTER else 1  # +1: higher is better
    margin = rules.min_delta if rules.min_delta is not None else -rules.tolerance
    threshold = base + sign * margin
    how = f"beat by >= {rules.min_delta:g}" if rules.min_delta is not None else f"tolerance {rules.tolerance:g}"
    detail = f"production {prod}: {base:.4f} ({how}); {difference(measured - base, champion.interval, rules)}; {images}"
    row = _compare(name, ">=" if sign > 0 else "<=", threshold, measured, detail)
    row.noise = not row.passed and rules.on_noise == "hold" and indistinguishable(champion.interval)
    return row


def indistinguishable(interval: tuple[float, float] | None) -> bool:
    """The interval on candidate - production holds zero: no significant difference (False without one)."""
    return interval is not None and interval[0] <= 0 <= interval[1]


def difference(diff: float, interval: tuple[float, float] | None, rules: ChampionConfig) -> str:
    """`candidate - production +0.0125, 95% CI [-0.0200, +0.0450]: no significant difference`."""
    text = f"candidate - production {diff:+.4f}"
    if interval is None:
        return f"{text}, no interval ({rules.metric} has no per-image resampling or gate.champion.bootstrap=0)"
    low, high = interval
    text += f", {rules.confidence:.0%} CI [{low:+.4f}, {high:+.4f}]"
    return text + (": no significant difference" if indistinguishable(interval) else "")


def evaluate_gate(candidate: Candidate, champion: ChampionEval, rules: GateConfig) -> GateReport:
    """Every configured rule, in a fixed order: absolute, per class, bias, cost, int8, champion. The metric rules
    judge the test split's figures when the candidate has them (`metrics["test"]`), else validation's."""
    split, on = judged_split(candidate.metrics), candidate.measured_on
    metrics = candidate.metrics["test"] if split == "test" else candidate.metrics
    rows = absolute_rules(metrics, rules, on)
    rows += per_class_rules(metrics.get("per_class", {}), rules.per_class_min, on)
    rows += bias_rules(metrics.get("prediction_share"), rules.max_class_share)
    for row in rows:
        row.split = split
    rows += cost_rules(candidate, rules)
    rows += [
        replace(r, split="validation") for r in quantization_rules(candidate.quantization, rules.max_quantized_drop)
    ]
    if rules.champion.enabled:
        rows.append(replace(champion_rule(champion, rules.champion), split=champion.split))
    return GateReport(rows, scalar_metrics(metrics), on, split)


def judged_split(metrics: dict[str, Any]) -> str:
    """ "test" when the metrics carry the test split's (under "test"), else "validation"."""
    return "test" if "test" in metrics else "validation"


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float | None]:
    """The headline numbers of a metrics dict (no per-class tables, no counts): what gates and summaries show."""
    return {k: v for k, v in metrics.items() if isinstance(v, float | int | type(None)) and k != "n"}


def regressions(champion: ChampionEval, rules: ChampionConfig) -> dict[str, tuple[float, float]]:
    """Metrics (production, candidate) on which the candidate is worse than production by more than `tolerance`.

    Scored on the same split by the same code; `loss` is left out (its scale is not that of the rates). Under
    on_noise=hold, none when the rule metric's interval holds zero: the other rates, on the same images, move
    with it, and their point drops are that same noise.
    """
    if rules.on_noise == "hold" and indistinguishable(champion.interval):
        return {}
    tolerance, found = rules.tolerance, {}
    for name in sorted(set(champion.production_metrics) & set(champion.candidate_metrics) - LOWER_IS_BETTER):
        base, new = champion.production_metrics[name], champion.candidate_metrics[name]
        if base is not None and new is not None and new < base - tolerance:
            found[name] = (base, new)
    return found
