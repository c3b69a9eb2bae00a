"""The flows' parameter types: pydantic-constrained, so a bad value fails before any work, and the Prefect UI's
run form offers the presets as a choice (each flow's docstring `Args:` gives the form's descriptions).

Flat parameters, not one nested model: a deployment run's `--param overrides=...` replaces that one field and
keeps the deployment's preset (Prefect merges run parameters over the deployment's one level deep)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from flows.cli.args import STORE_PATTERN, URL_PATTERN
from ml.config.run import PRESET_DIR

PRESETS = tuple(sorted(p.stem for p in PRESET_DIR.glob("*.yaml")))

Preset = Literal[PRESETS]  # type: ignore[valid-type]
Overrides = dict[str, Any] | None
ModelName = Annotated[str, Field(min_length=1)]
Store = Annotated[str, Field(pattern=STORE_PATTERN)]
Source = Annotated[str, Field(min_length=1)]
EndpointUrl = Annotated[str | None, Field(pattern=URL_PATTERN)]
Window = Annotated[str | None, Field(pattern=r"^[1-9][0-9]*(h|d)$")]  # as MonitorConfig.window
Budget = Annotated[int | None, Field(ge=1)]
Seeds = Annotated[int, Field(ge=2)]  # a 95% CI needs two runs at least
