"""Data validation: profile the dataset, run the Great Expectations suite of its kind, say exactly what failed.

    report = validate_dataset(cfg, run_dir)   # plain Python + GX, no Prefect
    report.passed, report.markdown(), report.prepared   # prepared: the split (None when validation failed)

The suites are GX suite JSON in expectations/<kind>.json (classification; segmentation for layout=image_mask).
They are templates: a threshold written {"$PARAMETER": "min_per_class"} is filled at run time from
data.expect by suite_parameters() and handed to GX as expectation_parameters; a rule whose parameters are all
null is skipped. Rules read computed columns: per sample `aspect` (long side / short side), `leak` (same sha256 in
train and val),
`conflict` (same sha256 under two labels), `copies` (same sha256 in one split and class), `mask_empty`; and a
per-class table (count, imbalance = largest class / this class).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import great_expectations as gx
import numpy as np
import pandas as pd
from great_expectations.core import ExpectationSuite
from great_expectations.data_context.types.base import ProgressBarsConfig

from ml.config.data import ExpectConfig
from ml.config.run import RunConfig
from ml.core.files import PROJECT_ROOT
from ml.data.errors import DatasetError
from ml.data.layouts import class_names
from ml.data.prepare import PreparedData, load_frame, split_frame, write_prepared
from ml.data.profile import Profile, profile_dataset

log = logging.getLogger(__name__)
logging.getLogger("great_expectations").setLevel(logging.WARNING)  # its INFO lines are per-context chatter

EXPECTATIONS = PROJECT_ROOT / "expectations"
SHOWN = 20  # offending files listed per failed rule
# where each suite parameter comes from, for the report
SOURCES = {
    "min_foreground": "data.expect.mask_foreground[0]",
    "max_foreground": "data.expect.mask_foreground[1]",
    "max_copies": "1 unless data.expect.allow_duplicates",
}


class DataValidationError(DatasetError):
    """The dataset broke at least one rule; the message lists each rule, its threshold and the files."""

    def __init__(self, report: ValidationReport):
        super().__init__(failures_markdown(report))
        self.report = report

    def __reduce__(self):  # Prefect pickles task exceptions
        return type(self), (self.report,)


@dataclass
class ExpectationResult:
    rule: str
    expectation: str
    threshold: str
    observed: str
    status: str  # passed | failed | skipped
    count: int = 0  # offending rows
    offending: list[str] = field(default_factory=list)  # the first SHOWN, "file: detail"


@dataclass
class ValidationReport:
    model: str
    kind: str  # classification | segmentation
    root: str
    rules: list[ExpectationResult]
    classes: list[dict[str, Any]] = field(default_factory=list)  # label, train, val, total, share
    stats: dict[str, Any] = field(default_factory=dict)
    quarantined: list[str] = field(default_factory=list)  # "file: error"
    prepared: PreparedData | None = None

    @property
    def passed(self) -> bool:
        return all(r.status != "failed" for r in self.rules)

    def failures(self) -> list[ExpectationResult]:
        return [r for r in self.rules if r.status == "failed"]

    def markdown(self) -> str:
        return report_markdown(self)


def suite_kind(cfg: RunConfig) -> str:
    return "segmentation" if cfg.data.layout == "image_mask" else "classification"


def suite_parameters(expect: ExpectConfig) -> dict[str, Any]:
    """The values of the suites' {"$PARAMETER": name} placeholders (None: the rule is skipped)."""
    return {
        "min_per_class": expect.min_per_class,
        "max_imbalance": expect.max_imbalance,
        "allowed_channels": expect.allowed_channels,
        "min_size": expect.min_size,
        "max_size": expect.max_size,
        "max_aspect": expect.max_aspect,
        "min_foreground": expect.mask_foreground[0],
        "max_foreground": expect.mask_foreground[1],
        "max_empty_mask_share": expect.max_empty_mask_share,
        "max_copies": None if expect.allow_duplicates else 1,
    }


def profile_cache(cfg: RunConfig) -> Path:
    """data.cache_dir/profile-<model>.parquet; by default beside the run folders (.visionflow/cache)."""
    return (cfg.data.cache_dir or cfg.storage.workdir.parent / "cache") / f"profile-{cfg.name}.parquet"


def with_checks(samples: pd.DataFrame) -> pd.DataFrame:
    """The profile plus the computed columns the suites read (see the module docstring)."""
    out = samples.reset_index(drop=True)
    sides = out[["width", "height"]]
    out["aspect"] = sides.max(axis=1, skipna=False) / sides.min(axis=1, skipna=False)  # NaN: not decoded
    hashed = out["sha256"].notna()
    by = out[hashed].groupby("sha256")
    out["leak"] = False
    out.loc[hashed, "leak"] = by["split"].transform("nunique") > 1
    out["conflict"] = False
    out.loc[hashed, "conflict"] = by["label"].transform("nunique") > 1
    out["copies"] = np.nan
    out.loc[hashed, "copies"] = out[hashed].groupby(["sha256", "split", "label"])["file"].transform("size")
    out["same_as"] = ""
    dup = out[hashed & (out["sha256"].map(out.loc[hashed, "sha256"].value_counts()) > 1)]
    names = {sha: [f"{f} ({s}, {lab})" for f, s, lab in zip(g["file"], g["split"], g["label"], strict=True)]
             for sha, g in dup.groupby("sha256")}  # fmt: skip
    for i, sha, own in zip(dup.index, dup["sha256"], dup["file"], strict=True):
        others = [n for n in names[sha] if not n.startswith(f"{own} (")]
        out.at[i, "same_as"] = "same bytes as " + ", ".join(others[:3]) + (" ..." if len(others) > 3 else "")
    if "mask" in out.columns:
        usable = out["mask_present"] & (out["mask_readable"] == True)  # noqa: E712 (object column with None)
        fg = out["mask_foreground"]
        out["mask_empty"] = np.where(usable, (fg == 0).astype(float), np.nan)
        out["mask_foreground_nonempty"] = fg.where(usable & (fg > 0))
    return out


def class_table(samples: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """One row per class (zero for a class left without images): counts per split and imbalance. The count is
    the class's whole share of the data, test split included: holding a test split back changes no balance."""
    counts = samples.groupby(["label", "split"]).size()
    sides = ("train", "val", "test")
    rows = []
    for c in classes:
        per_side = {side: int(counts.get((c, side), 0)) for side in sides}
        rows.append({"label": c, "file": f"class {c!r}", **per_side, "count": sum(per_side.values())})
    table = pd.DataFrame(rows, columns=["label", "file", *sides, "count"])
    largest = table["count"].max() if len(table) else 0
    table["imbalance"] = [largest / n if n else math.inf for n in table["count"]]
    return table


DETAILS = {  # how an offending row is described, by the rule's meta.detail
    "error": lambda r: r["error"],
    "count": lambda r: (
        f"{r['count']} images ({r['train']} train, {r['val']} val, {r['test']} test); "
        f"largest class / this {r['imbalance']:.3g}"
    ),
    "channels": lambda r: f"{r['channels']:.0f} channel(s), {r['format']}",
    "size": lambda r: f"{r['width']:.0f}x{r['height']:.0f} px",
    "aspect": lambda r: f"{r['width']:.0f}x{r['height']:.0f} px, long side / short side {r['aspect']:.4g}",
    "same_as": lambda r: r["same_as"],
    "expected_mask": lambda r: f"no mask {Path(r['path']).parent.parent / 'masks' / Path(r['path']).stem}.png",
    "mask": lambda r: f"no foreground pixel in {r['mask']}",
    "mask_error": lambda r: f"{r['mask']}: {r['mask_error']}",
    "mask_size": lambda r: (
        f"image {r['width']:.0f}x{r['height']:.0f}, mask {r['mask_width']:.0f}x{r['mask_height']:.0f} ({r['mask']})"
    ),
    "mask_values": lambda r: f"mask values {r['mask_levels']}, foreground {r['mask_foreground']:.2%} ({r['mask']})",
}


def _params_of(kwargs: dict[str, Any]) -> list[str]:
    return [v["$PARAMETER"] for v in kwargs.values() if isinstance(v, dict) and "$PARAMETER" in v]


def _threshold(kwargs: dict[str, Any], params: dict[str, Any]) -> str:
    parts = []
    for k, v in kwargs.items():
        if k == "column":
            continue
        if isinstance(v, dict) and "$PARAMETER" in v:
            name = v["$PARAMETER"]
            parts.append(f"{k} = {params.get(name)} ({SOURCES.get(name, f'data.expect.{name}')})")
        else:
            parts.append(f"{k} = {v}")
    return "; ".join(parts)


def _expectation(exp: dict[str, Any]) -> str:
    column = exp["kwargs"].get("column")
    return f"{exp['type']}({column})" if column else exp["type"]


def _skip_reason(exp: dict[str, Any], frame: pd.DataFrame, params: dict[str, Any]) -> str:
    column = exp["kwargs"].get("column")
    if column and column not in frame.columns:
        return "no masks in this dataset" if column.startswith("mask_") else f"no column {column!r} in the profile"
    names = _params_of(exp["kwargs"])
    if names and all(params.get(n) is None for n in names):
        return "threshold unset (" + ", ".join(SOURCES.get(n, f"data.expect.{n}") for n in names) + ")"
    return ""


def _offending(exp: dict[str, Any], result: dict[str, Any], frame: pd.DataFrame) -> list[int]:
    where = exp.get("meta", {}).get("offending")
    if where == "all":
        return list(range(len(frame)))
    if where:
        return np.flatnonzero(frame[where].fillna(0).astype(bool).to_numpy()).tolist()
    return [int(i) for i in result.get("unexpected_index_list") or []]


def _expectation_result(
    exp: dict[str, Any], res: Any, frame: pd.DataFrame, params: dict[str, Any], what: str
) -> ExpectationResult:
    meta, result = exp.get("meta", {}), res.result or {}
    base = {"rule": meta.get("rule", exp["type"]), "expectation": _expectation(exp)}
    base["threshold"] = _threshold(exp["kwargs"], params)
    info = res.exception_info or {}
    raised = [i for i in [info, *info.values()] if isinstance(i, dict) and i.get("raised_exception")]
    if raised:  # GX nests errors by metric
        return ExpectationResult(**base, observed=f"GX error: {raised[0].get('exception_message')}", status="failed")
    observed = result.get("observed_value")
    if observed is None:
        observed = f"{result.get('unexpected_count', 0)} of {result.get('element_count', len(frame))} {what} break it"
    elif isinstance(observed, float):
        observed = f"{observed:.4g}"
    # a rule over the whole frame that passed still lists its rows (e.g. the few empty masks allowed): warnings
    rows = [] if res.success and meta.get("offending") in (None, "all") else _offending(exp, result, frame)
    describe = DETAILS[meta["detail"]] if meta.get("detail") else (lambda r: "")
    shown = [f"{frame.at[i, 'file']}: {describe(frame.loc[i])}" for i in rows[:SHOWN]]
    status = "passed" if res.success else "failed"
    return ExpectationResult(**base, observed=str(observed), status=status, count=len(rows), offending=shown)


def run_suite(
    kind: str, samples: pd.DataFrame, classes: pd.DataFrame, params: dict[str, Any]
) -> list[ExpectationResult]:
    """Every rule of expectations/<kind>.json, in file order: passed, failed (with its files) or skipped."""
    spec = json.loads((EXPECTATIONS / f"{kind}.json").read_text())
    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = ctx.data_sources.add_pandas("profile")
    frames = {"samples": (samples.reset_index(drop=True), "images"), "classes": (classes, "classes")}
    out: dict[int, ExpectationResult] = {}
    for name, (frame, what) in frames.items():
        todo = {}
        for i, exp in enumerate(spec["expectations"]):
            if exp.get("meta", {}).get("frame", "samples") != name:
                continue
            reason = _skip_reason(exp, frame, params)
            if reason:
                threshold = _threshold(exp["kwargs"], params)
                out[i] = ExpectationResult(exp["meta"]["rule"], _expectation(exp), threshold, reason, "skipped")
            else:
                todo[exp["meta"]["rule"]] = (i, exp)
        if not todo:
            continue
        suite = ExpectationSuite(name=f"{spec['name']}-{name}", expectations=[e for _, e in todo.values()])
        asset = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe("all")
        batch = asset.get_batch(batch_parameters={"dataframe": frame})
        validation = batch.validate(suite, expectation_parameters=params, result_format={"result_format": "COMPLETE"})
        for res in validation.results:
            i, exp = todo[res.expectation_config.meta["rule"]]
            out[i] = _expectation_result(exp, res, frame, params, what)
    return [out[i] for i in sorted(out)]


def _quarantine(profile: pd.DataFrame, report: ValidationReport) -> pd.DataFrame:
    """Drop unreadable images (and images whose mask is unreadable), listing them in the report."""
    bad = ~profile["readable"]
    if "mask_readable" in profile.columns:
        bad |= profile["mask_readable"] == False  # noqa: E712 (object column with None)
    why = profile["error"].where(~profile["readable"], profile.get("mask_error", ""))
    report.quarantined = [f"{f}: {e}" for f, e in zip(profile.loc[bad, "file"], why[bad], strict=True)]
    if report.quarantined:
        log.warning("quarantined %d unreadable file(s), e.g. %s", len(report.quarantined), report.quarantined[0])
    return profile[~bad]


def summary_stats(samples: pd.DataFrame, prof: Profile) -> dict[str, Any]:
    ok = samples[samples["readable"]]

    def spread(col: str) -> str:
        return f"{ok[col].min():.0f}-{ok[col].max():.0f}" if len(ok) else "-"

    stats = {
        "images": len(samples),
        "train / val": f"{int((samples['split'] == 'train').sum())} / {int((samples['split'] == 'val').sum())}",
        "unreadable": int((~samples["readable"]).sum()),
        "formats": ", ".join(f"{k} {v}" for k, v in ok["format"].value_counts().items()),
        "channels": ", ".join(f"{k:.0f}: {v}" for k, v in ok["channels"].value_counts().sort_index().items()),
        "width px": spread("width"),
        "height px": spread("height"),
        "brightness (mean grey)": round(float(ok["brightness"].mean()), 1),
        "contrast (mean grey std)": round(float(ok["contrast"].mean()), 1),
        "blur (median Laplacian variance)": round(float(ok["blur"].median()), 1),
        "profile": f"{prof.seconds:.2f} s: {prof.hits} from cache, {prof.hashed} hashed, {prof.decoded} decoded",
    }
    if "mask_present" in samples.columns:
        empty = int((samples["mask_empty"] == 1).sum())
        fg = samples["mask_foreground_nonempty"].mean()
        stats["masks"] = f"{int(samples['mask_present'].sum())} present, {empty} empty, mean foreground {fg:.2%}"
    return stats


def _layout_failure(err: DatasetError, layout: str) -> ExpectationResult:
    msg = str(err)
    rule, where = "dataset layout and split", "index_dataset / assign_splits"
    return ExpectationResult(rule, where, f"data.layout = {layout}", msg, "failed", 1, [msg])


def validate_dataset(cfg: RunConfig, out_dir: Path, workers: int | None = None) -> ValidationReport:
    """Index -> profile (cached) -> [quarantine] -> split -> GX suite. split.csv and profile.parquet are
    written to out_dir only when every rule passed; report.prepared is then the split, else None."""
    d, kind = cfg.data, suite_kind(cfg)
    report = ValidationReport(cfg.name, kind, str(d.root), rules=[])
    try:
        frame, generated = load_frame(d)
        prof = profile_dataset(frame, d.root, profile_cache(cfg), workers)
        kept = _quarantine(prof.frame, report) if d.expect.quarantine_unreadable else prof.frame
        split = split_frame(kept[frame.columns], d)
    except DatasetError as err:
        report.rules = [_layout_failure(err, d.layout)]
        return report
    classes = class_names(frame, d)
    samples = with_checks(kept.assign(split=split["split"], group=split["group"]))
    table = class_table(samples, classes)
    report.rules = run_suite(kind, samples, table, suite_parameters(d.expect))
    total = max(int(table["count"].sum()), 1)
    report.classes = [
        {"class": r.label, "train": r.train, "val": r.val, "total": r.count, "share": round(r.count / total, 4)}
        for r in table.itertuples()
    ]
    report.stats = summary_stats(samples, prof)
    if report.passed:
        out_dir.mkdir(parents=True, exist_ok=True)
        profile_path = out_dir / "profile.parquet"
        samples.to_parquet(profile_path, index=False)
        files = samples[(samples["row"] < 0) & samples["sha256"].notna()]
        known = dict(zip(files["path"], files["sha256"], strict=True))
        report.prepared = write_prepared(
            split, d, classes, out_dir, generated, known, profile=str(profile_path), quarantined=report.quarantined
        )
    return report


def failures_markdown(report: ValidationReport) -> str:
    """The verdict and each failed rule: threshold, observed value, offending files (the first SHOWN)."""
    failed = report.failures()
    ran = [r for r in report.rules if r.status != "skipped"]
    verdict = f"FAILED {len(failed)} of {len(ran)} rules" if failed else f"passed {len(ran)} rules"
    lines = [f"## Data validation of `{report.model}`: {verdict}", "",
             f"Suite `expectations/{report.kind}.json` on `{report.root}`.", ""]  # fmt: skip
    for r in failed:
        lines += [f"### FAILED: {r.rule}", f"- expectation: `{r.expectation}`", f"- threshold: {r.threshold}"]
        lines.append(f"- observed: {r.observed}")
        if r.count:
            lines.append(f"- offending: {r.count}" + (f" (first {SHOWN} below)" if r.count > SHOWN else ""))
            lines += [f"  - {o}" for o in r.offending]
        lines.append("")
    return "\n".join(lines)


def report_markdown(report: ValidationReport) -> str:
    """The failures, then quarantined files, summary stats, class balance and every rule's outcome."""
    lines = [failures_markdown(report)]
    for r in report.rules:
        if r.status == "passed" and r.count:
            lines += [f"### Within threshold: {r.rule} ({r.observed}; {r.threshold}): {r.count}", ""]
            lines += [f"- {o}" for o in r.offending] + [""]
    if report.quarantined:
        lines += [f"### Quarantined: {len(report.quarantined)} unreadable file(s) left out", ""]
        lines += [f"- {q}" for q in report.quarantined[:SHOWN]] + [""]
    if report.stats:
        lines += ["### Summary", "", "| | |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in report.stats.items()] + [""]
    if report.classes:
        lines += ["### Class balance", "", "| class | train | val | total | share |", "|---|---|---|---|---|"]
        for c in report.classes:
            lines.append(f"| {c['class']} | {c['train']} | {c['val']} | {c['total']} | {c['share']:.1%} |")
        lines.append("")
    mark = {"passed": "ok", "failed": "FAILED", "skipped": "skipped"}
    lines += ["### Rules", ""]
    for r in report.rules:
        threshold = f" ({r.threshold})" if r.status != "skipped" else ""
        lines.append(f"- {mark[r.status]}: {r.rule}: {r.observed}{threshold}")
    return "\n".join(lines) + "\n"
