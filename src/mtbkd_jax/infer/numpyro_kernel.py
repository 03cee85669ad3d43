"""SG-MCMC as a NumPyro ``MCMCKernel``: any NumPyro model with a subsampled plate, run by
``numpyro.infer.MCMC``.

NumPyro has no SG-MCMC (its issue #2075). :class:`SGMCMC` brings this package's kernels
(:mod:`~mtbkd_jax.infer.sgld`, :mod:`~mtbkd_jax.infer.sghmc`,
:mod:`~mtbkd_jax.infer.cyclical_sgld`, :mod:`~mtbkd_jax.infer.sgnht`,
:mod:`~mtbkd_jax.infer.psgld`) to it, over the model's minibatch gradient estimator
(:mod:`mtbkd_jax.infer.gradients`). One MCMC iteration is one minibatch step; an epoch is ``N //
batch_size`` steps in a fresh random order (drawn on the device at the epoch's first step), so each
example is visited at most once per epoch (the ``N mod batch_size`` left over are not, in that
epoch: the gradient estimate stays unbiased); NC-SGLD's chains draw each step's minibatch anew, with
replacement, as ``run_sgmcmc`` does (:class:`~mtbkd_jax.infer._orders.IndependentOrders`). Warm-up
steps are sampler steps whose states are discarded (pSGLD's preconditioner adapts during them; the
other samplers adapt nothing). ``mcmc.run``, ``get_samples``, ``print_summary``, the progress bar,
the chain methods and ``arviz.from_numpyro(mcmc)`` work as for NUTS, except that
``numpyro.deterministic`` sites are not recorded and, the model being subsampled, ArviZ's
``observed_data`` holds one minibatch and ``log_likelihood=True`` fails (NumPyro's
``log_likelihood`` cannot draw the plate's indices; :func:`~mtbkd_jax.infer.run_sgmcmc`'s
``to_datatree()`` holds both over all the data); a draw that is not finite (a step past the
stability limit) is marked in the default field ``diverging``, which ``print_summary`` counts
and ArviZ's ``sample_stats`` holds, as NUTS's divergences. ``mcmc.run(..., init_params=...)``
takes unconstrained values, NumPyro's convention (``run_sgmcmc`` and ``run_nuts`` take the
model's own, constrained, values). A model with a latent site inside the subsampled plate
(one per example), a discrete latent site or none is refused: SG-MCMC subsamples data, not latent
variables.

``run_sgmcmc`` is the faster driver for long runs (host-drawn orders, chunked epochs,
thinning inside the chain, checkpoints, streamed predictions): ``docs/benchmarks.md`` reports
how much faster.

Example:
    >>> import jax, jax.numpy as jnp, numpyro, numpyro.distributions as dist
    >>> from numpyro.infer import MCMC
    >>> from mtbkd_jax.infer import SGMCMC
    >>> def model(x):
    ...     mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
    ...     with numpyro.plate("data", x.shape[0], subsample_size=20) as idx:
    ...         numpyro.sample("x", dist.Normal(mu, 1.0), obs=x[idx])
    >>> x = 2.0 + jax.random.normal(jax.random.key(0), (200,))
    >>> mcmc = MCMC(SGMCMC(model, "sgld", step_size=1e-3), num_warmup=200, num_samples=500,
    ...             progress_bar=False)
    >>> mcmc.run(jax.random.key(1), x)
    >>> bool(abs(mcmc.get_samples()["mu"].mean() - x.mean()) < 0.1)
    True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.infer.mcmc import MCMCKernel
from numpyro.util import is_prng_key

from mtbkd_jax._checks import require_count, require_nonnegative, require_positive
from mtbkd_jax.infer import schedules
from mtbkd_jax.infer._common import check_init_params
from mtbkd_jax.infer._orders import INDEPENDENT_MINIBATCH_SAMPLERS
from mtbkd_jax.infer._plan import check_schedule
from mtbkd_jax.infer._samplers import (
    DEFAULT_FRICTION,
    SAMPLERS,
    build_sampler,
    check_friction,
    check_sampler_options,
)
from mtbkd_jax.infer._state_fields import fields_only
from mtbkd_jax.infer.gradients import GradientEstimator, minibatch_plan
from mtbkd_jax.students import Student

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

__all__ = ["SGMCMC", "SGMCMCState"]


@fields_only
class SGMCMCState(NamedTuple):
    """The state ``MCMC`` carries: the step count ``i``, the unconstrained sample ``z`` (its
    ``sample_field``), the kernel's state, each plate's current epoch order, the key, the
    last step size, and whether the sample holds a value that is not finite (``diverging``, a
    default field as NUTS's: ``print_summary`` counts it, ArviZ reads it)."""

    i: jax.Array
    z: dict
    kernel: Any
    orders: dict
    rng_key: jax.Array
    step_size: jax.Array
    diverging: jax.Array

    def __getitem__(self, key: Any) -> Any:
        # NumPyro's MCMC reads extra_fields by attribute, then by key: a field this state does
        # not have reached the user as "tuple indices must be integers or slices, not str"
        if isinstance(key, str):
            raise ValueError(_missing_field(key))
        return tuple.__getitem__(self, key)


_NUTS_FIELDS = ("potential_energy", "energy", "accept_prob", "mean_accept_prob", "num_steps",
                "adapt_state")  # fmt: skip


def _missing_field(name: str) -> str:
    """The message for an ``extra_fields`` entry SGMCMC's state does not have."""
    fields = ", ".join(SGMCMCState._fields)
    why = (
        " (a minibatch kernel never evaluates the potential energy, nor accepts or rejects; "
        "the potential at a draw is -e.logdensity(e.unconstrain(draw), e.full_batch()) with "
        "e = kernel.estimator)"
        if name in _NUTS_FIELDS  # NumPyro asks for one attribute at a time
        else ""
    )
    return f"extra_fields: SGMCMC's state has no field {name!r}{why}; its fields are {fields}"


class SGMCMC(MCMCKernel):
    """SG-MCMC for ``numpyro.infer.MCMC``.

    The model's inputs go to ``mcmc.run`` as the student takes them: a student with a
    ``feature_extractor`` takes ``student.featurize(inputs)`` (the ``run_*`` functions apply
    the extractor themselves).

    Args:
        model: a NumPyro model with at least one subsampled plate,
            ``numpyro.plate(name, N, subsample_size=B)``, that indexes its data with the
            plate's indices; or a model with its own subsampling plan
            (:class:`~mtbkd_jax.MTBKDModel`: ``batch_size``, default 64).
        sampler: one of ``"sgld"``, ``"sghmc"``, ``"cyclical_sgld"``, ``"sgnht"``,
            ``"psgld"``, ``"ncsgld"``.
        step_size: a float, or a schedule ``step -> step size``
            (:mod:`mtbkd_jax.infer.schedules`); the step counts warm-up steps too.
        batch_size, prior_batch_size: minibatch sizes for a model with its own plan (the
            data plate's default 64; the transfer plate's, in proportion).
        temperature: ``tau`` (1 = the posterior).
        friction: SGHMC's friction; SGNHT's injected noise.
        cycle_length, exploration_fraction: cyclical SGLD's cycles (in steps). Draws of the
            exploration stages are kept too (``MCMC`` keeps every state): thin them yourself,
            or use ``run_sgmcmc``, which drops them.
        sampler_options: further kernel settings (pSGLD's ``decay``, ``regularizer``,
            ``correction``, ``adapt_steps``: by default its preconditioner adapts during the
            warm-up only; NC-SGLD's ``rank``, ``margin``).
    """

    sample_field = "z"

    @property
    def default_fields(self) -> tuple[str, ...]:
        return ("z", "diverging")

    def __init__(
        self,
        model: Callable,
        sampler: str = "sgld",
        *,
        step_size: float | Callable = 1e-5,
        batch_size: int | None = None,
        prior_batch_size: int | None = None,
        temperature: float = 1.0,
        friction: float = DEFAULT_FRICTION,
        cycle_length: int = 1000,
        exploration_fraction: float = 0.5,
        sampler_options: dict | None = None,
    ) -> None:
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
        if not callable(model):
            raise TypeError(f"model must be a NumPyro model (a callable), got {model!r}")
        self.model = model
        self.sampler = sampler
        self.schedule: Callable[[Any], Any] = (  # takes a Python int or an int array
            step_size
            if callable(step_size)
            else schedules.constant(require_positive(step_size, "step_size"))
        )
        counts = {"batch_size": batch_size, "prior_batch_size": prior_batch_size}
        checked = {k: None if v is None else require_count(v, k) for k, v in counts.items()}
        self.batch_size, self.prior_batch_size = checked["batch_size"], checked["prior_batch_size"]
        self.options: dict[str, Any] = dict(
            temperature=require_nonnegative(temperature, "temperature"),
            friction=check_friction(sampler, friction, stacklevel=3),
            cycle_length=require_count(cycle_length, "cycle_length"),
            exploration_fraction=_fraction(exploration_fraction),
            options=check_sampler_options(sampler, sampler_options),
        )
        self._user_options = dict(self.options["options"])
        self._estimator: GradientEstimator | None = None
        self._plan_kwargs: dict[str, Any] = {}  # what the model's own plan adds to its kwargs

    @property
    def estimator(self) -> GradientEstimator:
        """The estimator on the data of the last ``init`` (``mcmc.run``)."""
        if self._estimator is None:
            raise RuntimeError("SGMCMC.init has not run: call mcmc.run(...) first")
        return self._estimator

    def _estimator_for(self, model_args: tuple, model_kwargs: dict | None) -> GradientEstimator:
        """The estimator on the data ``MCMC`` passes (traced under ``jit_model_args=True``),
        with the plates and plan of ``init``: the data are never stale constants."""
        kwargs = {**(model_kwargs or {}), **self._plan_kwargs}
        return GradientEstimator(self.model, tuple(model_args), kwargs, self.estimator.plates)

    def init(
        self,
        rng_key: jax.Array,
        num_warmup: int,
        init_params: dict[str, ArrayLike] | None,
        model_args: tuple,
        model_kwargs: dict | None,
    ) -> SGMCMCState:
        # NumPyro calls init again at every mcmc.run (this kernel has no _sample_fn attribute)
        _check_student_inputs(self.model, model_args)
        # the run's length is unknown here: a schedule may be 0 until after the warm-up
        check_schedule(self.schedule, max(int(num_warmup), 1) + 1, allow_all_zero=True)
        plan = minibatch_plan(
            self.model, tuple(model_args), model_kwargs, self.batch_size, self.prior_batch_size
        )
        if init_params is not None:
            _check_init_params(init_params, plan.latent_shapes, rng_key)
        options = self.options["options"]
        if self.sampler == "psgld" and "adapt_steps" not in self._user_options:
            # pSGLD's preconditioner adapts during the warm-up only (mtbkd_jax.infer.psgld)
            self.options["options"] = {**options, "adapt_steps": max(int(num_warmup), 1)}
        given = set(model_kwargs or {})
        self._plan_kwargs = {k: v for k, v in plan.kwargs.items() if k not in given}
        self._estimator = GradientEstimator(self.model, tuple(model_args), plan.kwargs, plan.plates)
        if is_prng_key(rng_key):
            return self._init_one(rng_key, init_params)
        return jax.vmap(self._init_one)(rng_key, init_params)

    def _init_one(
        self, rng_key: jax.Array, init_params: dict[str, ArrayLike] | None
    ) -> SGMCMCState:
        rng_key, init_key = jax.random.split(rng_key)
        if init_params is None:
            position = self.estimator.initial_position(init_key)
        else:
            position = {k: jnp.asarray(v) for k, v in init_params.items()}
        kernel = build_sampler(self.sampler, self.estimator, **self.options)
        orders = {p.name: jnp.arange(p.size) for p in self.estimator.plates}
        step_size = jnp.asarray(self.schedule(0), jnp.float32)
        state = kernel.init(position)
        i = jnp.zeros((), jnp.int32)
        return SGMCMCState(i, position, state, orders, rng_key, step_size, _diverged(position))

    def sample(
        self, state: SGMCMCState, model_args: tuple, model_kwargs: dict | None
    ) -> SGMCMCState:
        """One minibatch step of every chain (``chain_method="vectorized"``: a batch of
        chains, which share the step count, so an epoch's reshuffle is one branch for all)."""
        estimator = self._estimator_for(model_args, model_kwargs)
        batched = not is_prng_key(state.rng_key)
        _check_orders(state.orders, estimator.plates)  # the last axis, with chains or not
        count = state.i[0] if batched else state.i
        lead = estimator.plates[0]
        step_in_epoch = jnp.mod(count, lead.size // lead.batch_size)
        keys = (jax.vmap(jax.random.split, (0, None))(state.rng_key, 3) if batched
                else jax.random.split(state.rng_key, 3))  # fmt: skip
        rng_key, order_key, noise_key = (keys[:, 0], keys[:, 1], keys[:, 2]) if batched else keys

        def shuffled(key: jax.Array) -> dict[str, jax.Array]:
            plate_keys = jax.random.split(key, len(estimator.plates))
            return {
                p.name: jax.random.permutation(k, p.size)
                for p, k in zip(estimator.plates, plate_keys, strict=True)
            }

        reshuffle = jax.vmap(shuffled) if batched else shuffled
        orders = jax.lax.cond(
            step_in_epoch == 0, lambda: reshuffle(order_key), lambda: state.orders
        )
        kernel = build_sampler(self.sampler, estimator, **self.options)

        independent = self.sampler in INDEPENDENT_MINIBATCH_SAMPLERS

        def step(
            state: SGMCMCState, orders: dict, noise_key: jax.Array, rng_key: jax.Array,
            order_key: jax.Array,
        ) -> SGMCMCState:  # fmt: skip
            batch = {p.name: p.indices(orders[p.name], step_in_epoch) for p in estimator.plates}
            if independent:  # drawn anew every step, as run_sgmcmc's IndependentOrders
                batch = _independent_batch(order_key, estimator.plates, batch)
            new, info = kernel.step(noise_key, state.kernel, batch, self.schedule(state.i))
            step_size = jnp.asarray(info.step_size, jnp.float32)
            diverging = _diverged(new.position)
            return SGMCMCState(
                state.i + 1, new.position, new, orders, rng_key, step_size, diverging
            )

        if batched:
            return jax.vmap(step)(state, orders, noise_key, rng_key, order_key)
        return step(state, orders, noise_key, rng_key, order_key)

    def postprocess_fn(self, model_args: tuple, model_kwargs: dict | None) -> Callable:
        return self._estimator_for(model_args, model_kwargs).constrain

    def get_diagnostics_str(self, state: SGMCMCState) -> str:
        diverged = ", NOT FINITE" if bool(np.any(state.diverging)) else ""
        return f"step size {float(np.ravel(state.step_size)[0]):.2e}{diverged}"


def _check_orders(orders: dict, plates: tuple) -> None:
    """A state carried over (``mcmc.post_warmup_state``) to data of another size holds
    epoch orders of the old size: named, instead of a ``lax.cond`` type error."""
    for plate in plates:
        size = jnp.shape(orders[plate.name])[-1] if plate.name in orders else None
        if size != plate.size:
            raise ValueError(
                f"the sampler's state holds epoch orders for {size} rows of plate "
                f"{plate.name!r}, but the data given have {plate.size}: a state "
                "(post_warmup_state, last_state) continues only on data of its own size"
            )


def _diverged(position: dict) -> jax.Array:
    """Whether any value of the position is NaN or infinite (a step past the stability limit
    sends the chain there, and it does not come back); ``init`` refused a model without one."""
    finite = [jnp.isfinite(leaf).all() for leaf in jax.tree.leaves(position)]
    return jnp.logical_not(jnp.stack(finite).all())


def _independent_batch(key: jax.Array, plates: tuple, batch: dict) -> dict:
    """Each subsampled plate's ``|B|`` indices drawn uniformly with replacement; a plate taken
    whole keeps its epoch order's indices."""
    keys = jax.random.split(jax.random.fold_in(key, 1), len(plates))  # apart from a reshuffle
    return {
        p.name: batch[p.name]
        if p.batch_size == p.size
        else jax.random.randint(k, (p.batch_size,), 0, p.size, dtype=batch[p.name].dtype)
        for p, k in zip(plates, keys, strict=True)
    }


def _check_student_inputs(model: Callable, model_args: tuple) -> None:
    """The canonical model's inputs against its student (shapes, and a network whose output
    is a function of each example alone: no training-mode BatchNorm or active Dropout), as
    the other front-ends check them; skipped when ``MCMC`` passes traced arguments."""
    student = getattr(model, "student", None)
    if isinstance(student, Student) and model_args:
        if not isinstance(model_args[0], jax.core.Tracer):
            with jax.ensure_compile_time_eval():  # chain_method="parallel" inits inside pmap
                try:
                    student.check_inputs(model_args[0], "model_args[0] (the inputs)")
                except ValueError as error:
                    if student.feature_extractor is None or "cannot take" not in str(error):
                        raise  # not the shape of raw inputs
                    raise ValueError(
                        f"{error}. The student has a feature_extractor, which MCMC does not "
                        "apply (run_sgmcmc and the other run_* functions do): pass "
                        "student.featurize(inputs) as the inputs"
                    ) from None


def _fraction(value: float) -> float:
    fraction = require_nonnegative(value, "exploration_fraction")
    if fraction >= 1:
        raise ValueError(f"exploration_fraction must lie in [0, 1), got {fraction}")
    return fraction


def _check_init_params(
    init_params: object, latent_shapes: dict[str, tuple[int, ...]], rng_key: jax.Array
) -> None:
    """Check ``init_params`` (unconstrained values, NumPyro's convention: names, shapes,
    finite) against the model's latent sites, with a leading chain axis when ``MCMC`` runs the
    chains vectorized; the values are used as given (float64 under ``jax_enable_x64``)."""
    if any(isinstance(v, jax.core.Tracer) for v in jax.tree.leaves(init_params)):
        return  # inside pmap (chain_method="parallel"): checked where they are concrete
    lead = () if is_prng_key(rng_key) else tuple(np.shape(rng_key)[:1])
    expected = {name: (*lead, *shape) for name, shape in latent_shapes.items()}
    check_init_params(init_params, expected, "init_params")
