"""Choosing hyperparameters on a validation split: coordinate search over a grid.

The experiments choose the base prior's scale ``sigma0`` and the teacher prior's ``lambda`` and
``beta`` for every method by the validation NLL of its posterior mode (a few seconds per fit),
then sample the posterior once with the chosen values. A full grid grows as the product of the
axes; coordinate search grows as their sum, which is what makes per-method tuning affordable.

A grid has no edges when the best value is on one: a numeric grid (numbers >= 0, in any order)
whose best value is its smallest or largest is extended geometrically beyond that end until the
best is inside it or a cap is reached (upward only from a 0: a flat Dirichlet's ``lambda``), and
the result says which axes were extended and which are still on an edge.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Any

import numpy as np

__all__ = ["SearchResult", "coordinate_search", "profile_search"]


@dataclass(frozen=True)
class SearchResult:
    """The best settings found, their score, and every evaluation in order.

    Attributes:
        best, best_score: the settings of lowest score and that score.
        evaluated: every settings dict scored, with its ``score``, in order.
        extended: axis -> the values added beyond its grid, in the order they were tried.
        on_edge: the numeric axes (numbers >= 0, one or more positive, two or more values, or
            extended) whose best value is still the smallest (not 0) or largest of their
            (extended) grid: the cap was reached, or the axis was not allowed to move.
    """

    best: dict[str, Any]
    best_score: float
    evaluated: list[dict[str, Any]] = field(default_factory=list)
    extended: dict[str, list[float]] = field(default_factory=dict)
    on_edge: list[str] = field(default_factory=list)

    def grid_note(self, name: str) -> str | None:
        """How the best value of axis ``name`` relates to its grid: ``"grid extended"`` (a
        value added beyond the grid), ``"grid edge"`` (still on an edge), both, or ``None``.

        Example:
            >>> SearchResult({"a": 9.0}, 0.0, extended={"a": [9.0]}, on_edge=["a"]).grid_note("a")
            'grid extended, still on edge'
        """
        extended = name in self.best and self.best[name] in self.extended.get(name, [])
        if extended and name in self.on_edge:
            return "grid extended, still on edge"
        if extended:
            return "grid extended"
        return "grid edge" if name in self.on_edge else None


def _number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _scale(values: Sequence[Any]) -> bool:
    """Whether ``values`` (finite, each once) are numbers >= 0, one or more of them positive:
    a grid that can be extended geometrically from its positive values."""
    return all(_number(v) and v >= 0 for v in values) and any(v > 0 for v in values)


def _at_edge(value: Any, values: Sequence[Any], up: bool) -> bool:
    """Whether ``value`` is at (or beyond) the largest (``up``) or smallest of ``values`` (not
    where that is 0: nothing lies below it, see :func:`coordinate_search`)."""
    if not _number(value):
        return False
    return value >= max(values) if up else value <= min(values) and min(values) != 0


def _beyond(values: Sequence[Any], upward: bool) -> Any:
    """The next value beyond the largest (``upward``) or smallest value of a geometric grid:
    the edge times the grid's own ratio at that end (3 for a single value), rounded to 12
    significant digits; integers stay integers. ``None`` where no new value exists (below a 0)."""
    ordered = sorted(v for v in values if v > 0)
    if not upward and len(ordered) < len(values):  # a 0 is the grid's lower end
        return None
    edge = ordered[-1] if upward else ordered[0]
    ratio = 3.0 if len(ordered) == 1 else edge / ordered[-2] if upward else ordered[1] / edge
    value = float(f"{(edge * ratio if upward else edge / ratio):.12g}")
    if all(isinstance(v, Integral) for v in values):  # NumPy integers too
        value = round(value)
    if value <= 0 or value == edge or not math.isfinite(value):
        return None
    return value


def _check_extend(
    grid: Mapping[str, Sequence[Any]], extend: Iterable[str] | None, max_extensions: int
) -> set[str]:
    """The axes that may be extended (see :func:`coordinate_search`), checked."""
    if isinstance(max_extensions, bool) or not isinstance(max_extensions, int):
        raise TypeError(f"max_extensions must be an integer >= 0, got {max_extensions!r}")
    if max_extensions < 0:
        raise ValueError(f"max_extensions must be an integer >= 0, got {max_extensions}")
    if extend is None:
        return {n for n, v in grid.items() if _scale(v) and sum(x > 0 for x in v) >= 2}
    if isinstance(extend, str):
        raise TypeError(f"extend must be a list of axis names, got the string {extend!r}")
    names = set(extend)
    for name in names:
        if name not in grid:
            raise ValueError(f"extend names {name!r}, which is not an axis of grid {list(grid)}")
        if not _scale(grid[name]):
            raise ValueError(
                f"extend names {name!r}, whose grid {grid[name]} is not numbers >= 0 with a "
                "positive one (only such a grid can be extended geometrically)"
            )
    return names


def _check_values(grid: Mapping[str, Sequence[Any]], start: Mapping[str, Any]) -> None:
    """Raise unless every value of ``start`` and of ``grid``'s axes is hashable (the search
    caches each setting's score under its values: a list would fail there, unnamed) and, if a
    number, finite (a NaN or inf is no setting, and could be returned as the best)."""
    named = [(f"start[{name!r}]", value) for name, value in start.items()]
    named += [(f"grid[{name!r}] values", v) for name, values in grid.items() for v in values]
    for where, value in named:
        try:
            hash(value)
        except TypeError:
            raise TypeError(
                f"{where} must be hashable (the search caches each setting's score by its "
                f"values), got {value!r} ({type(value).__name__}): use a tuple"
            ) from None
        if _number(value) and not math.isfinite(value):
            raise ValueError(f"{where} must not be NaN or infinite, got {value!r}")


def _prepare(
    grid: Mapping[str, Sequence[Any]], start: Mapping[str, Any]
) -> tuple[dict[str, list[Any]], dict[str, Any]]:
    """``grid`` and ``start``, checked, with each axis's values listed once in their order and
    NumPy scalars (of the axes and their start values) as Python numbers."""
    if not grid:
        raise ValueError("grid must name at least one axis")
    for name, values in grid.items():
        if name not in start:
            raise ValueError(f"start has no value for grid axis {name!r}")
        if len(values) == 0:
            raise ValueError(f"grid[{name!r}] must list at least one value")
    _check_values(grid, start)

    def plain(value: Any) -> Any:
        return value.item() if isinstance(value, np.generic) else value

    axes = {name: list(dict.fromkeys(map(plain, values))) for name, values in grid.items()}
    return axes, {**start, **{name: plain(start[name]) for name in grid}}


def _check_search(
    grid: Mapping[str, Sequence[Any]],
    start: Mapping[str, Any],
    sweeps: int,
    extend: Iterable[str] | None,
    max_extensions: int,
    min_improvement: float,
) -> tuple[dict[str, list[Any]], dict[str, Any], set[str]]:
    """The arguments checked: :func:`_prepare`'s, and the axes that may be extended."""
    axes, settings = _prepare(grid, start)
    if isinstance(sweeps, bool) or not isinstance(sweeps, Integral) or int(sweeps) < 1:
        raise ValueError(f"sweeps must be an integer >= 1, got {sweeps!r}")  # not 1.9 or "2"
    extendable = _check_extend(axes, extend, max_extensions)
    if not (math.isfinite(min_improvement) and min_improvement >= 0):
        raise ValueError(f"min_improvement must be a finite number >= 0, got {min_improvement}")
    return axes, settings, extendable


def _require_scored(result: SearchResult) -> SearchResult:
    """``result``, unless no setting scored a finite value: then a ``ValueError`` naming the
    settings tried (the start, returned as "best" with score inf, is no choice)."""
    if math.isfinite(result.best_score):
        return result
    tried = [{k: v for k, v in entry.items() if k != "score"} for entry in result.evaluated]
    shown = ", ".join(map(repr, tried[:10])) + (
        f" and {len(tried) - 10} more" if len(tried) > 10 else ""
    )
    raise ValueError(
        "score must return a finite value for at least one setting; no setting scored a "
        f"finite value (NaN or inf for each of the {len(tried)} settings tried: {shown})"
    )


def coordinate_search(
    score: Callable[[dict[str, Any]], float],
    grid: Mapping[str, Sequence[Any]],
    start: Mapping[str, Any],
    *,
    sweeps: int = 1,
    extend: Iterable[str] | None = None,
    max_extensions: int = 3,
    min_improvement: float = 0.0,
) -> SearchResult:
    """Minimise ``score(settings)`` one axis at a time over ``grid``, extending a numeric grid
    whose best value is on its edge.

    Args:
        score: settings (a dict with every key of ``start``) -> a number, lower is better
            (e.g. validation NLL). Non-finite scores count as worst; if no setting scores a
            finite value, the search is refused (below).
        grid: axis name -> candidate values (hashable; a number finite), searched in this order
            (a value listed twice, once); the others are held at their current best. NumPy
            scalars are scored, and returned, as Python numbers.
        start: the initial settings; must contain every axis of ``grid``.
        sweeps: passes over the axes (stops early once a pass changes nothing).
        extend: the axes that may be extended; default: every axis whose grid holds numbers
            >= 0, two or more positive, in any order (its edges are its smallest and largest
            values). An axis named here must hold numbers >= 0, one or more positive (a single
            one is extended by factors of 3). A 0 is the lower end of its grid (a flat
            Dirichlet's ``lambda``): such a grid is extended upward only.
        max_extensions: the most values added beyond each end of an axis (over all sweeps).
        min_improvement: an extended value is kept only if it lowers the best score by more
            than this, when it is added and in every later sweep (so that a flat score, e.g. a
            validation NLL that moves by less than its noise, does not walk the grid out to
            its cap).

    When the best value of an extendable axis is (at least) the largest of its grid, the value
    ``largest * ratio`` is tried, ``ratio`` being the grid's own ratio at that end (the same
    downward); this repeats while the new value is the best, up to ``max_extensions`` times.
    An integer grid (NumPy's too) is extended with integers.

    Returns:
        A :class:`SearchResult`. Each settings dict is scored once (results are cached), and
        ties keep the earlier value; ``evaluated`` records a non-finite score as ``None`` (so
        that it serialises as JSON).

    Raises:
        ValueError: no setting tried scored a finite value (the message lists them), a grid or
            start value is a number that is not finite (NaN, inf), or bad arguments.
        TypeError: a value of ``start`` or ``grid`` is not hashable (a list: use a tuple).

    Example:
        >>> from mtbkd_jax.tuning import coordinate_search
        >>> result = coordinate_search(
        ...     lambda s: (s["a"] - 2) ** 2 + (s["b"] - 1) ** 2,
        ...     grid={"a": [0, 1, 2, 3], "b": [0, 1, 2]},
        ...     start={"a": 0, "b": 0},
        ... )
        >>> result.best, result.best_score
        ({'a': 2, 'b': 1}, 0.0)
        >>> far = coordinate_search(lambda s: (s["c"] - 7) ** 2, {"c": [1, 2]}, {"c": 1})
        >>> far.best, far.extended, far.on_edge
        ({'c': 8}, {'c': [4, 8, 16]}, [])
    """
    result = _search(
        score,
        grid,
        start,
        sweeps=sweeps,
        extend=extend,
        max_extensions=max_extensions,
        min_improvement=min_improvement,
    )
    return _require_scored(result)


def _search(
    score: Callable[[dict[str, Any]], float],
    grid: Mapping[str, Sequence[Any]],
    start: Mapping[str, Any],
    *,
    sweeps: int = 1,
    extend: Iterable[str] | None = None,
    max_extensions: int = 3,
    min_improvement: float = 0.0,
) -> SearchResult:
    """:func:`coordinate_search` without its refusal: where no setting scored a finite value,
    the start with ``best_score`` inf."""
    axes, start, extendable = _check_search(
        grid, start, sweeps, extend, max_extensions, min_improvement
    )
    cache: dict[tuple[tuple[str, Any], ...], float] = {}
    evaluated: list[dict[str, Any]] = []

    def evaluate(settings: dict[str, Any]) -> float:
        key = tuple(sorted(settings.items()))
        if key not in cache:
            value = float(score(dict(settings)))
            cache[key] = value if math.isfinite(value) else math.inf
            evaluated.append({**settings, "score": value if math.isfinite(value) else None})
        return cache[key]

    added: dict[str, list[Any]] = {}
    counts = {(name, up): 0 for name in extendable for up in (False, True)}
    best = dict(start)
    best_score = evaluate(best)
    for _ in range(int(sweeps)):
        changed = False
        for name, values in axes.items():
            for value in list(values):
                candidate = {**best, name: value}
                candidate_score = evaluate(candidate)
                # an extended value, in a later sweep too, must beat the best by min_improvement
                margin = min_improvement if value in added.get(name, ()) else 0.0
                if candidate_score < best_score - margin:
                    best, best_score, changed = candidate, candidate_score, True
            for up in (True, False) if name in extendable else ():
                while _at_edge(best[name], values, up) and counts[name, up] < max_extensions:
                    value = _beyond(values, up)
                    if value is None:
                        break
                    counts[name, up] += 1
                    values.append(value)
                    added.setdefault(name, []).append(value)
                    candidate = {**best, name: value}
                    candidate_score = evaluate(candidate)
                    if candidate_score >= best_score - min_improvement:
                        break
                    best, best_score, changed = candidate, candidate_score, True
        if not changed:
            break
    on_edge = [
        name
        for name, values in axes.items()
        if (name in extendable or (len(values) >= 2 and _scale(values)))
        and (_at_edge(best[name], values, True) or _at_edge(best[name], values, False))
    ]
    return SearchResult(best, best_score, evaluated, added, on_edge)


def profile_search(
    score: Callable[[dict[str, Any]], float],
    grid: Mapping[str, Sequence[Any]],
    start: Mapping[str, Any],
    *,
    over: str,
    **options: Any,
) -> SearchResult:
    """Minimise ``score(settings)`` by one :func:`coordinate_search` over the other axes for each
    value of the axis ``over`` (``start``'s value first), keeping the best.

    One coordinate search compares the values of an axis at the others' best so far. Where the
    best value of another axis depends on this one (a choice between two models whose best
    prior strengths differ), it can stop at the first value: the second, compared at the
    first's strength, looks worse, and is never tried at its own. Profiling compares each
    value at its own best over the other axes.

    Args:
        score, grid, start: as :func:`coordinate_search`.
        over: the axis profiled (a name of ``grid``).
        options: :func:`coordinate_search`'s keywords, for each inner search.

    Returns:
        A :class:`SearchResult`: the best of the inner searches (ties keep the earlier value of
        ``over``), with every inner search's evaluations in order; ``extended`` and ``on_edge``
        are the winning search's, and ``on_edge`` also names ``over`` when its grid is numeric
        (as :class:`SearchResult`) and the best value is at its end: ``over`` is never extended.
        Unlike :func:`coordinate_search`, no refusal where no setting scored a finite value:
        the result is then the start with ``best_score`` inf (an inner search over one value
        of ``over`` may fail throughout while another succeeds, and a caller that records why
        each setting failed raises its own error: the learned-trust search of
        ``mtbkd_jax.experiments.trusted.fit_trusted`` raises the start's sampler error).

    Example:
        >>> from mtbkd_jax.tuning import coordinate_search, profile_search
        >>> def score(s):  # "b" is best at strength 0.1, "a" at 0.3; "b" wins overall
        ...     x = s["x"]
        ...     return 1.0 + (x - 0.3) ** 2 if s["m"] == "a" else 0.5 + 50 * (x - 0.1) ** 2
        >>> grid, start = {"m": ["a", "b"], "x": [0.1, 0.3]}, {"m": "a", "x": 0.3}
        >>> coordinate_search(score, grid, start).best
        {'m': 'a', 'x': 0.3}
        >>> profile_search(score, grid, start, over="m").best
        {'m': 'b', 'x': 0.1}
    """
    if over not in grid:
        raise ValueError(f"over must name an axis of grid {list(grid)}, got {over!r}")
    if over not in start:
        raise ValueError(f"start has no value for grid axis {over!r}")
    if over in (options.get("extend") or ()):
        raise ValueError(
            f"profile_search does not extend the profiled axis {over!r}: profile a choice "
            "between models (a categorical axis) and leave numeric axes to the inner searches, "
            "or search this axis with coordinate_search"
        )
    grid, start = _prepare(grid, start)
    inner = {name: values for name, values in grid.items() if name != over}
    if not inner:  # over alone: searched, not extended
        return _search(score, grid, start, **{**options, "extend": options.get("extend") or []})
    results = [
        _search(score, inner, {**start, over: value}, **options)
        for value in dict.fromkeys((start[over], *grid[over]))
    ]
    best = min(results, key=lambda result: result.best_score)
    evaluated = [entry for result in results for entry in result.evaluated]
    values = grid[over]
    on_edge = list(best.on_edge)
    if len(values) >= 2 and _scale(values):  # not extended, so say where it stopped
        if _at_edge(best.best[over], values, True) or _at_edge(best.best[over], values, False):
            on_edge.append(over)
    return SearchResult(best.best, best.best_score, evaluated, best.extended, on_edge)
