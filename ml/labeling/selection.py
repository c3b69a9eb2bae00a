"""Which K pool images to label next, chosen while the pool streams past: memory is bounded by K, not the pool.

    shortlist = Shortlist("diversity", "entropy", budget=100, skip=known_sha256)
    for frame in scored_frames:          # ml.monitoring.scoring rows + sha256 (ml.labeling.batch adds it)
        shortlist.add(frame)
    chosen = shortlist.select()          # <= 100 rows with score, rank and strategy

Strategies:
- uncertainty: the K highest scores (ml.monitoring.uncertainty; ties broken by file name, so runs repeat).
- diversity: k-center greedy on the embeddings (emb_* columns) among the `candidates` x K most uncertain, starting
  from the most uncertain: uncertain, and not K near-copies of one confusing image.
- balanced: round robin over predicted classes, each class's most uncertain first: rare classes get seats.
- random: a uniform draw (seeded), the baseline the others must beat.
Unreadable images, images whose sha256 is in `skip` (queued in an earlier batch, or in the training set) and
second copies of one image are never chosen. Each batch of rows is merged into the shortlist and cut back to what
the strategy can still pick (K rows; candidates x K; K per class; the K smallest random keys).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import pandas as pd

from ml.monitoring.uncertainty import uncertainty

STRATEGIES = ("uncertainty", "diversity", "balanced", "random")


def k_center_greedy(points: np.ndarray, k: int, first: int = 0) -> list[int]:
    """Farthest-first traversal: each pick is the point farthest from all picked so far (a 2-approximation of
    the k-center problem; the core-set selection of Sener & Savarese, 2018). Indices in pick order."""
    k = min(k, len(points))
    if k <= 0:
        return []
    points = np.asarray(points, dtype=np.float64)
    picked = [first]
    nearest = ((points - points[first]) ** 2).sum(axis=1)
    for _ in range(k - 1):
        i = int(nearest.argmax())
        picked.append(i)
        nearest = np.minimum(nearest, ((points - points[i]) ** 2).sum(axis=1))
    return picked


def embedding_of(rows: pd.DataFrame) -> list[str]:
    return [c for c in rows.columns if c.startswith("emb_")]


class Shortlist:
    """The rows a strategy may still pick from, updated batch by batch; counts what it saw and skipped."""

    def __init__(
        self,
        strategy: str,
        measure: str,
        budget: int,
        candidates: float = 10.0,
        seed: int = 0,
        skip: Iterable[str] = (),
    ):
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}; known: {list(STRATEGIES)}")
        self.strategy, self.measure, self.budget = strategy, measure, budget
        self.limit = math.ceil(candidates * budget) if strategy == "diversity" else budget
        self.skip = frozenset(skip)
        self.rng = np.random.default_rng(seed)
        self.rows: pd.DataFrame | None = None
        self.scored = self.unreadable = self.known = 0

    def add(self, frame: pd.DataFrame) -> None:
        """Merge one scored batch (file, sha256, readable, pred, confidence, ... columns) into the shortlist."""
        self.scored += len(frame)
        readable = frame[frame["readable"].astype(bool)]
        self.unreadable += len(frame) - len(readable)
        known = readable["sha256"].isin(self.skip)
        self.known += int(known.sum())
        fresh = readable[~known]
        if fresh.empty:
            return
        fresh = fresh.assign(score=uncertainty(fresh, self.measure))
        if self.strategy == "random":
            fresh = fresh.assign(_key=self.rng.random(len(fresh)))
        merged = fresh if self.rows is None else pd.concat([self.rows, fresh], ignore_index=True)
        if self.strategy == "diversity" and not embedding_of(merged):
            raise ValueError("strategy diversity needs embeddings (emb_* columns): this model has no projection")
        self.rows = self._cut(merged.drop_duplicates("sha256"))

    def absorb(self, other: Shortlist) -> None:
        """Take in the shortlist of another shard of the same pool (same settings): the top rows of the union are
        among the union of each shard's top rows, so the merged shortlist is the one the whole pool gives."""
        self.scored, self.unreadable, self.known = (
            self.scored + other.scored,
            self.unreadable + other.unreadable,
            self.known + other.known,
        )
        if other.rows is not None:
            merged = other.rows if self.rows is None else pd.concat([self.rows, other.rows], ignore_index=True)
            self.rows = self._cut(merged.drop_duplicates("sha256"))

    def _cut(self, rows: pd.DataFrame) -> pd.DataFrame:
        if self.strategy == "random":
            return rows.sort_values(["_key"]).head(self.budget)
        rows = rows.sort_values(["score", "file"], ascending=[False, True])
        if self.strategy == "balanced":
            return rows[rows.groupby("pred").cumcount() < self.budget]
        return rows.head(self.limit)

    def select(self) -> pd.DataFrame:
        """The chosen rows in pick order, with `rank` (0 = first pick) and `strategy`."""
        rows = self.rows if self.rows is not None else pd.DataFrame(columns=["file", "sha256", "score", "pred"])
        if self.strategy == "diversity" and len(rows):
            order = k_center_greedy(rows[embedding_of(rows)].to_numpy(), self.budget, first=0)
            chosen = rows.iloc[order]
        elif self.strategy == "balanced":
            turn = rows.groupby("pred").cumcount()
            chosen = rows.assign(_turn=turn).sort_values("_turn", kind="stable").head(self.budget)
        else:
            chosen = rows.head(self.budget)
        chosen = chosen.drop(columns=[c for c in ("_key", "_turn") if c in chosen.columns])
        return chosen.reset_index(drop=True).assign(rank=lambda f: range(len(f)), strategy=self.strategy)
