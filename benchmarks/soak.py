"""The soak: N simulated nights of the whole loop on a real Prefect server, worker and S3 server, with faults.

    python -m benchmarks.soak                          # 30 nights, the faults spread over them (~1-2 min a night)
    python -m benchmarks.soak --nights 3 --schedule short --out /tmp/soak   # 3 nights: a kill and a stall

Started once: `make server` (SQLite), `make deploy` (prefect.yaml, the automations, the webhook block pointing at
a local receiver that counts alerts), a worker on the process pool, `rclone serve s3` as the store. Each night: new
images arrive in the pool (ml.data.synthetic, a new seed), the retrain/demo deployment runs on the worker, then
flows.score on tonight's images, flows.monitor, flows.select_for_labeling (the simulated annotator labels the
batch from the generator's ground truth and merges it into the training data) and flows.gc. A night is one day:
the monitor's 1-day window holds tonight's rows only, so yesterday's prediction log is cleared first.

Faults on fixed nights (--schedule): the worker's flow process SIGKILLed mid-training (the run is retriggered and
must resume), an S3 stall (a proxy that stops answering: time to fail), the S3 server killed mid-publish (restarted
after the run failed; retriggered), a corrupt delivery merged into the data, a drifted batch, a mislabelled batch
that makes the candidate worse (the operator removes a bad delivery after its alert).

Pass: no run left RUNNING, each fault alerted exactly once and no alert on a quiet night, production never a failed,
partial or worse version, disk (runs + store) after the last night within 1.2x of night 5 (when there is one),
production's accuracy on a fixed test set (never trained on) never drops beyond noise: no promotion whose paired 95%
bootstrap interval of the change lies below 0 (the gate's own statistic; point drops are listed in the notes, since
two equally good versions differ by ~0.03 on 200 test images). Prints the table per night and writes
<out>/soak.json and soak.md (default benchmarks/results/) with the machine; exit code 1 when a criterion fails.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
import torch

from benchmarks.soak_night import Night, Nights
from benchmarks.soak_world import World
from tests.conftest import receiving
from tests.prefect_server import MAKE, PREFECT, REPO, run, serving, started
from tests.s3_servers import ACCESS_KEY, REGION, SECRET_KEY, rclone_serving

SCHEDULES = {
    "spread": {2: "kill", 4: "stall", 6: "s3-kill", 8: "corrupt", 10: "drift", 12: "mislabel"},
    "short": {2: "kill", 3: "stall"},  # night 1 puts a first version in production
}
DISK_GROWTH_MAX = 1.2


@dataclass
class Verdict:
    passed: bool
    checks: dict[str, bool] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)


def judge(nights: list[Night], schedule: dict[int, str]) -> Verdict:
    """The pass criteria over the nights' rows."""
    checks, notes = {}, {}
    checks["no run left RUNNING"] = all(s != "RUNNING" for n in nights for s in n.states)
    per_fault = {n.fault: n.alerts for n in nights if n.fault}
    notes["alerts per fault"] = per_fault
    checks["each fault alerted exactly once"] = all(a == 1 for a in per_fault.values()) and len(per_fault) == len(
        [k for k in schedule if k <= len(nights)]
    )
    checks["no alert on a quiet night"] = all(n.alerts == 0 for n in nights if not n.fault)
    checks["production never failed, partial or worse"] = all(n.production_ok for n in nights)
    changes = {n.night: n.accuracy_change_ci for n in nights if n.accuracy_change_ci is not None}
    checks["production test accuracy never drops beyond noise"] = all(high >= 0 for _, high in changes.values())
    accs = [(n.night, n.test_accuracy) for n in nights if n.test_accuracy is not None]
    notes["point drops of test accuracy (night: before -> after)"] = {
        night: f"{a} -> {b}" for (_, a), (night, b) in zip(accs, accs[1:], strict=False) if b < a
    }
    notes["promotions' test accuracy change, paired 95% CI"] = changes
    if len(nights) >= 5:
        growth = nights[-1].disk_mb / nights[4].disk_mb
        notes["disk growth (last / night 5)"] = round(growth, 3)
        checks[f"disk within {DISK_GROWTH_MAX}x of night 5"] = growth <= DISK_GROWTH_MAX
    notes["resume epochs lost"] = [n.epochs_lost for n in nights if n.epochs_lost is not None]
    notes["time to fail on a hung endpoint (s)"] = [n.fail_s for n in nights if n.fault == "stall"]
    return Verdict(all(checks.values()), checks, notes)


COLUMNS = ["night", "fault", "states", "resumed_from", "promoted", "alerts", "runs_mb", "store_mb", "production"]


def table(nights: list[Night]) -> str:
    head = [*COLUMNS, "test_acc"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for n in nights:
        row = asdict(n)
        cells = [
            " ".join(map(str, row[c])) if isinstance(row[c], list) else ("" if row[c] is None else str(row[c]))
            for c in COLUMNS
        ]
        acc = "" if n.test_accuracy is None else f"{n.test_accuracy:.3f}"
        lines.append("| " + " | ".join([*cells, acc]) + " |")
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    return {
        "node": platform.node(),
        "platform": platform.platform(),
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 1e9, 1),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def aws(root: Path) -> dict[str, str]:
    """The S3 server's dummy credentials; nothing read from the user's ~/.aws."""
    return {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": str(root / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(root / "no-aws-credentials"),
    }


def environment(server_env: dict[str, str], root: Path) -> dict[str, str]:
    """What the worker, its flow processes and the CLIs share: the server, the store's credentials, this code."""
    return (
        server_env
        | aws(root)
        | {
            "PYTHONPATH": str(REPO),
            "NO_ALBUMENTATIONS_UPDATE": "1",
            "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
        }
    )


def deploy(env: dict[str, str], webhook: str) -> None:
    """`make deploy` of retrain/demo and the automations, then the webhook block re-saved (same id) to allow the
    receiver's loopback address. (The other flows run as CLIs against the server: one process start each.)"""
    run([*MAKE, "deploy", "DEPLOY=--name retrain/demo"], env | {"VISIONFLOW_WEBHOOK_URL": webhook}, timeout=400)
    hook = f"Webhook(url={webhook!r}, allow_private_urls=True).save('visionflow-alerts', overwrite=True)"
    run([sys.executable, "-c", f"from prefect.blocks.webhook import Webhook; {hook}"], env)


def soak(nights: int, schedule: dict[int, str], root: Path, log: Path | None = None) -> tuple[list[Night], Verdict]:
    """Run the nights; each row is printed as it finishes."""
    world = World(root / "world")
    world.root.mkdir(parents=True)
    world.start(per_class=15, test_per_class=50)
    (root / "prefect").mkdir()
    os.environ.update(aws(root))  # this process reads the store too (production, its test accuracy)
    rows: list[Night] = []
    with ExitStack() as stack:
        receiver = stack.enter_context(receiving())
        s3 = stack.enter_context(rclone_serving(root / "s3"))
        server = stack.enter_context(serving(root / "prefect"))
        env = environment(server.env, root)
        deploy(env, receiver.url + "/alerts")
        worker_log = root / "worker.log"
        worker = stack.enter_context(started([PREFECT, "worker", "start", "--pool", "visionflow"], env, worker_log))
        plan = Nights(world, server, env, receiver, s3, stack, worker, root)
        print(" | ".join([*COLUMNS, "test_acc"]), flush=True)
        try:
            for n in range(1, nights + 1):
                rows.append(plan.night(n, schedule.get(n)))
                print(table(rows).splitlines()[-1], flush=True)
                if log:
                    log.write_text(json.dumps([asdict(r) for r in rows], indent=1))
        except KeyboardInterrupt:  # Ctrl-C: the finished nights are judged and written, the servers stopped
            print(f"interrupted during night {len(rows) + 1}", file=sys.stderr, flush=True)
    return rows, judge(rows, schedule)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.splitlines()[0])
    p.add_argument("--nights", type=int, default=30)
    p.add_argument("--schedule", choices=sorted(SCHEDULES), default="spread")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    p.add_argument("--workdir", type=Path, default=None, help="where the soak's servers and data live (default: tmp)")
    a = p.parse_args(argv)
    schedule = SCHEDULES[a.schedule]
    root = a.workdir or Path(tempfile.mkdtemp(prefix="visionflow-soak-"))
    a.out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    rows, verdict = soak(a.nights, schedule, root, log=a.out / "soak-partial.json")
    result = {
        "machine": machine(),
        "nights": a.nights,
        "nights_run": len(rows),
        "schedule": {str(k): v for k, v in schedule.items()},
        "minutes": round((time.monotonic() - start) / 60, 1),
        "passed": verdict.passed,
        "checks": verdict.checks,
        "notes": verdict.notes,
        "rows": [asdict(r) for r in rows],
    }
    (a.out / "soak.json").write_text(json.dumps(result, indent=1))
    (a.out / "soak-partial.json").unlink(missing_ok=True)
    checks = "\n".join(f"- {'PASS' if ok else 'FAIL'}: {name}" for name, ok in verdict.checks.items())
    notes = "\n".join(f"- {k}: {v}" for k, v in verdict.notes.items())
    ran = f"{len(rows)} nights" if len(rows) == a.nights else f"{len(rows)} of {a.nights} nights (interrupted)"
    md = (
        f"# Soak: {ran}, {result['minutes']} min\n\nMachine: {json.dumps(result['machine'])}\n\n"
        f"Faults: {result['schedule']}\n\n{table(rows)}\n\n{checks}\n{notes}\n"
    )
    (a.out / "soak.md").write_text(md)
    print(f"\n{checks}\n{notes}\n{'PASSED' if verdict.passed else 'FAILED'}")
    return 0 if verdict.passed else 1


if __name__ == "__main__":
    sys.exit(main())
