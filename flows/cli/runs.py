"""How the flows' runs look in Prefect: named after their model, alerting when they fail or crash, and where their
shards run."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from prefect import flow
from prefect.runtime import flow_run
from prefect.states import Failed, State
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from tasks.alerts import alert_on_crash


def run_named_by(param: str) -> Callable[[], str]:
    """A flow_run_name: `<the parameter's value>-<UTC start>`, e.g. `logos-20261124-020000`, so a model's nightly
    runs read apart in the UI's run list (instead of Prefect's random `zippy-mastodon`)."""

    def name() -> str:
        return f"{flow_run.parameters[param]}-{datetime.now(UTC):%Y%m%d-%H%M%S}"

    return name


def alerting_flow(name: str, named_by: str) -> Callable[[Callable[..., Any]], Any]:
    """@flow for the flows that run unattended: a failure or crash alerts (tasks.alerts.alert_on_crash), and each
    run is named by the parameter `named_by`."""
    hooks = [alert_on_crash]
    return flow(name=name, flow_run_name=run_named_by(named_by), log_prints=True, on_failure=hooks, on_crashed=hooks)


def shard_runner(address: str | None) -> TaskRunner:
    """Threads of this process (None), a Dask cluster of worker processes on this machine ("local"), or the
    Dask scheduler at `address` (prefect-dask's DaskTaskRunner)."""
    if address is None:
        return ThreadPoolTaskRunner()
    from prefect_dask import DaskTaskRunner  # dask loads only where shards go to it

    return DaskTaskRunner() if address == "local" else DaskTaskRunner(address=address)


def failed_with(err: BaseException) -> State:
    """A flow's final state for an outcome that is a verdict, not a crash (bad data, a failed gate): Failed,
    carrying `err` (callers get it as the exception, hooks alert on it), named by its first line, with no
    traceback logged."""
    return Failed(message=str(err).splitlines()[0].lstrip("# "), data=err)
