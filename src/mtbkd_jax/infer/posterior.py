"""The one result type of every inference front-end: :class:`Posterior`.

Draws are kept as NumPy float32 arrays of shape ``(chains, draws, *shape)`` keyed by site name
(names never contain '/', so they survive ArviZ 1.x). ``predict`` evaluates the student for each
draw in chunks inside one jitted ``lax.map``; ``to_datatree`` converts to an ArviZ
``xarray.DataTree``; ``save``/``load`` round-trip through netCDF (``xarray.open_datatree``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["Posterior"]


@dataclass(eq=False)
class Posterior:
    """Posterior draws of the student's weights plus everything needed to use them.

    Attributes:
        draws: site name -> array ``(chains, draws, *shape)``.
        sample_stats: name -> array ``(chains, draws)`` (ArviZ names: ``diverging``,
            ``acceptance_rate``, ``n_steps``, ``energy``, ``lp``, ``step_size``).
        method: how the draws were made (``"nuts"``, ``"svi_normal"``, ``"map"``, ...).
        settings: the distillation and inference settings (plain values).
        observed_data: name -> array, e.g. ``{"y": labels}``.
        constant_data: name -> array, e.g. ``{"teacher_weights": (M, N)}``.
        losses: the optimisation trace of SVI/MAP (empty for MCMC).
        logits_fn: ``(weights dict, features) -> logits`` for one draw.
        featurize: the student's frozen feature extractor (identity if ``None``).
        inputs: the featurized training inputs (used for the log-likelihood group).
        pointwise_log_likelihood: ``log p(y_i | theta_s)`` (chains, draws, N) when known
            without the inputs (e.g. read back by :meth:`load`).
        streamed: summaries accumulated over draws inside an SG-MCMC chain without storing
            them: ``predictive_mean`` (N, C), ``mean_deviance`` (N,), ``num_draws``.
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
    inputs: np.ndarray | None = field(default=None, repr=False)
    streamed: dict = field(default_factory=dict, repr=False)
    pointwise_log_likelihood: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self):
        if not self.draws:
            raise ValueError("draws must hold at least one site")
        shapes = {v.shape[:2] for v in self.draws.values()}
        if len(shapes) != 1:
            raise ValueError(f"every site needs the same (chains, draws) shape, got {shapes}")
        for name in self.draws:
            if "/" in name:
                raise ValueError(f"site name {name!r} contains '/', which ArviZ 1.x rejects")
        self._predict_jit = None

    # ------------------------------------------------------------------ shape
    @property
    def num_chains(self) -> int:
        return next(iter(self.draws.values())).shape[0]

    @property
    def num_draws(self) -> int:
        """Draws per chain."""
        return next(iter(self.draws.values())).shape[1]

    @property
    def num_samples(self) -> int:
        """Draws over all chains."""
        return self.num_chains * self.num_draws

    def flat_draws(self) -> dict[str, np.ndarray]:
        """Draws with chains merged: site name -> ``(chains * draws, *shape)``."""
        return {k: v.reshape((-1, *v.shape[2:])) for k, v in self.draws.items()}

    # ------------------------------------------------------------------ prediction
    def predict_logits(self, inputs, *, draw_batch_size: int = 64, featurized: bool = False):
        """The student's logits for every draw, shape ``(S, N, C)`` with ``S = chains*draws``.

        Args:
            inputs: raw inputs (the frozen feature extractor is applied) or, with
                ``featurized=True``, features.
            draw_batch_size: draws evaluated together (memory is ``draw_batch_size * N * C``
                plus the output).
        """
        if self.logits_fn is None:
            raise ValueError(
                "this posterior has no logits_fn; pass logits_fn= to Posterior.load or to the "
                "inference front-end"
            )
        if not featurized and self.featurize is not None:
            inputs = self.featurize(inputs)
        if self._predict_jit is None:
            logits_fn = self.logits_fn

            def run(draws, x, batch_size):
                return jax.lax.map(lambda d: logits_fn(d, x), draws, batch_size=batch_size)

            self._predict_jit = jax.jit(run, static_argnums=2)
        draws = {k: jnp.asarray(v) for k, v in self.flat_draws().items()}
        return self._predict_jit(draws, jnp.asarray(inputs), int(draw_batch_size))

    def predict(self, inputs, **kwargs) -> jax.Array:
        """Class probabilities ``softmax(f_theta_s(x))`` per draw, shape ``(S, N, C)``."""
        return jax.nn.softmax(self.predict_logits(inputs, **kwargs), axis=-1)

    def log_likelihood(self, inputs, labels, *, featurized: bool = False) -> np.ndarray:
        """Pointwise ``log p(y_i | theta_s)``, shape ``(chains, draws, N)``."""
        log_probs = jax.nn.log_softmax(self.predict_logits(inputs, featurized=featurized), -1)
        labels = jnp.asarray(labels)
        pointwise = jnp.take_along_axis(log_probs, labels[None, :, None], axis=-1)[..., 0]
        return np.asarray(pointwise).reshape(self.num_chains, self.num_draws, -1)

    # ------------------------------------------------------------------ ArviZ and files
    def to_datatree(self, *, log_likelihood: bool = True):
        """An ArviZ ``xarray.DataTree`` (posterior, sample_stats, observed_data,
        constant_data, log_likelihood when the training data are known)."""
        from mtbkd_jax.diagnostics import to_datatree

        pointwise = None
        if log_likelihood:
            pointwise = self.pointwise_log_likelihood
            if pointwise is None and self.inputs is not None and "y" in self.observed_data:
                pointwise = self.log_likelihood(
                    self.inputs, self.observed_data["y"], featurized=True
                )
        return to_datatree(self, log_likelihood=pointwise)

    def save(self, path) -> Path:
        """Write the DataTree to ``path`` (netCDF-4 via h5netcdf)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        self.to_datatree().to_netcdf(tmp, engine="h5netcdf")
        tmp.replace(path)  # never leave a half-written file under the final name
        return path

    @classmethod
    def load(cls, path, *, logits_fn: Callable | None = None, featurize: Callable | None = None):
        """Read a posterior written by :meth:`save` (pass ``logits_fn`` to predict again)."""
        import xarray as xr

        tree = xr.open_datatree(path, engine="h5netcdf")

        def group(name):
            if name not in tree.children:
                return {}
            return {k: np.asarray(v.values) for k, v in tree[name].to_dataset().data_vars.items()}

        losses = group("optimization").get("loss")
        attrs = tree.attrs
        return cls(
            draws=group("posterior"),
            sample_stats=group("sample_stats"),
            method=str(attrs.get("mtbkd_method", "")),
            settings=json.loads(attrs.get("mtbkd_settings", "{}")),
            observed_data=group("observed_data"),
            constant_data=group("constant_data"),
            losses=losses,
            logits_fn=logits_fn,
            featurize=featurize,
            pointwise_log_likelihood=group("log_likelihood").get("y"),
        )

    def __repr__(self) -> str:
        sites = ", ".join(f"{k}{tuple(v.shape[2:])}" for k, v in self.draws.items())
        return (
            f"Posterior(method={self.method!r}, chains={self.num_chains}, "
            f"draws={self.num_draws}, sites=[{sites}])"
        )
