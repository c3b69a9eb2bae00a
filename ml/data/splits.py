"""Train/val/test splits that are seeded, repeatable as data grows, and never put one group on two sides.

Near-duplicates (exposures of one tile, a brand's wordmark and icon) on both sides of a split inflate
validation scores, so splitting happens over groups; with the default one-group-per-sample it splits samples.
A group's side is a function of its id and data.split_seed only (a hash, not a shuffle of everything present),
so tonight's new files never move last night's: the model trained then is never scored on its own training images.
A group whose id changes (a renamed file, a tile that a new frame joins to another) is a new group.
"""

from __future__ import annotations

import hashlib
import os
import re

import pandas as pd

from ml.config.data import DataConfig, GroupConfig
from ml.data.errors import DatasetError
from ml.data.layouts import SPLITS

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
    """Copy of frame with `group` and `split` ('train'/'val'/'test'); same frame and config -> same split.

    A `split` already on every row (pre-split tree, manifest column) is kept as it is (with data.test_fraction and
    no test rows, a test split is hashed out of train, see `_test_from_train`); otherwise each group's side
    comes from its hash alone (see `group_hash`), so adding data never moves an existing sample.
    """
    out = frame.copy()
    out["group"] = derive_groups(frame, cfg.group)
    fixed = out["split"].fillna("").astype(str) if "split" in out.columns else pd.Series("", index=out.index)
    if (fixed != "").all() and len(out):
        bad = sorted(set(fixed) - set(SPLITS))
        if bad:
            raise DatasetError(f"split values {bad} are not {list(SPLITS)}")
        return out.assign(split=_test_from_train(out["group"], fixed, cfg))
    if (fixed != "").any():
        raise DatasetError(
            f"{int((fixed == '').sum())} of {len(out)} samples have no split while others do: "
            "give every sample a split or none"
        )
    sides = _group_sides(out, cfg.val_fraction, cfg.test_fraction, cfg.split_seed)
    out["split"] = out["group"].map(sides)
    return out


def _test_from_train(groups: pd.Series, fixed: pd.Series, cfg: DataConfig) -> pd.Series:
    """Given sides without test rows and data.test_fraction > 0: the train groups hashed at or above 1 - test_fraction
    move to test (about that share of train); validation stays as given."""
    if cfg.test_fraction == 0 or (fixed == "test").any():
        return fixed
    u = groups.map(lambda g: group_hash(g, cfg.split_seed))
    return fixed.mask((fixed == "train") & (u >= 1 - cfg.test_fraction), "test")


def group_hash(group: str, seed: int) -> float:
    """Uniform number in [0, 1) from blake2b of "<seed>:<group>": a function of the group's id and the seed only."""
    digest = hashlib.blake2b(f"{seed}:{group}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") >> 11) / float(1 << 53)  # top 53 bits: exact in a float, never 1.0


def _group_sides(frame: pd.DataFrame, val: float, test: float, seed: int) -> dict[str, str]:
    """Side per group: u = group_hash(group) -> 'val' if u < val, 'test' if u >= 1 - test, else 'train'.

    The two held-out bands sit at opposite ends of [0, 1), so changing one fraction never moves a sample of the
    other: turning data.test_fraction on later takes test samples from train only, and val stays as it was.

    Each group is one draw, so a class of n single-sample groups gets Binomial(n, val) val samples: its val share
    is val +- sqrt(val * (1 - val) / n) (one s.d.; 0.028 for n = 200 at val = 0.2), not the old exact round(n * val).

    Fallbacks, per class, over the groups it owns (a group spanning classes is owned by its most frequent label,
    ties: smallest label), classes in sorted order:
      - a class that owns one group keeps it in train (it cannot be split either way);
      - a class owning >= 2 groups with no sample in train moves its group nearest the train band to train;
      - then, with no sample in val, its group of smallest u (nearest the val band) that is not its last train
        group moves to val.
    Test gets no such guarantee: a small class may have no test samples.
    A fallback applies only while a class has no sample on that side by hash: a class with samples in train and val
    by hash never has a group moved, and as soon as a new group hashes onto the missing side the fallback stops and
    the moved group returns to its own band. Its pick can change only when the class gains a group nearer that band
    (a more extreme hash). So under growth an old sample can change side only if a fallback moved its group on one
    of the two nights, or its class owned a single group before.
    """
    sizes = frame.groupby(["group", "label"], sort=True).size().reset_index(name="n")
    sizes = sizes.sort_values(["group", "n", "label"], ascending=[True, False, True], kind="stable")
    first = sizes.drop_duplicates("group")
    owner = dict(zip(first["group"], first["label"], strict=True))
    u = {g: group_hash(g, seed) for g in owner}
    side = {g: "val" if x < val else "test" if x >= 1 - test else "train" for g, x in u.items()}
    members = sizes.groupby("label")["group"].agg(list).to_dict()  # groups holding a sample of the label
    owned: dict[str, list[str]] = {}
    for g, label in owner.items():
        owned.setdefault(label, []).append(g)

    def has(label: str, where: str) -> bool:  # any sample of label on that side (in groups of any owner)
        return any(side[g] == where for g in members[label])

    for label in sorted(owned):
        groups = sorted(owned[label], key=lambda g: (u[g], g))
        if len(groups) == 1:
            side[groups[0]] = "train"
            continue
        if not has(label, "train"):
            side[min(groups, key=lambda g: (max(val - u[g], u[g] - (1 - test), 0.0), g))] = "train"
        if not has(label, "val"):
            train = [g for g in groups if side[g] == "train"]
            candidates = [g for g in groups if side[g] == "test"] + (train if len(train) >= 2 else [])
            if candidates:
                side[min(candidates, key=lambda g: (u[g], g))] = "val"
    return side
