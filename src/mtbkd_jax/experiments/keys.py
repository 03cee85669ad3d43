"""Each method's random keys, drawn from the run's seed by its ``key_schedule``."""

from __future__ import annotations

import zlib
from typing import NamedTuple

import jax

from mtbkd_jax.experiments.config import ExperimentConfig
from mtbkd_jax.experiments.methods import Method

__all__ = ["MethodKeys", "method_keys"]


class MethodKeys(NamedTuple):
    map: jax.Array
    posterior: jax.Array | None
    starts: tuple  # one key per extra chain start (chain_starts="maps"), else empty


def _label_keys(config: ExperimentConfig, method: Method, extra: int) -> MethodKeys:
    """A method's keys from its label: the seed's key folded with the label's CRC-32, then
    split into (MAP, posterior) keys as in ``per-method``."""
    folded = jax.random.fold_in(jax.random.key(config.seed), zlib.crc32(method.label.encode()))
    map_key, posterior_key = jax.random.split(folded)
    starts: tuple = ()
    if method.posterior is not None and extra:
        posterior_key, *rest = jax.random.split(posterior_key, extra + 1)
        starts = tuple(rest)
    return MethodKeys(map_key, posterior_key if method.posterior is not None else None, starts)


def method_keys(config: ExperimentConfig, methods: list[Method]) -> list[MethodKeys]:
    """The keys of every method, in order (see :class:`ExperimentConfig` for the schedules).

    A method with ``key_by_label`` takes its keys from its label instead
    (:func:`_label_keys`), and the schedule runs over the other methods alone, so adding
    such a method anywhere in a plan leaves every other method's keys as they were.
    """
    extra = config.num_chains - 1 if config.chain_starts == "maps" else 0
    positional = iter(_schedule_keys(config, [m for m in methods if not m.key_by_label], extra))
    return [_label_keys(config, m, extra) if m.key_by_label else next(positional) for m in methods]


def _schedule_keys(config: ExperimentConfig, methods: list[Method], extra: int) -> list[MethodKeys]:
    """The keys of ``methods`` by their position, under ``config.key_schedule``."""
    key = jax.random.key(config.seed)
    out = []
    if config.key_schedule == "per-method":
        for method in methods:
            key, map_key, posterior_key = jax.random.split(key, 3)
            starts: tuple = ()
            if method.posterior is not None and extra:
                posterior_key, *rest = jax.random.split(posterior_key, extra + 1)
                starts = tuple(rest)
            out.append(MethodKeys(map_key, posterior_key, starts))
        return out
    map_keys = []
    for _ in methods:
        key, sub = jax.random.split(key)
        map_keys.append(sub)
    for method, map_key in zip(methods, map_keys, strict=True):
        if method.posterior is None:
            out.append(MethodKeys(map_key, None, ()))
            continue
        key, _skipped = jax.random.split(key)
        start_keys = []
        for _ in range(extra):
            key, sub = jax.random.split(key)
            start_keys.append(sub)
        key, posterior_key = jax.random.split(key)
        out.append(MethodKeys(map_key, posterior_key, tuple(start_keys)))
    return out
