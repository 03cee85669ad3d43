"""The one result type of every inference front-end: :class:`Posterior`.

Draws are kept as NumPy float32 arrays of shape ``(chains, draws, *shape)`` keyed by site name
(names never contain '/', so they survive ArviZ 1.x). ``predict`` evaluates the student for each
draw in chunks inside one jitted ``lax.map``; ``to_datatree`` converts to an ArviZ
``xarray.DataTree``; ``save``/``load`` round-trip through netCDF (``xarray.open_datatree``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import errors as flax_errors

from mtbkd_jax._checks import as_input_batch, as_labels
from mtbkd_jax._deprecation import warn_renamed
from mtbkd_jax._paths import prepare_output_file

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

__all__ = ["Posterior"]


@dataclass(eq=False)
class Posterior:
    """Posterior draws of the student's weights plus everything needed to use them.

    Attributes:
        draws: site name -> array ``(chains, draws, *shape)``: the latent sites, and the
            ``numpyro.deterministic`` ones from ``run_nuts`` and ``run_svi`` (not from
            ``run_map`` or ``run_sgmcmc``: ``numpyro.infer.Predictive(model, draws,
            return_sites=[name])`` computes them).
        sample_stats: name -> array ``(chains, draws)`` (ArviZ names: ``diverging``,
            ``acceptance_rate``, ``n_steps``, ``energy``, ``lp``, ``step_size``).
        method: how the draws were made (``"nuts"``, ``"svi_normal"``, ``"map"``, ...).
        settings: the distillation and inference settings (plain values).
        observed_data: name -> array, e.g. ``{"y": labels}``.
        constant_data: name -> array, e.g. ``{"teacher_weights": (M, N)}``.
        losses: the optimisation trace of SVI/MAP (empty for MCMC).
        logits_fn: ``(weights dict, features) -> logits`` for one draw (needed by
            :meth:`predict` only).
        featurize: the student's frozen feature extractor (identity if ``None``).
        model: the NumPyro model the draws are of (for the pointwise log-likelihood).
        model_args, model_kwargs: the model's (featurized) training data, full batch.
        pointwise_log_likelihood: observed site -> ``log p(y_i | theta_s)`` (chains, draws, N)
            when known without the model (e.g. read back by :meth:`load`).
        streamed: summaries accumulated over draws inside an SG-MCMC chain without storing
            them: ``predictive_mean`` (N, C), ``mean_deviance`` (N,), ``num_draws``.
        fitted_params: the model's ``numpyro.param`` sites at the values SVI / MAP fitted
            (the same for every draw; :mod:`~mtbkd_jax.infer._fitted_params`), put back
            wherever the model runs and given to ``logits_fn`` with each draw.
    """

    draws: dict[str, np.ndarray]
    sample_stats: dict[str, np.ndarray] = field(default_factory=dict)
    method: str = ""
    settings: dict = field(default_factory=dict)
    observed_data: dict[str, np.ndarray] = field(default_factory=dict)
    constant_data: dict[str, np.ndarray] = field(default_factory=dict)
    losses: np.ndarray | None = None
    logits_fn: Callable | None = field(default=None, repr=False)
    featurize: Callable | None = field(default=None, repr=False)
    model: Callable | None = field(default=None, repr=False)
    model_args: tuple = field(default=(), repr=False)
    model_kwargs: dict = field(default_factory=dict, repr=False)
    streamed: dict = field(default_factory=dict, repr=False)
    pointwise_log_likelihood: dict[str, np.ndarray] | None = field(default=None, repr=False)
    fitted_params: dict[str, Any] = field(default_factory=dict, repr=False)
    check_features: np.ndarray | None = field(default=None, repr=False)  # see save

    def __post_init__(self) -> None:
        if not isinstance(self.draws, dict) or not self.draws:
            raise ValueError("draws must be a dict holding at least one site")
        shapes = {np.shape(v)[:2] for v in self.draws.values()}
        if any(len(shape) < 2 for shape in shapes) or len(shapes) != 1:
            raise ValueError(
                f"every site needs the same leading (chains, draws) shape, got {sorted(shapes)}"
            )
        for name in self.draws:
            if "/" in name:
                raise ValueError(f"site name {name!r} contains '/', which ArviZ 1.x rejects")
        if isinstance(self.pointwise_log_likelihood, np.ndarray):  # one site, as ArviZ's "y"
            self.pointwise_log_likelihood = {"y": self.pointwise_log_likelihood}
        self._predict_jit: tuple[Any, Callable] | None = None  # (logits_fn, its jit)
        self._log_likelihood: tuple[tuple, dict[str, np.ndarray]] | None = None  # (key, value)
        self._fitting_shapes: set[tuple] = set()

    @property
    def num_chains(self) -> int:
        return next(iter(self.draws.values())).shape[0]

    @property
    def num_draws(self) -> int:
        """Draws per chain."""
        return next(iter(self.draws.values())).shape[1]

    @property
    def total_draws(self) -> int:
        """Draws over all chains (``num_chains * num_draws``)."""
        return self.num_chains * self.num_draws

    @property
    def num_samples(self) -> int:
        """Deprecated: :attr:`total_draws` (chains x draws); :attr:`num_draws` is per chain."""
        warn_renamed(
            "Posterior.num_samples",
            "Posterior.total_draws (chains x draws) or Posterior.num_draws (per chain)",
        )
        return self.total_draws

    @property
    def inputs(self) -> Any:
        """The model's (featurized) training inputs, if known."""
        return self.model_args[0] if self.model_args else None

    def flat_draws(self) -> dict[str, np.ndarray]:
        """Draws with chains merged: site name -> ``(chains * draws, *shape)``."""
        return {k: v.reshape((-1, *v.shape[2:])) for k, v in self.draws.items()}

    def samples(self, *, flat: bool = True) -> dict[str, np.ndarray]:
        """The draws in NumPyro's layout: ``(chains * draws, ...)`` with ``flat=True`` (what
        ``numpyro.infer.Predictive(model, posterior_samples=...)`` takes), else
        ``(chains, draws, ...)`` (``MCMC.get_samples(group_by_chain=True)``'s)."""
        return self.flat_draws() if flat else dict(self.draws)

    def point(self, chain: int = 0, draw: int = 0) -> dict[str, np.ndarray]:
        """One draw as a dict of site -> array, e.g. a MAP to start a sampler from
        (``init_params=mode.point()``)."""
        for name, value, size in (
            ("chain", chain, self.num_chains),
            ("draw", draw, self.num_draws),
        ):
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise TypeError(f"{name} must be an integer, got {value!r}")
            if not -size <= value < size:
                raise IndexError(f"{name} must lie in {-size}..{size - 1}, got {value}")
        return {k: v[chain, draw] for k, v in self.draws.items()}

    # ------------------------------------------------------------------ prediction
    def predict_logits(
        self, inputs: ArrayLike, *, draw_batch_size: int = 64, featurized: bool = False
    ) -> jax.Array:
        """The student's logits for every draw, shape ``(S, N, C)`` with ``S = chains*draws``.

        Args:
            inputs: raw inputs (the frozen feature extractor is applied) or, with
                ``featurized=True``, features.
            draw_batch_size: draws evaluated together (memory is ``draw_batch_size * N * C``
                plus the output).

        Raises:
            ValueError: if ``inputs`` hold NaN or infinite values, or do not fit the student.
        """
        if self.logits_fn is None:
            raise ValueError(
                "this posterior has no logits_fn; pass logits_fn= to Posterior.load or to the "
                "inference front-end"
            )
        if isinstance(draw_batch_size, bool) or not isinstance(draw_batch_size, int | np.integer):
            raise TypeError(f"draw_batch_size must be an integer, got {draw_batch_size!r}")
        if draw_batch_size < 1:
            raise ValueError(f"draw_batch_size must be >= 1, got {draw_batch_size}")
        inputs = _checked_inputs(inputs, "inputs")
        if not featurized and self.featurize is not None:
            inputs = self.featurize(inputs)
            inputs = _checked_inputs(inputs, "features of inputs")
        self._check_fits(inputs)
        if self._predict_jit is None or self._predict_jit[0] is not self.logits_fn:
            logits_fn = self.logits_fn  # a logits_fn assigned since is compiled anew

            def run(draws: dict, fitted: dict, x: jax.Array, batch_size: int) -> jax.Array:
                return jax.lax.map(
                    lambda d: logits_fn({**d, **fitted}, x), draws, batch_size=batch_size
                )

            self._predict_jit = (logits_fn, jax.jit(run, static_argnums=3))
        draws = {k: jnp.asarray(v) for k, v in self.flat_draws().items()}
        fitted = self.fitted_params
        return self._predict_jit[1](draws, fitted, jnp.asarray(inputs), int(draw_batch_size))

    def _check_fits(self, features: jax.Array | np.ndarray) -> None:
        """Raise a ValueError naming ``inputs`` if the student cannot take these features
        (traced abstractly once per feature shape: chunked prediction checks only the first)."""
        shape = tuple(np.shape(features)[1:])
        if shape in self._fitting_shapes:
            return
        one = {k: jax.ShapeDtypeStruct(v.shape[2:], jnp.float32) for k, v in self.draws.items()}
        example = jax.ShapeDtypeStruct((1, *np.shape(features)[1:]), jnp.float32)
        assert self.logits_fn is not None  # predict_logits checked it
        try:
            jax.eval_shape(self.logits_fn, {**one, **self.fitted_params}, example)
        except (TypeError, ValueError, flax_errors.FlaxError) as error:  # linen: a FlaxError
            trained = None if self.inputs is None else tuple(np.shape(self.inputs)[1:])
            hint = f"; the posterior was fitted on {trained} per example" if trained else ""
            raise ValueError(
                f"inputs have shape {tuple(np.shape(features))}, which the student cannot take"
                f"{hint} ({type(error).__name__}: {str(error).splitlines()[0][:200]})"
            ) from None
        self._fitting_shapes.add(shape)

    def predict(self, inputs: ArrayLike, **kwargs: Any) -> jax.Array:
        """Class probabilities ``softmax(f_theta_s(x))`` per draw, shape ``(S, N, C)``."""
        return jax.nn.softmax(self.predict_logits(inputs, **kwargs), axis=-1)

    def log_likelihood(
        self,
        inputs: ArrayLike | None = None,
        labels: ArrayLike | None = None,
        *,
        featurized: bool = False,
        draw_batch_size: int = 64,
    ) -> dict[str, np.ndarray]:
        """Pointwise log-likelihood of each of the model's observed sites, for every draw.

        Computed from the model's own observed sites (any likelihood: tempered, a user's own;
        factors such as the teacher prior are left out), for the training data by default or
        for ``inputs`` and ``labels``.

        Returns:
            Observed site name -> array ``(chains, draws, N)`` (``"y"`` for the canonical model).
        """
        if inputs is None and labels is not None:
            raise ValueError(
                "labels were given without inputs: pass inputs and labels together (without "
                "either, the log-likelihood is the training data's)"
            )
        if inputs is not None and labels is None:
            raise ValueError("labels: the log-likelihood of new inputs needs their labels")
        if self.model is None:
            if inputs is None and self.pointwise_log_likelihood is not None:
                return dict(self.pointwise_log_likelihood)
            raise ValueError(
                "this posterior does not hold its model (e.g. it was read back by "
                "Posterior.load); the log-likelihood of new data needs the model"
            )
        if inputs is None:
            if not self.model_args:
                raise ValueError("this posterior holds no training data; pass inputs and labels")
            key = self._evaluated_on()  # draws, params or model assigned since: anew
            if self._log_likelihood is None or self._log_likelihood[0] != key:
                value = self._evaluate(self.model_args, self.model_kwargs, draw_batch_size)
                self._log_likelihood = (key, value)
            return dict(self._log_likelihood[1])
        inputs = _checked_inputs(inputs, "inputs")
        if not featurized and self.featurize is not None:
            inputs = self.featurize(inputs)
        from mtbkd_jax.infer._common import label_classes  # _common imports this module

        assert labels is not None  # refused above without inputs' labels
        num_classes = label_classes(self.model, inputs)
        num_examples = int(np.shape(inputs)[0])
        checked = jnp.asarray(as_labels(labels, "labels", num_examples, num_classes))
        try:
            return self._evaluate(
                (jnp.asarray(inputs), checked), self.model_kwargs, draw_batch_size
            )
        except ValueError as error:  # a fitted param of one value per training example
            if not self.fitted_params or "invalid shape of numpyro.param" not in str(error):
                raise
            raise ValueError(
                "a fitted numpyro.param holds one value per training example (event_dim=...), "
                f"which has none for new inputs ({str(error).splitlines()[0][:200]})"
            ) from None

    def _evaluated_on(self) -> tuple:
        """What the training data's log-likelihood depends on, by identity."""
        arrays = (*self.draws.items(), *self.fitted_params.items())
        return (tuple((k, id(v)) for k, v in arrays), id(self.model), id(self.model_args))

    def _has_observed_sites(self) -> bool:
        """Whether the model has an observed site; if not (a likelihood written as a
        ``numpyro.factor``), the DataTree gets no log-likelihood group, with a warning."""
        import warnings

        from mtbkd_jax.infer.likelihood import has_observed_sites

        assert self.model is not None  # to_datatree checked it
        observation: dict[str, Any] = getattr(self.model, "observation_kwargs", dict)()
        found = has_observed_sites(
            self.model, self.model_args, {**self.model_kwargs, **observation}
        )
        if not found:
            warnings.warn(
                "the model has no observed sample site (obs=...), so the DataTree gets no "
                "log_likelihood group (az.loo needs one: write the likelihood with obs=)",
                UserWarning,
                stacklevel=3,
            )
        return found

    def _evaluate(
        self, args: tuple, kwargs: dict[str, Any], draw_batch_size: int
    ) -> dict[str, np.ndarray]:
        from mtbkd_jax.infer._fitted_params import with_fitted_params
        from mtbkd_jax.infer.likelihood import pointwise_log_likelihood

        assert self.model is not None  # log_likelihood checked it
        observation: dict[str, Any] = getattr(self.model, "observation_kwargs", dict)()
        pointwise = pointwise_log_likelihood(
            with_fitted_params(self.model, self.fitted_params),
            self.flat_draws(),
            tuple(args),
            {**kwargs, **observation},
            draw_batch_size=draw_batch_size,
        )
        return {
            k: v.reshape(self.num_chains, self.num_draws, *v.shape[1:])
            for k, v in pointwise.items()
        }

    # ------------------------------------------------------------------ ArviZ and files
    def to_datatree(self, *, log_likelihood: bool | None = None) -> Any:
        """An ArviZ ``xarray.DataTree`` (posterior, sample_stats, observed_data,
        constant_data, log_likelihood when the model and its training data are known). By
        default (``None``) the log-likelihood is left out of a tree with one draw per chain
        (a MAP, a run that kept only its last states), on which ``az.loo`` cannot work."""
        from mtbkd_jax.diagnostics import to_datatree

        pointwise = None
        if log_likelihood or (log_likelihood is None and self.num_draws > 1):
            if self.model is not None and self.model_args:
                pointwise = self.log_likelihood() if self._has_observed_sites() else None
            else:
                pointwise = self.pointwise_log_likelihood
        return to_datatree(self, log_likelihood=pointwise)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the DataTree to ``path`` (netCDF-4 via h5netcdf), atomically.

        The folder is checked first; the file is written beside the final name and moved
        into place, and nothing is left behind if writing fails. Its root attrs hold what
        :meth:`load` checks its arguments against (the first draw's logits on two training
        examples, which a streamed run keeps as :attr:`check_features`; whether there was a
        feature extractor); :attr:`streamed` goes in its own group, so a ``keep_draws=False``
        run's summaries are kept (:meth:`load` reads them back). In a run of
        several processes (:mod:`mtbkd_jax.infer.multiprocess`) only process 0 writes."""
        from mtbkd_jax.infer._posterior_file import file_checks, with_streamed

        if jax.process_index() != 0:
            return Path(path)
        path = prepare_output_file(path, "path")
        tmp = path.with_name(path.name + ".tmp")
        try:
            tree = with_streamed(self.to_datatree(log_likelihood=True), self.streamed)
            tree.attrs.update(file_checks(self))  # what load checks its arguments against
            tree.to_netcdf(tmp, engine="h5netcdf")
            tmp.replace(path)  # never leave a half-written file under the final name
        finally:
            tmp.unlink(missing_ok=True)
        return path

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        logits_fn: Callable | None = None,
        featurize: Callable | None = None,
    ) -> Posterior:
        """Read a posterior written by :meth:`save`.

        Pass ``logits_fn`` to predict again: it must give the saved first draw's logits on two
        training examples (checked: another network or activation is refused), and, where
        the student had a frozen feature extractor, ``featurize`` (without it, predicting
        from raw inputs raises; ``featurized=True`` predicts from features)."""
        from mtbkd_jax.infer._posterior_file import read_posterior

        return read_posterior(cls, path, logits_fn=logits_fn, featurize=featurize)

    def __repr__(self) -> str:
        sites = ", ".join(f"{k}{tuple(v.shape[2:])}" for k, v in self.draws.items())
        last = " (last states: keep_draws=False)" * (self.settings.get("keep_draws") is False)
        return (
            f"Posterior(method={self.method!r}, chains={self.num_chains}, "
            f"draws={self.num_draws}{last}, sites=[{sites}])"
        )


def _checked_inputs(inputs: ArrayLike, name: str) -> jax.Array | np.ndarray:
    """Inputs as an array of at least two dimensions, finite where numeric."""
    inputs = as_input_batch(inputs, name)
    if jnp.issubdtype(inputs.dtype, jnp.floating) and not bool(jnp.isfinite(inputs).all()):
        bad = np.argwhere(~np.isfinite(np.asarray(inputs)))[0]
        raise ValueError(
            f"{name} hold NaN or infinite values (the first at index {tuple(int(i) for i in bad)})"
            "; the predictions there would be NaN"
        )
    return inputs
