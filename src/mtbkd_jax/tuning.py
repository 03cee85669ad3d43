"""Choosing hyperparameters on a validation split: coordinate search over a grid.

The experiments choose the base prior's scale ``sigma0`` and the teacher prior's ``lambda`` and
``beta`` for every method by the validation NLL of its posterior mode (a few seconds per fit),
then sample the posterior once with the chosen values. A full grid grows as the product of the
axes; coordinate search grows as their sum, which is what makes per-method tuning affordable.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["SearchResult", "coordinate_search"]


@dataclass(frozen=True)
class SearchResult:
    """The best settings found, their score, and every evaluation in order."""

    best: dict[str, Any]
    best_score: float
    evaluated: list[dict[str, Any]] = field(default_factory=list)


def coordinate_search(
    score: Callable[[dict[str, Any]], float],
    grid: Mapping[str, Sequence[Any]],
    start: Mapping[str, Any],
    *,
    sweeps: int = 1,
) -> SearchResult:
    """Minimise ``score(settings)`` one axis at a time over ``grid``.

    Args:
        score: settings (a dict with every key of ``start``) -> a number, lower is better
            (e.g. validation NLL). Non-finite scores count as worst.
        grid: axis name -> candidate values, searched in this order; the others are held at
            their current best.
        start: the initial settings; must contain every axis of ``grid``.
        sweeps: passes over the axes (stops early once a pass changes nothing).

    Returns:
        A :class:`SearchResult`. Each settings dict is scored once (results are cached), and
        ties keep the earlier value; ``evaluated`` records a non-finite score as ``None`` (so
        that it serialises as JSON).

    Example:
        >>> from mtbkd_jax.tuning import coordinate_search
        >>> result = coordinate_search(
        ...     lambda s: (s["a"] - 2) ** 2 + (s["b"] - 1) ** 2,
        ...     grid={"a": [0, 1, 2, 3], "b": [0, 1, 2]},
        ...     start={"a": 0, "b": 0},
        ... )
        >>> result.best, result.best_score
        ({'a': 2, 'b': 1}, 0.0)
    """
    if not grid:
        raise ValueError("grid must name at least one axis")
    for name, values in grid.items():
        if name not in start:
            raise ValueError(f"start has no value for grid axis {name!r}")
        if len(values) == 0:
            raise ValueError(f"grid[{name!r}] must list at least one value")
    if int(sweeps) < 1:
        raise ValueError(f"sweeps must be >= 1, got {sweeps}")

    cache: dict[tuple[tuple[str, Any], ...], float] = {}
    evaluated: list[dict[str, Any]] = []

    def evaluate(settings: dict[str, Any]) -> float:
        key = tuple(sorted(settings.items()))
        if key not in cache:
            value = float(score(dict(settings)))
            cache[key] = value if math.isfinite(value) else math.inf
            evaluated.append({**settings, "score": value if math.isfinite(value) else None})
        return cache[key]

    best = dict(start)
    best_score = evaluate(best)
    for _ in range(int(sweeps)):
        changed = False
        for name, values in grid.items():
            for value in values:
                candidate = {**best, name: value}
                candidate_score = evaluate(candidate)
                if candidate_score < best_score:
                    best, best_score, changed = candidate, candidate_score, True
        if not changed:
            break
    return SearchResult(best, best_score, evaluated)
