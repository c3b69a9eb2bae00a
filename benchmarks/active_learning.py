"""Active learning on real data: test accuracy vs labels for random, entropy and entropy + diversity selection.

    python benchmarks/active_learning.py                          # quickdraw, 12 classes, 3 seeds, 200 + 5 x 200 labels
    python benchmarks/active_learning.py --seeds 1 --rounds 1     # one round, to measure before sizing a run
    python -m benchmarks.active_learning --label-studio --seeds 1 --rounds 2 --pool 600 --k 50 --epochs 3

The loop a labeling team runs, simulated by revealing hidden labels, through the pipeline's own parts: training
(ml.training.classifier.train_classifier, the doodle-12 preset: vf_cnn_small on 28 x 28 grey; for labelled sets this
small a cosine schedule over 10 epochs and no class weights, since a class seen once would weigh 30 times more), export
(export_classifier: ONNX, parity-checked), pool scoring (ml.monitoring.scoring.score_stream, with the embedding PCA
fitted on the labelled images as ml.monitoring.reference does) and selection (ml.labeling.selection.Shortlist, measure
entropy). From a random
seed set, each round "labels" the K images the strategy picks from the rest of the pool (their labels revealed),
trains from scratch on the labelled images and measures accuracy and macro F1 on a held-out test set through
onnxruntime. The test, validation (checkpoint choice) and pool sets are drawn once; each seed draws its own seed
set and training seed, and its seed-set model is shared by the three strategies. Goal: at equal labels, the best
strategy's mean accuracy beats random's by more than the seed spread (the larger of their standard deviations).
Writes benchmarks/results/active_learning.{json,md,png}.

--label-studio: the round trip through a real Label Studio server (ml.labeling.studio_server starts one in its own
cached venv; benchmarks.studio_round). Entropy only; each round's picks are labelled both ways from the same
selection: revealed directly, and pushed to the server, annotated with their true labels through its API by a
simulated annotator, and pulled back by flows.import_labels' code into class folders, which the round trains on.
The two training sets are checked equal (same keys, labels, order and pixels), each is trained (same seed) and
measured, and the next round goes on from the server's. Writes active_learning_label_studio.{md,json} instead.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from benchmarks.baselines import machine  # noqa: E402
from benchmarks.studio_round import Studio, studio_round  # noqa: E402
from ml.config.run import RunConfig, load_config  # noqa: E402
from ml.data.layouts import index_dataset  # noqa: E402
from ml.data.prepare import PreparedData  # noqa: E402
from ml.export.classifier import export_classifier  # noqa: E402
from ml.export.onnx_eval import evaluate_onnx  # noqa: E402
from ml.labeling import studio_server  # noqa: E402
from ml.labeling.selection import Shortlist  # noqa: E402
from ml.monitoring.reference import fit_projection, raw_features, split_items  # noqa: E402
from ml.monitoring.scoring import OnnxClassifier, score_stream  # noqa: E402
from ml.training.classifier import train_classifier  # noqa: E402
from ml.training.datasets import load_resized  # noqa: E402

STRATEGIES = {"random": "random", "entropy": "uncertainty", "entropy+diversity": "diversity"}  # name -> strategy
DATA = ROOT.parent / "shared" / "data" / "quickdraw"
OUT = ROOT / "benchmarks" / "results"


def draw_sets(cfg: RunConfig, sizes: dict[str, int]) -> dict[str, pd.DataFrame]:
    """Disjoint random test / val / pool sets of the indexed dataset (seed 0: the same for every run)."""
    frame = index_dataset(cfg.data)
    order = np.random.default_rng(0).permutation(len(frame))
    sets, start = {}, 0
    for name, n in sizes.items():
        sets[name] = frame.iloc[order[start : start + n]].assign(key=lambda f: f["path"] + "#" + f["row"].astype(str))
        start += n
    return sets


def train_round(cfg: RunConfig, labelled: pd.DataFrame, val: pd.DataFrame, run_dir: Path) -> Path:
    """Train from scratch on the labelled images (validation picks the checkpoint); the exported ONNX."""
    run_dir.mkdir(parents=True, exist_ok=True)
    split = pd.concat([labelled.assign(split="train"), val.assign(split="val")], ignore_index=True)
    split[["path", "row", "label", "group", "split"]].to_csv(run_dir / "split.csv", index=False)
    prepared = PreparedData(str(run_dir / "split.csv"), cfg.data.classes, {}, "", str(cfg.data.root), False)
    return Path(export_classifier(cfg, prepared, train_classifier(cfg, prepared, run_dir), run_dir).path)


def pick(
    onnx: Path, cfg: RunConfig, labelled: pd.DataFrame, unlabelled: pd.DataFrame, strategy: str, k: int, seed: int
) -> pd.DataFrame:
    """The k unlabelled images the strategy picks (file = pool key; rank, score, pred, confidence), scored as
    flows.select_for_labeling scores a pool."""
    model = OnnxClassifier(onnx, cfg.data.classes, cfg.data.image_size, cfg.data.channels, threads=1)
    fit = split_items(labelled.sample(min(len(labelled), 2000), random_state=seed), cfg.data.channels)
    model.projection = fit_projection(raw_features(model, fit), cfg.monitor.embedding_dims)
    shortlist = Shortlist(strategy, "entropy", k, cfg.labeling.candidates, seed)
    for frame in score_stream(model, split_items(unlabelled, cfg.data.channels)):
        shortlist.add(frame.assign(sha256=frame["file"]))  # npy rows: the row's key is its identity
    return shortlist.select()


def measured(onnx: Path, cfg: RunConfig, test: tuple[np.ndarray, np.ndarray]) -> dict[str, float]:
    metrics = evaluate_onnx(onnx, *test, cfg.data.classes)
    return {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"]}


def run_seed(
    seed: int, cfg: RunConfig, sets: dict[str, pd.DataFrame], test: tuple, args, work: Path, studio: Studio | None
) -> list[dict]:
    """One seed: its seed set and first model, shared by the strategies; then each strategy's rounds. One torch
    thread: on a shared 2-core machine two spinning OpenMP threads train 2-4x slower than one, and --jobs 2 runs
    two seeds side by side. With a Label Studio server (--label-studio) only entropy runs, and each round's labels
    also go through the server: the round trains both ways and the next round goes on from what came back."""
    torch.set_num_threads(1)
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"seed": seed})})
    pool, start = sets["pool"], time.perf_counter()
    seed_set = pool.sample(args.seed_size, random_state=seed)
    first = train_round(cfg, seed_set, sets["val"], work / f"{seed}-seed-set")
    shared = {
        "seed": seed,
        "labels": len(seed_set),
        **measured(first, cfg, test),
        "seconds": time.perf_counter() - start,
    }
    print(json.dumps(shared), flush=True)
    rows = []
    for name, strategy in STRATEGIES.items() if studio is None else [("entropy", STRATEGIES["entropy"])]:
        rows.append({"strategy": name, **shared})
        labelled, onnx = seed_set, first
        for round_ in range(1, args.rounds + 1):
            start = time.perf_counter()
            rest = pool[~pool["key"].isin(labelled["key"])]
            chosen = pick(onnx, cfg, labelled, rest, strategy, args.k, seed + 1000 * round_)
            direct = pd.concat([labelled, rest[rest["key"].isin(chosen["file"])]])
            run = f"{seed}-{name}-{round_}"
            picked_by, onnx = onnx, train_round(cfg, direct, sets["val"], work / run)
            rows.append({"strategy": name, "seed": seed, "labels": len(direct), **measured(onnx, cfg, test),
                         "seconds": time.perf_counter() - start})  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
            labelled = direct
            if studio is not None:
                leg = (chosen, rest, direct, sets, test, work / f"{seed}-studio", run)
                labelled, onnx, row = studio_leg(studio, cfg, picked_by, *leg)
                rows[-1] |= {"via": "direct"}
                rows.append(rows[-1] | row)
                print(json.dumps(rows[-1]), flush=True)
    return rows


def studio_leg(
    studio: Studio, cfg: RunConfig, onnx: Path, chosen: pd.DataFrame, rest: pd.DataFrame, direct: pd.DataFrame,
    sets: dict[str, pd.DataFrame], test: tuple, work: Path, run: str,
) -> tuple[pd.DataFrame, Path, dict]:  # fmt: skip
    """The round's picks labelled through the server (benchmarks.studio_round) and trained on: the labelled set
    that came back, its model, and its row (accuracy, counts). The training data must equal the direct path's:
    the same pool keys with the same labels in the same order, and the same pixels."""
    start = time.perf_counter()
    came, counts = studio_round(studio, cfg, onnx, chosen, rest, run, work)
    via = pd.concat([direct.iloc[: len(direct) - len(chosen)], came])
    assert list(zip(via["key"], via["label"], strict=True)) == list(zip(direct["key"], direct["label"], strict=True))
    new = direct.tail(len(chosen))
    size, channels = cfg.data.image_size, cfg.data.channels
    assert np.array_equal(load_resized(came, channels, size), load_resized(new, channels, size))
    onnx = train_round(cfg, via, sets["val"], work / f"{run}-studio")
    row = {"via": "label_studio", **measured(onnx, cfg, test), **counts, "seconds": time.perf_counter() - start}
    return via, onnx, row


def summarize(results: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Mean and std over seeds per (labels, strategy); the goal at each budget past the seed set."""
    stats = results.groupby(["labels", "strategy"])[["accuracy", "macro_f1"]].agg(["mean", "std", "min", "max"])
    goal = {}
    for labels in sorted(results["labels"].unique())[1:]:
        acc = stats.loc[labels]["accuracy"]
        best = acc.drop("random")["mean"].idxmax()
        margin = acc.loc[best, "mean"] - acc.loc["random", "mean"]
        spread = max(acc.loc[best, "std"], acc.loc["random", "std"])
        goal[int(labels)] = {"best": best, "margin": margin, "spread": spread, "met": bool(margin > spread)}
    return stats, goal


def report(results: pd.DataFrame, args, out: Path) -> None:
    stats, goal = summarize(results)
    names = list(STRATEGIES)
    lines = [
        f"Quick, Draw! 12 classes (28 x 28), pool {args.pool}, test {args.test}, val {args.val}; seed set "
        f"{args.seed_size} + {args.rounds} rounds of {args.k}; vf_cnn_small, {args.epochs} epochs; {args.seeds} seeds "
        "(mean ± std; test accuracy / macro F1 through onnxruntime).",
        "",
        "| labels | " + " | ".join(names) + " | best − random | spread | goal |",
        "|---:|" + "---:|" * len(names) + "---:|---:|:---:|",
    ]
    for labels in sorted(results["labels"].unique()):
        cells = [
            f"{stats.loc[(labels, n), ('accuracy', 'mean')]:.3f} ± {stats.loc[(labels, n), ('accuracy', 'std')]:.3f}"
            f" / {stats.loc[(labels, n), ('macro_f1', 'mean')]:.3f}"
            for n in names
        ]
        g = goal.get(int(labels))
        tail = (
            f"{g['margin']:+.3f} ({g['best']}) | {g['spread']:.3f} | {'met' if g['met'] else 'not met'}" if g else "| |"
        )
        lines.append(f"| {labels} | " + " | ".join(cells) + f" | {tail} |")
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    out.mkdir(parents=True, exist_ok=True)
    (out / "active_learning.md").write_text(text)
    (out / "active_learning.json").write_text(
        json.dumps(
            {"settings": vars(args) | {"data": str(args.data)}, "runs": results.to_dict("records"), "goal": goal},
            indent=1,
            default=str,
        )  # fmt: skip
    )
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric in zip(axes, ("accuracy", "macro_f1"), strict=True):
        for n in names:
            s = stats.xs(n, level="strategy")[metric]
            ax.plot(s.index, s["mean"], marker="o", label=n)
            ax.fill_between(s.index, s["mean"] - s["std"], s["mean"] + s["std"], alpha=0.2)
        ax.set(xlabel="labelled images", ylabel=f"test {metric}", title=f"{metric} vs labels ({args.seeds} seeds)")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(out / "active_learning.png", dpi=120)
    print(f"wrote {out}/active_learning.md, .json, .png")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DATA, help="quickdraw folder (<class>.npy)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seed-size", type=int, default=200)
    p.add_argument("--k", type=int, default=200, help="labels per round")
    p.add_argument("--pool", type=int, default=3000)
    p.add_argument("--test", type=int, default=2000)
    p.add_argument("--val", type=int, default=300)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--candidates", type=float, default=3.0, help="diversity: among the candidates x k most uncertain "
                   "(the config's 10 x 200 would be two thirds of a 3000-image pool)")  # fmt: skip
    p.add_argument("--jobs", type=int, default=2, help="seeds run side by side (one torch thread each)")
    p.add_argument("--label-studio", action="store_true", help="entropy only; each round's labels also through a "
                   "real Label Studio server (push, simulated annotator, pull): accuracy beside the direct path's, "
                   "written to active_learning_label_studio.{md,json}")  # fmt: skip
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    over = {"data.root": str(args.data), "train.epochs": args.epochs, "train.batch_size": 32, "train.progress": False,
            "train.time_budget_min": None, "train.early_stopping": None, "train.monitor": "accuracy",
            "train.scheduler": "cosine", "train.class_weights": "none",
            "labeling.candidates": args.candidates}  # fmt: skip
    cfg = load_config("doodle-12", over)
    classes = sorted(index_dataset(cfg.data)["label"].unique())
    cfg = load_config("doodle-12", over | {"data.classes": classes})
    sets = draw_sets(cfg, {"test": args.test, "val": args.val, "pool": args.pool})
    index = {c: i for i, c in enumerate(cfg.data.classes)}
    test = (load_resized(sets["test"], 1, cfg.data.image_size), sets["test"]["label"].map(index).to_numpy())
    with tempfile.TemporaryDirectory(prefix="visionflow-al-") as work:
        server = started_studio(Path(work)) if args.label_studio else None
        studio = Studio(server.url, server.token, server.document_root) if server else None
        try:
            spawn = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=args.jobs, mp_context=spawn) as pool:
                runs = [pool.submit(run_seed, seed, cfg, sets, test, args, Path(work), studio)
                        for seed in range(args.seeds)]  # fmt: skip
                rows = [row for run in runs for row in run.result()]
        finally:
            if server is not None:
                studio_server.stop(server)
    if studio is None:
        report(pd.DataFrame(rows), args, args.out)
    else:
        report_studio(rows, args, args.out)


def started_studio(work: Path) -> studio_server.LabelStudio:
    """A throw-away Label Studio (ml.labeling.studio_server: its own cached venv) whose document root is in `work`."""
    if (why := studio_server.install()) is not None:
        raise SystemExit(f"--label-studio: {why}")
    start = time.perf_counter()
    (work / "ls-data").mkdir()
    (work / "ls-root").mkdir()
    server = studio_server.start(work / "ls-data", work / "ls-root")
    print(f"label studio {studio_server.VERSION} at {server.url}, started in {time.perf_counter() - start:.0f} s")
    return server


def report_studio(rows: list[dict], args, out: Path) -> None:
    """Each round's accuracy through the server beside the direct path's: active_learning_label_studio.{md,json}."""
    results = pd.DataFrame(rows)
    rounds = results[results["via"].notna()] if "via" in results else results.iloc[:0]
    pairs = rounds.pivot_table(index=["seed", "labels"], columns="via", values=["accuracy", "macro_f1"])
    ls_rows = rounds[rounds["via"] == "label_studio"].set_index(["seed", "labels"])
    lines = [
        f"Quick, Draw! 12 classes (28 x 28), pool {args.pool}, test {args.test}, val {args.val}; seed set "
        f"{args.seed_size} + {args.rounds} rounds of {args.k} picked by entropy; vf_cnn_small, {args.epochs} epochs; "
        f"{args.seeds} seeds. Each round's picks labelled twice from the same selection: revealed directly, and "
        f"through a real Label Studio {studio_server.VERSION} (pushed, annotated through the API, pulled by "
        "flows.import_labels' code, trained on the imported files); the next round goes on from the server's. "
        f"Machine: {machine()}.",
        "",
        "| seed | labels | accuracy direct | accuracy via Label Studio | macro F1 direct | macro F1 via Label Studio "
        "| same | pushed | imported | round trip s |",
        "|---:|---:|---:|---:|---:|---:|:---:|---:|---:|---:|",
    ]
    for (seed, labels), r in pairs.iterrows():
        acc, f1, ls = r["accuracy"], r["macro_f1"], ls_rows.loc[(seed, labels)]
        same = acc["direct"] == acc["label_studio"] and f1["direct"] == f1["label_studio"]
        lines.append(
            f"| {seed} | {labels} | {acc['direct']:.4f} | {acc['label_studio']:.4f} | {f1['direct']:.4f} | "
            f"{f1['label_studio']:.4f} | {'yes' if same else 'NO'} | {int(ls['pushed'])} | {int(ls['imported'])} | "
            f"{ls['studio_seconds']:.1f} |"
        )
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    out.mkdir(parents=True, exist_ok=True)
    (out / "active_learning_label_studio.md").write_text(text)
    same = bool(len(pairs)) and bool(
        (pairs["accuracy"]["direct"] == pairs["accuracy"]["label_studio"]).all()
        and (pairs["macro_f1"]["direct"] == pairs["macro_f1"]["label_studio"]).all()
    )
    body = {
        "settings": vars(args) | {"data": str(args.data), "out": str(out)},
        "machine": machine(),
        "label_studio": studio_server.VERSION,
        "accuracy_matches": same,
        "runs": rows,
    }
    (out / "active_learning_label_studio.json").write_text(json.dumps(body, indent=1, default=str))
    print(f"wrote {out}/active_learning_label_studio.md, .json; accuracy via the server matches direct: {same}")


if __name__ == "__main__":
    main()
