"""Thin Prefect tasks around ml/ functions: one ml call plus publishing what it made."""

import os

# ml/ logs through the standard logging module; let Prefect forward those records to the run's logs.
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "ml")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import logging  # noqa: E402

logging.getLogger("ml").setLevel(logging.INFO)
