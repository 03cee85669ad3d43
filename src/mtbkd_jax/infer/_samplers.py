"""The samplers ``run_sgmcmc`` and :class:`~mtbkd_jax.infer.SGMCMC` know by name: each a
constructor ``(gradient estimator, settings) -> SamplingAlgorithm`` over the kernels."""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Callable
from functools import lru_cache, partial
from typing import TYPE_CHECKING

from mtbkd_jax._checks import require_positive
from mtbkd_jax.infer.cyclical_sgld import cyclical_sgld
from mtbkd_jax.infer.ncsgld import ncsgld
from mtbkd_jax.infer.psgld import psgld
from mtbkd_jax.infer.sghmc import sghmc
from mtbkd_jax.infer.sgld import sgld
from mtbkd_jax.infer.sgnht import sgnht

if TYPE_CHECKING:  # BlackJAX is imported where a kernel is built: its import starts JAX
    from blackjax.base import SamplingAlgorithm

__all__ = [
    "SAMPLERS",
    "FRICTION_SAMPLERS",
    "DEFAULT_FRICTION",
    "build_sampler",
    "check_sampler_options",
    "check_friction",
    "with_unused_at_default",
    "pilot_sampler",
]

SAMPLERS = ("sgld", "sghmc", "cyclical_sgld", "sgnht", "psgld", "ncsgld")
FRICTION_SAMPLERS = ("sghmc", "sgnht")  # the others ignore ``friction``
DEFAULT_FRICTION = 0.1

# options beyond temperature/friction/cycles, per sampler (passed as ``sampler_options``)
_OPTIONS: dict[str, Callable] = {"psgld": psgld, "ncsgld": ncsgld}


def check_friction(sampler: str, friction: float, stacklevel: int) -> float:
    """``friction`` as a float > 0, warned (at ``stacklevel``: the user's call) when another
    value than the default is given to a sampler that ignores it."""
    friction = require_positive(friction, "friction")
    if sampler not in FRICTION_SAMPLERS and not math.isclose(friction, DEFAULT_FRICTION,
                                                             rel_tol=1e-6):  # fmt: skip
        warnings.warn(
            f"friction={friction:g} is ignored by sampler {sampler!r}: it applies to "
            f"{' and '.join(FRICTION_SAMPLERS)}",
            UserWarning,
            stacklevel=stacklevel,
        )
    return friction


def with_unused_at_default(settings: dict) -> dict:
    """A run's settings (as fingerprinted) with ``friction`` at its default where the sampler
    ignores it: another value then neither refuses a resume nor is refused by a checkpoint
    that recorded the value given (as every checkpoint written before did)."""
    if "friction" not in settings or settings.get("sampler") in FRICTION_SAMPLERS:
        return settings
    return {**settings, "friction": DEFAULT_FRICTION}


def check_sampler_options(sampler: str, options: dict | None) -> dict:
    """``sampler_options`` checked against the sampler's constructor."""
    options = dict(options or {})
    if not options:
        return options
    if sampler not in _OPTIONS:
        raise ValueError(
            f"sampler_options applies to {sorted(_OPTIONS)}; {sampler!r} takes none "
            f"(got {sorted(options)})"
        )
    accepted = set(inspect.signature(_OPTIONS[sampler]).parameters) - {
        "grad_estimator",
        "temperature",
        "split",
    }
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ValueError(
            f"sampler_options for {sampler!r} may hold {sorted(accepted)}, got unknown {unknown}"
        )
    return options


def build_sampler(
    sampler: str,
    grad_estimator: Callable,
    *,
    temperature: float = 1.0,
    friction: float = DEFAULT_FRICTION,
    cycle_length: int = 1,
    exploration_fraction: float = 0.5,
    options: dict | None = None,
) -> SamplingAlgorithm:
    """The named sampler on ``grad_estimator``."""
    options = options or {}
    if sampler == "sgld":
        return sgld(grad_estimator, temperature)
    if sampler == "sghmc":
        return sghmc(grad_estimator, friction, temperature)
    if sampler == "cyclical_sgld":
        return cyclical_sgld(grad_estimator, cycle_length, exploration_fraction, temperature)
    if sampler == "sgnht":
        return sgnht(grad_estimator, friction, temperature)
    if sampler == "psgld":
        return psgld(grad_estimator, temperature=temperature, **options)
    if sampler == "ncsgld":
        split = getattr(grad_estimator, "half_batches", None)
        if split is None:
            raise ValueError(
                "sampler 'ncsgld' needs a gradient estimator that splits its minibatch in two "
                "(half_batches): the in-memory data path; streamed and data-sharded runs have none"
            )
        return ncsgld(grad_estimator, split, temperature=temperature, **options)
    raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")


def pilot_sampler(
    sampler: str,
    *,
    temperature: float = 1.0,
    friction: float = DEFAULT_FRICTION,
    options: dict | None = None,
) -> Callable:
    """``estimator -> SamplingAlgorithm`` for a pilot of ``sampler``; one object per setting (one
    compile). Cyclical SGLD is piloted as SGLD at its peak step size, which sets its
    stability. NC-SGLD is piloted as SGLD too: its preconditioner keeps it stable at 9 to 27
    times SGLD's step on synthetic linear_5, but there its chains settle at output weights of
    12.8 against NUTS's 19.9, while at SGLD's step they reach NUTS's (``docs/results.md``,
    "Non-centred scales"). So it takes the step at which the uncorrected dynamics are stable."""
    items = tuple(sorted(check_sampler_options(sampler, options).items()))
    if sampler in ("cyclical_sgld", "ncsgld"):
        return _sampler("sgld", float(temperature), float(friction), ())
    return _sampler(sampler, float(temperature), float(friction), items)


@lru_cache(maxsize=16)
def _sampler(name: str, temperature: float, friction: float, options: tuple) -> Callable:
    return partial(build_sampler, name, temperature=temperature, friction=friction,
                   options=dict(options))  # fmt: skip
