"""Summaries of repeated runs: mean and a Student-t confidence interval."""

from __future__ import annotations

import math

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
