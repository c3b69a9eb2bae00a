"""Score a registered version on any folder in its preset's layout; print the metrics as JSON.

    python -m flows.evaluate --model doodle --data /data/doodles-2026-11            # the production version
    python -m flows.evaluate --model logos --version 20261123T101500Z-1a2b3c --data new-logos/
    python -m flows.evaluate --model demo --data holdout/ --store s3://models/visionflow

Every image under --data counts (no split). The version's own ONNX file, input size and (binary) decision
threshold are used, through onnxruntime. The last stdout line is the JSON {model, version, data, task, metrics};
exit code 0 when scored, 1 when the data or the version could not be read.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

from prefect import flow

from flows.cli.args import add_store, doc_parser, print_summary, result_or_report
from flows.cli.params import EndpointUrl, ModelName, Source, Store
from flows.cli.runs import run_named_by
from ml.config.publishing import DEFAULT_STORE
from tasks.holdout import evaluate_registered


@flow(name="evaluate", flow_run_name=run_named_by("model"), log_prints=True)
def evaluate(
    model: ModelName,
    data: Source,
    version: str | None = None,
    store: Store = DEFAULT_STORE,
    endpoint_url: EndpointUrl = None,
) -> dict[str, Any]:
    """Metrics of `model`@`version` on every image under `data`.

    Args:
        model: the model's name in the registry.
        data: a folder in the layout the version was trained on (class folders; images/ + masks/).
        version: a version id (default: the one `production` points at).
        store: artifact store with the registry: file://DIR or s3://bucket/prefix.
        endpoint_url: S3-compatible server for s3:// URIs (default: AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL).
    """
    with tempfile.TemporaryDirectory(prefix="visionflow-evaluate-") as workdir:
        return evaluate_registered(model, version, Path(data), store, Path(workdir), endpoint_url)


def main(argv: list[str] | None = None) -> int:
    p = doc_parser(__doc__)
    p.add_argument("--model", required=True, help="the model's name in the registry")
    p.add_argument("--version", help="a version id (default: the one `production` points at)")
    p.add_argument("--data", required=True, help="a folder in the layout the version was trained on")
    add_store(p)
    args = p.parse_args(argv)
    state = evaluate(args.model, args.data, args.version, args.store, args.endpoint_url, return_state=True)
    result = result_or_report(state, "evaluation", {"model": args.model, "data": args.data})
    if result is None:
        return 1
    scalars = {k: v for k, v in result["metrics"].items() if isinstance(v, float)}
    print(f"{result['model']} {result['version']} on {result['data']} ({result['metrics']['n']} images):")
    print("  " + ", ".join(f"{k}={v:.4f}" for k, v in scalars.items()))
    print_summary(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
