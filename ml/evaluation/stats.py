"""Summaries of repeated runs (mean and a Student-t interval) and the paired bootstrap of a difference between
two models scored on the same images (the champion rule's interval)."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy import stats


def mean_ci(
    values: list[float], confidence: float = 0.95, bounds: tuple[float | None, float | None] = (None, None)
) -> dict[str, float]:
    """Mean, sample std and the half-width of the t interval (0 for a single run: no spread measured). The
    interval is clipped to the metric's `bounds` (a rate's [0, 1]): with few seeds t is wide, and an accuracy
    interval reaching 1.2 says nothing more than one reaching 1."""
    x = np.asarray(values, dtype=np.float64)
    n = len(x)
    mean = float(x.mean())
    std = float(x.std(ddof=1)) if n > 1 else 0.0
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1) * std / math.sqrt(n)) if n > 1 else 0.0
    low, high = float(np.clip(mean - half, *bounds)), float(np.clip(mean + half, *bounds))
    return {"n": n, "mean": mean, "std": std, "ci_low": low, "ci_high": high, "ci_half": half}


CHUNK = 50  # resamples per vectorised step: R x N index matrices stay small on large splits


def _per_image_mean(values: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    return lambda idx: values[idx].mean(axis=1)


def _from_confusion(targets: np.ndarray, preds: np.ndarray, metric: str, k: int) -> Callable[[np.ndarray], np.ndarray]:
    """accuracy or a macro P/R/F1 (sklearn's, zero_division=0) of each resample, from one confusion per row."""

    def stat(idx: np.ndarray) -> np.ndarray:
        r = len(idx)
        codes = targets[idx] * k + preds[idx] + (np.arange(r) * k * k)[:, None]
        conf = np.bincount(codes.ravel(), minlength=r * k * k).reshape(r, k, k).astype(np.float64)
        tp, support, predicted = np.diagonal(conf, axis1=1, axis2=2), conf.sum(axis=2), conf.sum(axis=1)
        if metric == "accuracy":
            return tp.sum(axis=1) / idx.shape[1]
        num, den = (tp, predicted) if metric == "macro_precision" else (tp, support)
        if metric == "macro_f1":
            num, den = 2 * tp, support + predicted
        return np.divide(num, den, out=np.zeros_like(num), where=den > 0).mean(axis=1)

    return stat


def resampled_metric(rows: list[dict], metric: str, n_classes: int) -> Callable[[np.ndarray], np.ndarray] | None:
    """`metric` of each resample (R x N image indices) from per-image rows: a mean of the rows' own values
    (segmenter scores, a classifier's loss) or, for classifier rows (target, pred at the shipped decision),
    accuracy and macro P/R/F1 from the resampled confusion. None when the rows cannot give it (auroc)."""
    if not rows:
        return None
    if metric in rows[0]:
        return _per_image_mean(np.array([r[metric] for r in rows], dtype=np.float64))
    if {"target", "pred"} <= rows[0].keys() and metric in ("accuracy", "macro_f1", "macro_precision", "macro_recall"):
        targets, preds = (np.array([r[key] for r in rows], dtype=np.int64) for key in ("target", "pred"))
        return _from_confusion(targets, preds, metric, n_classes)
    return None


def paired_bootstrap(
    candidate: Callable[[np.ndarray], np.ndarray],
    production: Callable[[np.ndarray], np.ndarray],
    n: int,
    resamples: int,
    confidence: float,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile interval of candidate - production over `resamples` draws of the same n images for both:
    pairing removes what the images share (easy or hard ones), so the interval is that of the difference."""
    rng = np.random.default_rng(seed)
    diffs = []
    for start in range(0, resamples, CHUNK):
        idx = rng.integers(0, n, size=(min(CHUNK, resamples - start), n))
        diffs.append(candidate(idx) - production(idx))
    low, high = np.quantile(np.concatenate(diffs), [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(low), float(high)
