"""tune: the recipe search of flows.tune (ml.tuning): which config keys it varies, over what, and where the study
lives so that later calls and other workers continue it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from ml.config.section import Section

# keys a trial may set: the split is validated once per call, so data keys other than the image size would
# train every trial on a split made for another config
TUNABLE = ("model.", "train.", "data.image_size")
RDB_PATTERN = r"^(sqlite|postgresql|mysql)(\+\w+)?://"  # what optuna.storages.RDBStorage (SQLAlchemy) takes


class Param(Section):
    """One searched key: `choices`, or a range low..high (log: log-uniform; step: a grid). Integer bounds and step
    draw integers, e.g. {low: 0, high: 20} for degrees; {low: 1.0e-4, high: 1.0e-2, log: true} for a rate."""

    low: int | float | None = None
    high: int | float | None = None
    log: bool = False
    step: int | float | None = Field(None, gt=0)
    choices: list[str | int | float | bool | None] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _range_or_choices(self) -> Param:
        ranged = self.low is not None or self.high is not None
        if (self.choices is not None) == ranged:
            raise ValueError("give either choices: [...] or low and high")
        if ranged and (self.low is None or self.high is None or self.low >= self.high):
            raise ValueError(f"low {self.low} < high {self.high}, both given")
        if self.log and (not ranged or self.low <= 0 or self.step is not None):
            raise ValueError("log: a range with low > 0 and no step")
        return self

    @property
    def integer(self) -> bool:
        """Whether the range draws integers: its bounds (and step) are written as integers."""
        return all(isinstance(v, int) for v in (self.low, self.high, self.step or 1))

    def holds(self, value: Any) -> bool:
        """Whether `value` is one this parameter can draw (a preset's own value, for the first trial)."""
        if self.choices is not None:
            return value in self.choices
        return (
            isinstance(value, int | float) and self.low <= value <= self.high and (not self.integer or value % 1 == 0)
        )


def dotted_params(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """tune.params keyed by dotted config key: nested sections ({train: {lr: {...}}}, what `--set
    tune.params.train.lr={low: ..., high: ...}` makes) are joined to "train.lr"; a later key replaces an earlier."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, dict) and value and not value.keys() & Param.model_fields.keys():
            out |= dotted_params(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


class PrunerConfig(Section):
    kind: Literal["median", "none"] = "median"  # median: stop a trial whose epoch is worse than the median's there
    startup_trials: int = Field(5, ge=0)  # trials that must finish before any is pruned
    min_epochs: int = Field(1, ge=1)  # epochs each trial trains before it can be pruned


class TuneConfig(Section):
    # dotted config keys (model.*, train.*, data.image_size) and what to draw for them; from the command line:
    # --set tune.params.train.lr='{low: 1.0e-4, high: 1.0e-2, log: true}' (adds or replaces that key)
    params: dict[str, Param] = {}
    study: str | None = None  # the Optuna study's name; unset: the model's name
    # unset: a journal in the store, <storage.uri>/tune/<study>.journal; or an RDB URL (sqlite:///..., postgresql://)
    storage: str | None = Field(None, pattern=RDB_PATTERN)
    seed: int = 0  # TPE's seed; each call adds the trials already done, so a continued study draws new points
    startup_trials: int = Field(10, ge=0)  # TPE: random trials before it models the good ones
    pruner: PrunerConfig = PrunerConfig()

    @field_validator("params", mode="before")
    @classmethod
    def _dotted(cls, params: Any) -> Any:
        return dotted_params(params) if isinstance(params, dict) else params

    @model_validator(mode="after")
    def _tunable(self) -> TuneConfig:
        wrong = [k for k in self.params if not k.startswith(TUNABLE[:2]) and k != TUNABLE[2]]
        if wrong:
            raise ValueError(f"tune.params {wrong}: only keys under {list(TUNABLE)} are searched")
        return self
