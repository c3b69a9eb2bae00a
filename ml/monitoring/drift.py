"""Drift of prediction-log rows against a version's reference frame, with Evidently; live metrics from labels.

    result = detect_drift(pd.read_parquet("reference.parquet"), window_rows, MonitorConfig())
    result.verdict, result.groups                      # "drift", {"image properties": True, "embedding": True, ...}
    drift_report(reference, window_rows, result).save_html("report.html")   # Evidently: a widget per column
    live = live_metrics(attach_labels(window_rows, labels_csv_frame), version_metrics, MonitorConfig())

Verdicts by group: image properties, prediction and confidence (margin, entropy) drift when `drift_share` of
their columns fail Evidently's per-column test; embeddings drift when a classifier tells window rows from
reference rows on held-out data better than chance (Evidently's own embedding method, `model`, does this
too, but it also fits a t-SNE for its plot on every run: 27 s for 180 rows on this 2-core machine). Under
monitor.correction=bonferroni every p-value threshold is divided by the number of groups: four chances to alarm
on a quiet night would otherwise add up.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import cache
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy.stats import chi2_contingency, mannwhitneyu
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ml.config.production import IMAGE_PROPERTIES, P_VALUE_STATTESTS, MonitorConfig

if TYPE_CHECKING:
    from evidently.core.report import Snapshot  # evidently is imported lazily (_evidently)

GROUPS = {"prediction": ["pred"], "confidence": ["confidence", "margin", "entropy"]}  # + image properties
EMBEDDING = "embedding"


def embedding_drift(reference: np.ndarray, current: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """(ROC AUC, p-value) of a logistic regression telling current rows from reference rows, on a held-out half.

    With no drift the held-out scores are independent of which side a row came from, so the AUC follows the
    Mann-Whitney null distribution: the p-value is exact, not a bootstrap.
    """
    x = np.vstack([reference, current])
    y = np.r_[np.zeros(len(reference)), np.ones(len(current))]
    train, test = train_test_split(np.arange(len(y)), test_size=0.5, stratify=y, random_state=seed)
    clf = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=1000))
    scores = clf.fit(x[train], y[train]).decision_function(x[test])
    cur, ref = scores[y[test] == 1], scores[y[test] == 0]
    result = mannwhitneyu(cur, ref, alternative="greater")
    return float(result.statistic / (len(cur) * len(ref))), float(result.pvalue)


@dataclass
class DriftResult:
    verdict: str  # "drift", "no drift" or "too few rows"
    columns: list[dict[str, Any]]  # group, column, method, threshold, score, drifted: one per test
    groups: dict[str, bool]  # group -> drifted
    reference_rows: int
    current_rows: int

    @property
    def drifted(self) -> bool:
        return self.verdict == "drift"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def chi2_homogeneity(reference: pd.Series, current: pd.Series, _: Any, threshold: float) -> tuple[float, bool]:
    """Chi-square test of homogeneity of two samples of classes (p-value, drifted).

    Evidently's `chisquare` compares current counts with the reference shares taken as exact: with a reference
    of 80 rows it raised 3 false alarms in 20 same-distribution draws where this test raised none.
    """
    counts = pd.concat([reference.value_counts(), current.value_counts()], axis=1).fillna(0).to_numpy()
    p = float(chi2_contingency(counts).pvalue) if len(counts) > 1 else 1.0
    return p, p < threshold


@cache
def _evidently() -> SimpleNamespace:
    """Evidently (~5 s to import: only the monitor pays for it), with chi2_homogeneity registered."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.legacy.calculations.stattests.registry import StatTest, get_stattest, register_stattest
    from evidently.legacy.core import ColumnType
    from evidently.metrics import ValueDrift

    register_stattest(
        StatTest("chi2_homogeneity", "chi-square homogeneity p_value", [ColumnType.Categorical]), chi2_homogeneity
    )
    return SimpleNamespace(
        DataDefinition=DataDefinition,
        Dataset=Dataset,
        Report=Report,
        ValueDrift=ValueDrift,
        get_stattest=get_stattest,
        ColumnType=ColumnType,
    )


def _test_of(column: str, cfg: MonitorConfig, family: int = 1) -> tuple[str, float]:
    """(Evidently method, threshold) for a column: its own entry in monitor.columns, else the defaults; a p-value
    threshold shared among `family` group verdicts (monitor.correction)."""
    own = cfg.columns.get(column)
    method = (own and own.method) or (cfg.cat_stattest if column == "pred" else cfg.stattest)
    threshold = (own and own.threshold) or cfg.threshold
    return method, threshold / family if method in P_VALUE_STATTESTS else threshold


def column_drift(
    reference: pd.DataFrame, current: pd.DataFrame, groups: dict[str, list[str]], cfg: MonitorConfig, family: int = 1
) -> list[dict[str, Any]]:
    """Evidently's drift test of every column: the same stattest and threshold its ValueDrift metric applies."""
    ev = _evidently()
    rows = []
    for group, columns in groups.items():
        for column in columns:
            kind = ev.ColumnType.Categorical if column == "pred" else ev.ColumnType.Numerical
            method, threshold = _test_of(column, cfg, family)
            test = ev.get_stattest(reference[column], current[column], kind, method)
            result = test(reference[column], current[column], kind, threshold)
            rows.append(
                {
                    "group": group,
                    "column": column,
                    "method": method,
                    "threshold": threshold,
                    "score": float(result.drift_score),
                    "drifted": bool(result.drifted),
                }
            )
    return rows


def detect_drift(reference: pd.DataFrame, current: pd.DataFrame, cfg: MonitorConfig, seed: int = 0) -> DriftResult:
    """Per-column Evidently tests and the embedding test of the readable window rows against the reference."""
    ref = reference[reference["readable"]]
    cur = current[current["readable"]] if len(current) else current
    if len(cur) < cfg.min_rows:
        return DriftResult("too few rows", [], {}, len(ref), len(cur))
    groups = {"image properties": [c for c in IMAGE_PROPERTIES if c in ref and c in cur], **GROUPS}
    emb = embedding_columns_of(ref, cur)
    family = len(groups) + bool(emb) if cfg.correction == "bonferroni" else 1
    rows = column_drift(ref, cur, groups, cfg, family)
    verdicts = {
        g: sum(r["drifted"] for r in rows if r["group"] == g) >= cfg.drift_share * len(cols)
        for g, cols in groups.items()
    }
    if emb:
        auc, p = embedding_drift(ref[emb].to_numpy(), cur[emb].to_numpy(), seed)
        threshold = cfg.embedding_threshold / family
        verdicts[EMBEDDING] = p < threshold
        method = f"domain classifier ROC AUC {auc:.3f}, p-value"
        row = {"column": f"{emb[0]}..{emb[-1]}", "method": method, "threshold": threshold, "score": p}
        rows.append({"group": EMBEDDING, **row, "drifted": verdicts[EMBEDDING]})
    verdict = "drift" if any(verdicts.values()) else "no drift"
    return DriftResult(verdict, rows, verdicts, len(ref), len(cur))


def embedding_columns_of(reference: pd.DataFrame, current: pd.DataFrame) -> list[str]:
    return [c for c in reference.columns if c.startswith("emb_") and c in current]


def drift_report(
    reference: pd.DataFrame, current: pd.DataFrame, result: DriftResult, shown_components: int = 4
) -> Snapshot:
    """The Evidently report (snapshot: .save_html) of `result`'s column tests on the same rows, plus the
    distributions of the first embedding components (shown, not tested: the verdict is the classifier's)."""
    ev = _evidently()
    tests = [r for r in result.columns if r["group"] != EMBEDDING]
    shown = embedding_columns_of(reference, current)[:shown_components]
    metrics = [ev.ValueDrift(column=r["column"], method=r["method"], threshold=r["threshold"]) for r in tests]
    metrics += [ev.ValueDrift(column=c, tests=[]) for c in shown]
    columns = [r["column"] for r in tests] + shown
    definition = ev.DataDefinition(numerical_columns=[c for c in columns if c != "pred"], categorical_columns=["pred"])
    ref, cur = reference[reference["readable"]], current[current["readable"]]
    return ev.Report(metrics, include_tests=True).run(
        current_data=ev.Dataset.from_pandas(cur[columns], data_definition=definition),
        reference_data=ev.Dataset.from_pandas(ref[columns], data_definition=definition),
    )


@dataclass
class LiveMetrics:
    labelled: int
    judged: bool  # enough labels (monitor.min_labels) to compare with validation
    live: dict[str, float]  # accuracy, macro_f1 on the labelled window rows
    validation: dict[str, float | None]  # the version's figures
    dropped: dict[str, float]  # metric -> live minus validation, where the drop exceeds the tolerance
    tolerance: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def attach_labels(window: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """Labels from a CSV (path,label): a path matches a logged `file` exactly or relative to its `source`."""
    if not {"path", "label"} <= set(labels.columns):
        raise ValueError(f"labels CSV needs columns path,label; it has {list(labels.columns)}")
    by_path = dict(zip(labels["path"].astype(str), labels["label"].astype(str), strict=True))
    relative = [
        f[len(s) :].lstrip("/") if f.startswith(s) else f for f, s in zip(window["file"], window["source"], strict=True)
    ]
    found = [by_path.get(f, by_path.get(r, "")) for f, r in zip(window["file"], relative, strict=True)]
    return window.assign(label=[new or old for new, old in zip(found, window["label"], strict=True)])


def live_metrics(window: pd.DataFrame, validation: dict[str, Any], cfg: MonitorConfig) -> LiveMetrics:
    """Accuracy and macro F1 of labelled readable rows vs the version's validation figures."""
    rows = window[window["readable"] & (window["label"] != "")] if len(window) else window
    base = {m: validation.get(m) for m in ("accuracy", "macro_f1")}
    if len(rows) < cfg.min_labels:
        return LiveMetrics(len(rows), False, {}, base, {}, cfg.metric_tolerance)
    truth, pred = rows["label"].astype(str), rows["pred"].astype(str)
    live = {
        "accuracy": float(accuracy_score(truth, pred)),
        "macro_f1": float(f1_score(truth, pred, average="macro", zero_division=0)),
    }
    dropped = {m: live[m] - v for m, v in base.items() if v is not None and live[m] < v - cfg.metric_tolerance}
    return LiveMetrics(len(rows), True, live, base, dropped, cfg.metric_tolerance)
