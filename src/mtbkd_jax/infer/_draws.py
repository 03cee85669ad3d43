"""The draws of an SG-MCMC run: each chunk's kept states, checked, gathered and packaged, and
the posterior predictive streamed over draws inside the chain.

After every chunk the sampler keeps the valid draws (burn-in and cyclical exploration dropped),
constrained and in float32 on the host, and checks that every chain is finite; at the end (or
at a divergence) they become a :class:`~mtbkd_jax.infer.posterior.Posterior`, with the
streamed predictive when it was accumulated.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mtbkd_jax.infer._common import make_posterior

if TYPE_CHECKING:
    from mtbkd_jax.infer._common import PyTree
    from mtbkd_jax.infer.posterior import Posterior

__all__ = ["Draws", "StreamedPredictive", "select_draws", "package_posterior"]


class Draws(NamedTuple):
    """Kept draws as host arrays: site -> (chains, draws, ...), and their step sizes."""

    sites: dict
    step_size: np.ndarray

    def extend(self, other: Draws) -> Draws:
        """These draws followed by ``other``'s, along the draw axis."""
        join = lambda a, b: np.concatenate([a, b], axis=1)  # noqa: E731
        sites = {k: join(v, other.sites[k]) for k, v in self.sites.items()}
        return Draws(sites, join(self.step_size, other.step_size))

    def to_arrays(self) -> dict:
        """Flat name -> array (the checkpoint's draws file)."""
        return {
            "stats/step_size": self.step_size,
            **{f"sites/{k}": v for k, v in self.sites.items()},
        }

    @classmethod
    def from_arrays(cls, arrays: dict) -> Draws | None:
        if not arrays:
            return None
        sites = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith("sites/")}
        return cls(sites, arrays["stats/step_size"])


class StreamedPredictive(NamedTuple):
    """Per-chain sums of the predictive probabilities and deviances over the valid draws."""

    sum_probs: jax.Array
    sum_deviance: jax.Array
    count: jax.Array  # type: ignore[assignment]  # shadows tuple.count; results rely on the name

    @classmethod
    def zeros(cls, num_chains: int, num_inputs: int, num_classes: int) -> StreamedPredictive:
        return cls(
            jnp.zeros((num_chains, num_inputs, num_classes)),
            jnp.zeros((num_chains, num_inputs)),
            jnp.zeros((num_chains,)),
        )

    def update(self, logits: jax.Array, valid: jax.Array) -> StreamedPredictive:
        """Add one draw's predictions (one chain) when ``valid``."""
        probs = jax.nn.softmax(logits, axis=-1)
        deviance = -2.0 * jax.scipy.special.xlogy(probs, probs).sum(-1)
        return StreamedPredictive(
            self.sum_probs + jnp.where(valid, probs, 0.0),
            self.sum_deviance + jnp.where(valid, deviance, 0.0),
            self.count + valid.astype(jnp.float32),
        )

    def summary(self) -> dict:
        count = float(np.asarray(self.count).sum())
        return {
            "predictive_mean": np.asarray(self.sum_probs).sum(0) / count,
            "mean_deviance": np.asarray(self.sum_deviance).sum(0) / count,
            "num_draws": int(count),
        }


def select_draws(
    observed: dict, position: PyTree, keep_draws: bool, constrain: Callable
) -> tuple[Draws, bool]:
    """A chunk's valid draws as host arrays, and whether every chain is finite.

    ``observed`` holds the kept steps' ``valid`` and ``step_size`` (and ``position`` when
    draws are kept), shaped (chains, epochs, draws per epoch, ...); ``position`` is the chains'
    last state."""
    valid = np.asarray(observed["valid"][0]).reshape(-1)  # the same for every chain
    num_chains = jax.tree.leaves(position)[0].shape[0]
    step_size = np.asarray(observed["step_size"]).reshape(num_chains, -1)
    finite = all(bool(jnp.isfinite(x).all()) for x in jax.tree.leaves(position))
    sites = {}
    if keep_draws:
        flat = jax.tree.map(lambda v: v.reshape(num_chains, -1, *v.shape[3:]), observed["position"])
        draws = {k: np.asarray(v, np.float32) for k, v in constrain(flat).items()}
        ok = np.ones(valid.shape, bool)
        for v in draws.values():
            ok &= np.isfinite(v).reshape(num_chains, len(valid), -1).all(axis=(0, 2))
        finite &= bool(ok[valid].all())
        valid = valid & ok
        sites = {k: v[:, valid] for k, v in draws.items()}
    return Draws(sites, step_size[:, valid]), finite


def package_posterior(
    model: Callable, draws: Draws | None, position: PyTree, stream: StreamedPredictive | None,
    *, constrain: Callable, labels: jax.Array | None, features: jax.Array | None,
    logits_fn: Callable | None, method: str, settings: dict[str, Any],
    model_kwargs: dict[str, Any] | None,
) -> Posterior:  # fmt: skip
    """The run's :class:`Posterior`: the kept draws (or, without them, each chain's last
    state) and the streamed predictive."""
    sites = {} if draws is None else draws.sites
    if not sites:  # keep_draws=False: the last state of each chain
        last = constrain(jax.tree.map(lambda z: z[:, None], position))
        sites = {k: np.asarray(v, np.float32) for k, v in last.items()}
    num_draws = next(iter(sites.values())).shape[1]
    stats = {}
    if draws is not None and draws.step_size.shape[1] == num_draws:
        stats = {"step_size": draws.step_size}
    posterior = make_posterior(
        model,
        sites,
        method=method,
        sample_stats=stats,
        labels=labels,
        features=features,
        logits_fn=logits_fn,
        settings={"inference": method, **settings},
        model_kwargs=model_kwargs,
    )
    if stream is not None:
        posterior.streamed = stream.summary()
    return posterior
