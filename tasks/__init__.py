"""Thin Prefect tasks around ml/ functions: one ml call plus publishing what it made."""

import logging
import os

# ml/ logs through the standard logging module; let Prefect forward those records to the run's logs.
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "ml")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def _forward_ml_logs() -> None:
    """Prefect gives the extra loggers the `prefect.extra` handlers (the one that sends to the API) when it sets up
    logging. A flow process started by a worker has done that before it imports the flow, so without this the
    epoch lines and the run-folder reasons reached the worker's stdout but not the run's logs in the UI."""
    ml, extra = logging.getLogger("ml"), logging.getLogger("prefect.extra")
    ml.setLevel(logging.INFO)
    for handler in extra.handlers:
        ml.addHandler(handler)  # addHandler skips one already there


_forward_ml_logs()
