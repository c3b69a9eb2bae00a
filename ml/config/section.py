"""The base of every config section (ml.config.run, ml.config.production)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """Unknown keys fail (a typo is an error, never a silently ignored setting); assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
