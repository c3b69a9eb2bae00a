"""Prefect flows: each module is runnable as `python -m flows.<name>` and deployable from prefect.yaml."""

import os

os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "ml")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
