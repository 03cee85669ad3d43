"""Each method's random keys, drawn from the run's seed by its ``key_schedule``."""

from __future__ import annotations

from typing import NamedTuple

import jax

from mtbkd_jax.experiments.config import ExperimentConfig
from mtbkd_jax.experiments.methods import Method

__all__ = ["MethodKeys", "method_keys"]


class MethodKeys(NamedTuple):
    map: jax.Array
    posterior: jax.Array | None
    starts: tuple  # one key per extra chain start (chain_starts="maps"), else empty


def method_keys(config: ExperimentConfig, methods: list[Method]) -> list[MethodKeys]:
    """The keys of every method, in order (see :class:`ExperimentConfig` for the schedules)."""
    key = jax.random.key(config.seed)
    extra = config.num_chains - 1 if config.chain_starts == "maps" else 0
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
