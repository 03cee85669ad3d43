"""The draws of an SG-MCMC run: each chunk's kept states, checked, gathered and packaged.

After every chunk the sampler keeps the valid draws (burn-in and cyclical exploration dropped),
constrained and in float32 on the host, and checks that every chain is finite; at the end (or
at a divergence) they become a :class:`~mtbkd_jax.infer.posterior.Posterior`, with the
streamed predictive when it was accumulated.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mtbkd_jax.infer._common import make_posterior

__all__ = ["select_draws", "append_chunk", "package_posterior"]


def select_draws(observed, state, keep_draws, constrain):
    """Valid draws of a chunk as host arrays (chains, draws, ...); and whether all is finite."""
    valid = np.asarray(observed["valid"][0]).reshape(-1)  # the same for every chain
    num_chains = jax.tree.leaves(state["chain"].position)[0].shape[0]
    chunk = {"step_size": np.asarray(observed["step_size"]).reshape(num_chains, -1)}
    finite = all(bool(jnp.isfinite(x).all()) for x in jax.tree.leaves(state["chain"].position))
    if keep_draws:
        flat = jax.tree.map(lambda v: v.reshape(num_chains, -1, *v.shape[3:]), observed["position"])
        draws = {k: np.asarray(v, np.float32) for k, v in constrain(flat).items()}
        ok = np.ones(valid.shape, bool)
        for v in draws.values():
            ok &= np.isfinite(v).reshape(num_chains, len(valid), -1).all(axis=(0, 2))
        finite &= bool(ok[valid].all())
        valid = valid & ok
        chunk.update({f"draw:{k}": v[:, valid] for k, v in draws.items()})
    chunk["step_size"] = chunk["step_size"][:, valid]
    return chunk, finite


def append_chunk(collected: dict, chunk: dict) -> dict:
    if not collected:
        return dict(chunk)
    return {k: np.concatenate([collected[k], chunk[k]], axis=1) for k in chunk}


def package_posterior(
    model, collected, state, labels, features, logits_fn, sampler, settings, constrain, model_kwargs
):
    draws = {k[5:]: v for k, v in collected.items() if k.startswith("draw:")}
    if not draws:  # keep_draws=False: the last state of each chain
        last = constrain(jax.tree.map(lambda z: z[:, None], state["chain"].position))
        draws = {k: np.asarray(v, np.float32) for k, v in last.items()}
    stats = (
        {"step_size": collected["step_size"]}
        if collected["step_size"].shape[1] == next(iter(draws.values())).shape[1]
        else {}
    )
    posterior = make_posterior(
        model,
        draws,
        method=sampler,
        sample_stats=stats,
        labels=labels,
        features=features,
        logits_fn=logits_fn,
        settings={"inference": sampler, **settings},
        model_kwargs=model_kwargs,
    )
    acc = state["acc"]
    if acc is not None:
        count = float(np.asarray(acc["count"]).sum())
        posterior.streamed = {
            "predictive_mean": np.asarray(acc["sum_probs"]).sum(0) / count,
            "mean_deviance": np.asarray(acc["sum_deviance"]).sum(0) / count,
            "num_draws": int(count),
        }
    return posterior
