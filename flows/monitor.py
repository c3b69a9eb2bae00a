"""Monitor the production model: its recent prediction log vs the reference captured when it was trained.

    python -m flows.monitor --model demo                       # the version's monitor.window (default 7d)
    python -m flows.monitor --model demo --window 1d --labels labels.csv
    python -m flows.monitor --model demo --store s3://models/visionflow --set monitor.retrain_on_drift=true

Evidently tests image properties (brightness, contrast, blur, size, channel means), the predicted class and the
confidence (margin, entropy) column by column; a classifier tests the embeddings. The HTML report and a
summary.json go to reports/monitor/<model>/<run>/ in the store; Prefect artifacts `<model>-drift` (every score
and verdict) and `<model>-monitor` (the verdict, linking the report) show in the UI. Where labels exist (class
folders under the scored source, or --labels CSV with path,label), live accuracy and macro F1 are compared with
the version's validation figures. Drift or a drop -> alert (Prefect event + webhook); with
monitor.retrain_on_drift, the retrain deployment starts, at most once per window and day. The last stdout line
is a JSON summary; exit code 0 when the check ran (whatever its verdict), 1 when it failed, 2 for bad arguments.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from flows.cli.args import existing, print_summary, result_or_report
from flows.cli.params import EndpointUrl, ModelName, Overrides, Store, Window
from flows.cli.production import overrides_or_exit, parser
from flows.cli.runs import alerting_flow
from ml.config.publishing import DEFAULT_STORE
from ml.monitoring.production import PRODUCTION_CACHE, SCORING
from tasks.monitoring import (
    check_drift,
    fetch_production,
    publish_monitor_artifacts,
    run_name,
    send_monitor_alerts,
    settings_for,
    trigger_retrain,
)


@alerting_flow("monitor", named_by="model")
def monitor(
    model: ModelName,
    store: Store = DEFAULT_STORE,
    window: Window = None,
    labels: str | None = None,
    overrides: Overrides = None,
    cache_dir: str = str(PRODUCTION_CACHE),
    endpoint_url: EndpointUrl = None,
) -> dict[str, Any]:
    """Check the last `window` of `model`'s prediction log against its production version's reference.

    Args:
        model: the model's name in the registry; its `production` version is checked.
        store: artifact store with the registry: file://DIR or s3://bucket/prefix.
        endpoint_url: S3-compatible server for s3:// URIs (default: AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL).
        window: how far back: "7d", "12h" (default: the version's monitor.window).
        labels: CSV path,label of logged images: ground truth for live accuracy and macro-F1.
        overrides: the version's settings overridden, e.g. {"monitor.threshold": 0.01}.
        cache_dir: where production versions are downloaded (once per version).
    """
    overrides = {**(overrides or {}), **({"monitor.window": window} if window else {})}
    run = run_name()
    # 1. the production version and its reference
    production = fetch_production(model, store, Path(cache_dir), endpoint_url)
    # 2. its monitor and alert settings with this run's overrides, resolved once for every task
    settings = settings_for(production, overrides, SCORING)
    # 3. the window vs the reference: Evidently report (+ live metrics where labelled) -> the store
    check = check_drift(production, settings, store, labels, run, endpoint_url)
    # 4. Prefect artifacts: each test's score and verdict; the verdict with the report's link
    publish_monitor_artifacts(check)
    # 5. drift or a metric drop: alert; on drift, retrain if monitor.retrain_on_drift (once per window and day)
    events = send_monitor_alerts(check, settings)
    retrain = trigger_retrain(check, settings, store, endpoint_url)
    return {
        "model": model,
        "version": production.version,
        "run": run,
        "window": check.window,
        "verdict": check.verdict,
        "groups": check.drift.groups,
        "rows": check.rows,
        "live": check.live.live,
        "links": check.links,
        "alerts": events,
        "retrain_flow_run": retrain,
    }


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__)
    p.add_argument("--window", help="how far back: 7d, 12h ... (default: the version's monitor.window)")
    p.add_argument(
        "--labels",
        type=existing("file", s3=False),
        help="CSV with path,label for logged images (paths as logged or relative to source)",
    )
    args = p.parse_args(argv)
    overrides = overrides_or_exit(args.overrides, **({"monitor.window": args.window} if args.window else {}))
    state = monitor(
        args.model, args.store, None, args.labels, overrides, args.cache_dir, args.endpoint_url, return_state=True
    )
    summary = result_or_report(state, "monitor", {"model": args.model})
    if summary is None:
        return 1
    drifted = ", ".join(g for g, d in summary["groups"].items() if d)
    verdict = summary["verdict"].upper() + (f" ({drifted})" if drifted else "")
    print(f"verdict:  {verdict} over the last {summary['window']}, {summary['rows']} rows of {summary['version']}")
    for name, url in summary["links"].items():
        print(f"{name + ':':9} {url}")
    if summary["alerts"]:
        print(f"alerts:   {', '.join(summary['alerts'])}")
    if summary["retrain_flow_run"]:
        print(f"retrain:  flow run {summary['retrain_flow_run']} (monitor.retrain_on_drift)")
    print_summary(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
