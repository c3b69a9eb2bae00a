"""Prefect flows: each module is runnable as `python -m flows.<name>` and deployable from prefect.yaml."""

import os

os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "ml")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
# the ephemeral API (no server configured) can take longer than the 20 s default to start on a busy machine
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
