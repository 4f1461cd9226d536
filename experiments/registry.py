"""The experiments the CLI knows: a plain dict from name to its `Experiment` definition."""

from __future__ import annotations

from .definitions import ALL
from .spec import Experiment, SpecError

__all__ = ["EXPERIMENTS", "get"]

EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in ALL}
if len(EXPERIMENTS) != len(ALL):
    raise RuntimeError("experiments.definitions.ALL holds two experiments with the same name")


def get(name: str) -> Experiment:
    """The experiment called `name`; an unknown name lists the valid ones."""
    try:
        return EXPERIMENTS[name]
    except KeyError:
        raise SpecError(f"unknown experiment {name!r}; valid: {', '.join(EXPERIMENTS)}") from None
