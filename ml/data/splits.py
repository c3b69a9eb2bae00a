"""Train/val splits that are seeded, stratified by class, and never put one group on both sides.

Near-duplicates (exposures of one tile, a brand's wordmark and icon) on both sides of a split inflate
validation scores, so splitting happens over groups; with the default one-group-per-sample it is a
plain stratified split.
"""

from __future__ import annotations

import os
import re
import zlib

import numpy as np
import pandas as pd

from ml.config.run import DataConfig, GroupConfig
from ml.data.layouts import SPLITS, DatasetError

TILE_NAME = re.compile(r"^(?P<type>.+)_exp(?P<exp>\d+)_num_(?P<num>\d+)$")


def _file_names(frame: pd.DataFrame) -> pd.Series:
    return frame["path"].map(os.path.basename)


def _unmatched(names: pd.Series, bad: pd.Series, rule: str) -> DatasetError:
    return DatasetError(f"{int(bad.sum())} file name(s) do not match {rule}, e.g. {names[bad].head(5).tolist()}")


def derive_groups(frame: pd.DataFrame, group: GroupConfig) -> pd.Series:
    """Group id per sample (index aligned with frame): samples sharing an id stay on one side."""
    if group.by == "none":
        return frame["group"].astype(str)
    if group.by == "column":
        if group.column not in frame.columns:
            raise DatasetError(f"group.by=column: no column {group.column!r} in the index; has {list(frame.columns)}")
        values = frame[group.column].fillna("").astype(str)
        empty = values == ""
        if empty.any():
            raise _unmatched(_file_names(frame), empty, f"a non-empty {group.column!r} value (group.by=column)")
        return values.rename("group")
    if group.by == "regex":
        return _regex_groups(frame, group.pattern or "")
    return _tile_groups(frame, group.tile_gap)


def _regex_groups(frame: pd.DataFrame, pattern: str) -> pd.Series:
    try:
        rx = re.compile(pattern)
    except re.error as e:
        raise DatasetError(f"group.pattern {pattern!r} is not a valid regex ({e})") from e
    names = _file_names(frame)

    def key(name: str) -> str | None:
        m = rx.search(name)
        if m is None:
            return None
        return m.group(1) if rx.groups and m.group(1) is not None else m.group(0)

    keys = names.map(key)
    if keys.isna().any():
        raise _unmatched(names, keys.isna(), f"group.pattern {pattern!r}")
    return keys.astype(str).rename("group")


def _tile_groups(frame: pd.DataFrame, gap: int) -> pd.Series:
    """`<type>_exp<E>_num_<N>`: frames of one type whose N follow within `gap` of the previous are one tile."""
    names = _file_names(frame)
    parts = names.map(lambda n: TILE_NAME.match(os.path.splitext(n)[0]))
    if parts.isna().any():
        raise _unmatched(names, parts.isna(), "<type>_exp<E>_num_<N> (group.by=tile)")
    kinds = parts.map(lambda m: m["type"])
    nums = parts.map(lambda m: int(m["num"]))
    ids: dict[object, str] = {}
    prev_kind, prev_num, current = None, 0, ""
    for i, kind, num in sorted(zip(frame.index, kinds, nums, strict=True), key=lambda t: (t[1], t[2])):
        if kind != prev_kind or num - prev_num > gap:
            current = f"{kind}_num_{num}"
        ids[i] = current
        prev_kind, prev_num = kind, num
    return pd.Series([ids[i] for i in frame.index], index=frame.index, name="group", dtype=str)


def assign_splits(frame: pd.DataFrame, cfg: DataConfig) -> pd.DataFrame:
    """Copy of frame with `group` and `split` ('train'/'val'); same frame and config -> same split."""
    out = frame.copy()
    out["group"] = derive_groups(frame, cfg.group)
    fixed = out["split"].fillna("").astype(str) if "split" in out.columns else pd.Series("", index=out.index)
    if (fixed != "").all() and len(out):
        bad = sorted(set(fixed) - set(SPLITS))
        if bad:
            raise DatasetError(f"split values {bad} are not {list(SPLITS)}")
        return out.assign(split=fixed)
    if (fixed != "").any():
        raise DatasetError(
            f"{int((fixed == '').sum())} of {len(out)} samples have no split while others do: "
            "give every sample a split or none"
        )
    out["split"] = "train"
    val = _val_groups(out, cfg.val_fraction, cfg.split_seed)
    out.loc[out["group"].isin(val), "split"] = "val"
    return out


def _val_groups(frame: pd.DataFrame, fraction: float, seed: int) -> set[str]:
    """Greedy per class: shuffle its groups, move them to val until round(n * fraction) samples are there."""
    sizes = frame.groupby(["group", "label"], sort=True).size().reset_index(name="n")
    # a group spanning classes is placed with its most frequent label (ties: smallest label)
    sizes = sizes.sort_values(["group", "n", "label"], ascending=[True, False, True], kind="stable")
    owner = sizes.drop_duplicates("group")
    totals = frame.groupby("group").size().to_dict()
    val: set[str] = set()
    for label, rows in owner.groupby("label", sort=True):
        groups = sorted(rows["group"])
        n = sum(totals[g] for g in groups)
        target = int(np.floor(n * fraction + 0.5))
        if len(groups) >= 2:
            target = max(target, 1)
        rng = np.random.default_rng([seed % (1 << 63), zlib.crc32(str(label).encode())])
        taken = 0
        for k, j in enumerate(rng.permutation(len(groups))):
            if taken >= target or k >= len(groups) - 1:  # keep at least one group in train
                break
            val.add(groups[j])
            taken += int(totals[groups[j]])
    return val
