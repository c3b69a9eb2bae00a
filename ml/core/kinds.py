"""The task kinds (model.task) and, per pipeline stage, the implementation each kind uses.

    TRAINERS = KindRegistry("training", classify=train_classifier, segment=train_segmenter)
    train = TRAINERS(cfg.model.task)     # UnknownKind names the stage and the kinds it has

Each stage declares its table in one place (its `step` module), so a reader follows a kind from the config to
the code it runs by name, and a new kind is one entry per stage, not a branch in every caller.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Generic, TypeVar

KINDS = ("classify", "segment")  # model.task

T = TypeVar("T")


class UnknownKind(ValueError):
    """A stage was asked for a kind it has no implementation of."""


class KindRegistry(Generic[T]):
    """One implementation per task kind for one stage; asking for another kind fails loudly."""

    def __init__(self, stage: str, **implementations: T) -> None:
        unknown = sorted(set(implementations) - set(KINDS))
        if unknown:
            raise UnknownKind(f"{stage}: {unknown} are not task kinds; known: {list(KINDS)}")
        self.stage, self._impl = stage, dict(implementations)

    @property
    def kinds(self) -> Mapping[str, T]:
        return dict(self._impl)

    def __call__(self, kind: str) -> T:
        try:
            return self._impl[kind]
        except KeyError:
            raise UnknownKind(
                f"no {self.stage} implementation for model.task={kind!r}; known: {sorted(self._impl)}"
            ) from None
