"""A step size chosen by pilot runs, not guessed: :func:`choose_step_size`, :func:`check_step_size`.

**The rule.** On a geometric ladder of candidates (:func:`default_ladder`: ``10`` down by
factors of 3 to ``1.1e-10``) a pilot (``pilot_steps`` steps of the sampler itself, through the
model's minibatch gradient estimator, from the chains' start) is judged stable or not by the
diagnostic below. Stability taken as monotone in the step size, a bisection of the ladder (the
log scale) finds the largest stable rung ``h_s`` in ``~log2(len(ladder))`` pilots, all with the
same random numbers; the result is ``margin * h_s`` (default ``margin = 1/2``): within one
ladder factor under the judged limit times the margin, as the rung above ``h_s`` was not.

**The diagnostic: the configurational temperature, and a divergence check.** For the target
``pi ~ exp(-U / tau)`` (``U = -log p``, ``tau`` the temperature) integration by parts gives
``E_pi[(d_i U)^2] = tau E_pi[d_ii U]``, so ``T = E|grad U|^2 / E[tr H]`` equals ``tau`` (the
*configurational temperature* of molecular dynamics, Rugh 1997, which Butler et al. 1998 use to
detect time steps too large). A discretised chain has ``T != tau``: SGLD (Euler–Maruyama) on a
Gaussian of curvatures ``w_i^2`` has variances ``tau / (w_i^2 (1 - h w_i^2 / 2))``, so
``T / tau = sum_i w_i^2 / (1 - h w_i^2 / 2) / sum_i w_i^2``: about 1 for small ``h``, set by
the stiffest coordinates, infinite at the stability limit ``h = 2 / max w_i^2``. Unlike a
linear bound (``h lambda_max(H) < 2``) it is one quantity for every sampler (the identity is
the target's) and it measures what the chain does: pSGLD's preconditioner keeps its chain
finite at any step, but at too large a step the chain rattles over a range set by ``h``, not by
the posterior, and ``T`` grows with it. A pilot is **unstable** when

1. a position or the potential is not finite; or
2. ``U`` diverges: a chain's mean ``U`` over the pilot's second half exceeds its first half's by
   more than ``max(tau d, 3 sd)`` (``d`` coordinates, ``sd`` of ``U`` over all first halves):
   at stationarity half-means differ by a fraction of ``U``'s spread (``tau sqrt(d / 2)`` for a
   Gaussian), a chain started at the mode rises by ``~tau d / 2``, a diverging one multiplies
   ``U``; or
3. ``T / tau`` over the second half exceeds ``max_temperature_ratio`` (default 10: for SGLD on a
   Gaussian, the steps above 90% of the limit), or the curvature estimate is not positive.

``|grad U|^2`` is estimated free of the minibatch noise's bias by the product of two
independent minibatch gradients, ``tr H`` by Hutchinson's ``z . (H z)`` (Rademacher ``z``), at
20 evenly spaced points of each pilot, pooled over chains. The stiff directions that set ``T``
relax in a few steps near the limit, but a pilot started far from the posterior is judged on
its transient: start it from a warm start (``init_params``, e.g. a MAP; for pSGLD not exactly
at a mode, where its first step's preconditioner is ``1 / regularizer``).

**The minibatch noise, measured, not judged.** Each check also records ``noise_ratio``,
``h tr Cov(g) / (2 tau d)`` over the pilot's second half (``Cov(g)`` of one minibatch gradient,
from ``|g1 - g2|^2 / 2``): the minibatch noise a step adds against the ``2 h tau`` it injects,
per coordinate (SGLD's scaling). Welling & Teh (2011) need it well below 1 for the injected
noise to dominate. Where the gradient noise varies across the posterior, an uncorrected chain
at a larger ratio is biased towards where the noise is smaller, and a ratio measured at the MAP
can understate the posterior's: on synthetic linear_5 (``docs/results.md``) it is 0.1 at the MAP
and about 0.6 at a NUTS draw (scaled from a step nine times smaller), and minibatch SGLD started
at NUTS's draws drifts back towards the MAP, full batches at the same step much less
(``sampler="ncsgld"`` corrects for it; its pilots are SGLD's, :func:`pilot_sampler`).
:attr:`StepSizeChoice.noise_ratio` gives it at the chosen step.

**The margin.** At ``h_s / 2`` SGLD on a Gaussian has ``h max w_i^2 <= 0.9`` and
``T / tau <= 1.8``: the stiffest variance inflated at most 1.8-fold (10-fold at ``h_s``). Each
pilot's ``T / tau`` is in the returned record.

Example:
    >>> import jax, jax.numpy as jnp, numpyro, numpyro.distributions as dist
    >>> from mtbkd_jax.infer import choose_step_size
    >>> def model(x, y=None):  # posterior precision 1 + 24 = 25: SGLD is stable iff h < 0.08
    ...     mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    ...     with numpyro.plate("data", x.shape[0], subsample_size=x.shape[0]) as i:
    ...         numpyro.sample("x", dist.Normal(mu, 1.0), obs=x[i, 0])
    >>> choice = choose_step_size(jax.random.key(0), model, jnp.zeros((24, 1)))
    >>> round(choice.largest_stable, 4), round(choice.step_size, 4)  # 10/3^5 (10/3^4 is not)
    (0.0412, 0.0206)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from mtbkd_jax._checks import require_count, require_key, require_positive
from mtbkd_jax.infer._common import prepare_data
from mtbkd_jax.infer._point_measures import _measure
from mtbkd_jax.infer._records import StepSizeCheck, StepSizeChoice, UnstableStepSizes
from mtbkd_jax.infer._samplers import DEFAULT_FRICTION, SAMPLERS, check_friction, pilot_sampler
from mtbkd_jax.infer._start import starting_positions
from mtbkd_jax.infer.gradients import GradientEstimator, minibatch_plan

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    from mtbkd_jax.infer._common import PyTree

__all__ = [
    "StepSizeCheck",
    "StepSizeChoice",
    "UnstableStepSizes",
    "check_step_size",
    "choose_step_size",
    "default_ladder",
    "pilot_sampler",
    "select_step_size",
]

NUM_CHECKS = 20  # points of a pilot where the diagnostic is measured (the last 10 judge T)


def default_ladder(top: float = 10.0, factor: float = 3.0, num: int = 24) -> tuple[float, ...]:
    """``top, top / factor, ..., top / factor^(num - 1)``.

    >>> [round(h, 4) for h in default_ladder(1.0, 3.0, 4)]
    [1.0, 0.3333, 0.1111, 0.037]
    """
    top = require_positive(top, "top")
    if not factor > 1:
        raise ValueError(f"factor must be > 1, got {factor}")
    return tuple(top / factor**k for k in range(require_count(num, "num")))


# ---------------------------------------------------------------------------- the pilot
@lru_cache(maxsize=16)
def _pilot_program(make_kernel: Callable, steps_per_check: int) -> Callable:
    """``(start, keys, step_size, estimator) -> measures (chains, NUM_CHECKS)``: one compiled
    program for every candidate (the step size is traced)."""

    def run_chain(
        position: PyTree, rng_key: jax.Array, step_size: jax.Array, estimator: GradientEstimator
    ) -> dict:
        kernel = make_kernel(estimator)

        def one_step(state: Any, key: jax.Array) -> tuple[Any, None]:
            batch_key, step_key = jax.random.split(key)
            batch = estimator.sample_minibatch(batch_key)
            return kernel.step(step_key, state, batch, step_size)[0], None

        def block(state: Any, key: jax.Array) -> tuple[Any, dict]:
            keys = jax.random.split(key, steps_per_check + 1)
            state, _ = jax.lax.scan(one_step, state, keys[:-1])
            return state, _measure(estimator, state.position, keys[-1])

        keys = jax.random.split(rng_key, NUM_CHECKS)
        return jax.lax.scan(block, kernel.init(position), keys)[1]

    return jax.jit(jax.vmap(run_chain, in_axes=(0, 0, None, None)))


def _verdict(
    step_size: float, measures: dict, temperature: float, dimension: int, max_ratio: float
) -> StepSizeCheck:
    """The diagnostic on one pilot's measures (module docstring)."""
    m = {k: np.asarray(v, np.float64) for k, v in measures.items()}
    bad = (m["finite"] == 0) | ~np.isfinite(m["potential"])
    bad |= ~np.isfinite(m["square"]) | ~np.isfinite(m["curvature"])
    if bad.any():
        chain, block = (int(i) for i in np.argwhere(bad)[0])
        reason = f"non-finite position or potential (chain {chain}, block {block + 1} of 20)"
        return StepSizeCheck(step_size, False, reason, math.nan, math.inf)
    half = NUM_CHECKS // 2
    first, second = m["potential"][:, :half], m["potential"][:, half:]
    rise = second.mean(axis=1) - first.mean(axis=1)
    allowed = max(temperature * dimension, 3.0 * float(first.std()))
    divergence = float(rise.max() / allowed)
    curvature = float(m["curvature"][:, half:].sum())
    ratio = float(m["square"][:, half:].sum()) / curvature / temperature if curvature else math.nan
    noise = step_size * float(m["noise"][:, half:].mean()) / (2 * temperature * dimension)
    if divergence > 1:
        reason = (
            f"the potential diverges: chain {int(rise.argmax())}'s mean U rose by "
            f"{rise.max():.4g} from the pilot's first half to its second (allowed {allowed:.4g})"
        )
    elif not curvature > 0:
        ratio, reason = math.nan, f"the curvature estimate is not positive ({curvature:.4g})"
    elif ratio > max_ratio:
        reason = (
            f"configurational temperature T / tau = {ratio:.4g} > {max_ratio:g}: the chains "
            "spread far wider than the posterior in its stiff directions"
        )
    else:
        reason = ""
    return StepSizeCheck(step_size, not reason, reason, ratio, divergence, noise)


def _judge(
    estimator: GradientEstimator,
    make_kernel: Callable,
    start: PyTree,
    rng_key: jax.Array,
    temperature: float,
    pilot_steps: int,
    max_ratio: float,
) -> Callable[[float], StepSizeCheck]:
    """``step size -> StepSizeCheck``, the arguments checked and the pilot compiled once."""
    temperature, pilot_steps, max_ratio = _pilot_arguments(temperature, pilot_steps, max_ratio)
    program = _pilot_program(make_kernel, -(-pilot_steps // NUM_CHECKS))
    keys = jax.random.split(rng_key, jax.tree.leaves(start)[0].shape[0])
    dimension = sum(int(np.prod(x.shape[1:])) for x in jax.tree.leaves(start))

    def judge(step_size: float) -> StepSizeCheck:
        measures = program(start, keys, jnp.float32(step_size), estimator)
        return _verdict(float(step_size), measures, temperature, dimension, max_ratio)

    return judge


def _pilot_arguments(temperature: float, steps: int, max_ratio: float) -> tuple[float, int, float]:
    """The pilot's settings, checked (before anything is traced)."""
    if not require_positive(max_ratio, "max_temperature_ratio") > 1:
        raise ValueError(f"max_temperature_ratio must be > 1, got {max_ratio}")
    return (require_positive(temperature, "temperature"),
            require_count(steps, "pilot_steps", NUM_CHECKS), float(max_ratio))  # fmt: skip


# ---------------------------------------------------------------------------- the search
def select_step_size(
    estimator: GradientEstimator,
    make_kernel: Callable,
    start: PyTree,
    rng_key: jax.Array,
    *,
    sampler: str = "sgld",
    temperature: float = 1.0,
    candidates: Sequence[float] | None = None,
    margin: float = 0.5,
    pilot_steps: int = 200,
    max_temperature_ratio: float = 10.0,
) -> StepSizeChoice:
    """The rule of the module docstring for a prepared estimator and kernel constructor
    (:func:`pilot_sampler`), from ``start`` (unconstrained, a leading chain axis: one pilot
    chain each); the other arguments as :func:`choose_step_size`.

    Raises:
        UnstableStepSizes: (a ``ValueError``) if every candidate is unstable (the message
            gives each pilot's reason).
    """
    ladder = _ladder(candidates, margin)
    judge = _judge(estimator, make_kernel, start, rng_key, temperature, pilot_steps,
                   max_temperature_ratio)  # fmt: skip
    checks: list[StepSizeCheck] = []
    low, high = 0, len(ladder)  # bisection for the first (largest) stable rung
    while low < high:
        middle = (low + high) // 2
        checks.append(judge(ladder[middle]))
        low, high = (low, middle) if checks[-1].stable else (middle + 1, high)
    if low == len(ladder):
        reasons = "; ".join(f"{c.step_size:.3g}: {c.reason}" for c in checks)
        raise UnstableStepSizes(
            f"candidates: every step size tried is unstable, down to {ladder[-1]:.3g} "
            f"({reasons}); pass smaller candidates, or start the chains nearer the posterior "
            "(init_params)"
        )
    if low == 0:
        warnings.warn(
            f"the largest candidate step size, {ladder[0]:.3g}, is stable: the limit may lie "
            "higher; pass larger candidates to find it",
            UserWarning,
            stacklevel=3,
        )
    return StepSizeChoice(margin * ladder[low], ladder[low], margin, sampler, ladder,
                          tuple(checks))  # fmt: skip


def _ladder(candidates: Sequence[float] | None, margin: float) -> tuple[float, ...]:
    """The candidates, largest first, and the margin, checked."""
    if not 0 < require_positive(margin, "margin") <= 1:
        raise ValueError(f"margin must lie in (0, 1], got {margin}")
    if candidates is None:
        return default_ladder()
    if isinstance(candidates, str) or not isinstance(candidates, Sequence | np.ndarray):
        raise TypeError(f"candidates must be a sequence of step sizes, got {candidates!r}")
    if not len(candidates):
        raise ValueError("candidates must hold at least one step size")
    return tuple(sorted({require_positive(c, "candidates") for c in candidates}, reverse=True))


# ---------------------------------------------------------------------------- front-ends
def choose_step_size(
    rng_key: jax.Array,
    model: Callable,
    inputs: ArrayLike,
    labels: ArrayLike | None = None,
    *,
    sampler: str = "sgld",
    candidates: Sequence[float] | None = None,
    margin: float = 0.5,
    pilot_steps: int = 200,
    num_chains: int = 4,
    temperature: float = 1.0,
    max_temperature_ratio: float = 10.0,
    **settings: Any,
) -> StepSizeChoice:
    """The step size for :func:`~mtbkd_jax.infer.run_sgmcmc`: ``margin`` times the largest
    rung of ``candidates`` whose pilot is stable (rule and diagnostic: module docstring).

    Args:
        rng_key, model, inputs, labels, sampler, temperature: as
            :func:`~mtbkd_jax.infer.run_sgmcmc`; so are ``settings``: ``batch_size``,
            ``prior_batch_size``, ``friction``, ``sampler_options``, ``model_kwargs`` and
            ``init_params`` (the pilots' start for every chain; pass the warm start, e.g.
            ``run_map(...).point()``, else each chain starts at NumPyro's random start).
        candidates: the ladder (default :func:`default_ladder`), tried largest first.
        margin: the result is ``margin * (largest stable rung)``, ``0 < margin <= 1``.
        pilot_steps: steps per pilot (rounded up to a multiple of 20, at least 20).
        num_chains: chains per pilot (pooled in the diagnostic).
        max_temperature_ratio: ``T / tau`` above which a pilot is unstable (> 1).

    Returns:
        A :class:`StepSizeChoice`: ``.step_size`` to pass on, ``.checks`` the evidence.
    """
    _ladder(candidates, margin), _pilot_arguments(temperature, pilot_steps, max_temperature_ratio)
    estimator, make_kernel, start, key = _prepare(
        rng_key, model, inputs, labels, sampler, num_chains, temperature, settings
    )
    return select_step_size(
        estimator, make_kernel, start, key, sampler=sampler, temperature=temperature,
        candidates=candidates, margin=margin, pilot_steps=pilot_steps,
        max_temperature_ratio=max_temperature_ratio,
    )  # fmt: skip


def check_step_size(
    rng_key: jax.Array,
    model: Callable,
    inputs: ArrayLike,
    labels: ArrayLike | None = None,
    *,
    step_size: float,
    sampler: str = "sgld",
    pilot_steps: int = 200,
    num_chains: int = 4,
    temperature: float = 1.0,
    max_temperature_ratio: float = 10.0,
    **settings: Any,
) -> StepSizeCheck:
    """One pilot at ``step_size`` and the diagnostic's verdict (``.stable``, ``.reason``,
    ``.temperature_ratio``); the arguments as :func:`choose_step_size`."""
    step_size = require_positive(step_size, "step_size")
    _pilot_arguments(temperature, pilot_steps, max_temperature_ratio)
    estimator, make_kernel, start, key = _prepare(
        rng_key, model, inputs, labels, sampler, num_chains, temperature, settings
    )
    return _judge(estimator, make_kernel, start, key, temperature, pilot_steps,
                  max_temperature_ratio)(step_size)  # fmt: skip


_SETTINGS = ("batch_size", "prior_batch_size", "friction", "sampler_options", "model_kwargs",
             "init_params")  # fmt: skip


def _prepare(
    rng_key: jax.Array,
    model: Callable,
    inputs: ArrayLike,
    labels: ArrayLike | None,
    sampler: str,
    num_chains: int,
    temperature: float,
    settings: dict[str, Any],
) -> tuple[GradientEstimator, Callable, PyTree, jax.Array]:
    """``(estimator, kernel constructor, starting points, pilot key)``, checked."""
    require_key(rng_key)
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    if unknown := sorted(set(settings) - set(_SETTINGS)):
        raise TypeError(f"unexpected keyword argument(s) {unknown}; the settings of run_sgmcmc "
                        f"a pilot takes are {list(_SETTINGS)}")  # fmt: skip
    get = settings.get
    friction = check_friction(sampler, get("friction", DEFAULT_FRICTION), stacklevel=4)
    make_kernel = pilot_sampler(sampler, temperature=temperature, friction=friction,
                                options=get("sampler_options"))  # fmt: skip
    features, labels, kwargs = prepare_data(model, inputs, labels, get("model_kwargs"))
    plan = minibatch_plan(model, (features, labels), kwargs, get("batch_size"),
                          get("prior_batch_size"))  # fmt: skip
    estimator = GradientEstimator(model, (features, labels), plan.kwargs, plan.plates)
    init_key, pilot_key = jax.random.split(rng_key)
    start = starting_positions(model, estimator, plan, get("init_params"), init_key,
                               require_count(num_chains, "num_chains"))  # fmt: skip
    return estimator, make_kernel, start, pilot_key
