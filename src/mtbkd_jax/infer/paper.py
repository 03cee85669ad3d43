"""The reference code's sampler in one call (METHOD §5): :func:`run_paper_sgld`."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from mtbkd_jax.infer.posterior import Posterior
from mtbkd_jax.infer.sgmcmc import run_sgmcmc
from mtbkd_jax.infer.warm_start import reference_optimizer

if TYPE_CHECKING:
    import jax
    from numpy.typing import ArrayLike

__all__ = ["run_paper_sgld"]


def run_paper_sgld(
    rng_key: jax.Array,
    model: Callable,
    inputs: ArrayLike,
    labels: ArrayLike | None = None,
    *,
    partial_last_batch: bool = False,
    **overrides: Any,
) -> Posterior:
    """The reference code's schedule (METHOD §5) in one call.

    A warm start of 120 epochs of ``torch.optim.Adam(lr=3e-4, weight_decay=1e-5)`` on the mean
    batch loss (L2 coupled into the gradient: :func:`~mtbkd_jax.infer.warm_start.
    reference_optimizer`), batch 64, then 80 epochs of SGLD with ``eta = 8e-8``
    (``sqrt(2 eta) = 4e-4``), temperature 1, keeping 6 states at random steps of each epoch:
    480 draws. Any argument of :func:`run_sgmcmc` can be overridden. Use it with the
    reference's model, :meth:`MTBKDModel.paper <mtbkd_jax.MTBKDModel.paper>`
    (``lambda = 5``, ``T = 2``, ``beta = 0.02``, flat base prior); another model gets a warning
    that says how it differs.

    Args:
        partial_last_batch: the reference's epochs, ``ceil(N / 64)`` steps with a smaller last
            batch (32 steps for N = 2000), instead of ``N // 64`` equal ones.

    Example:
        >>> import jax, numpy as np
        >>> from flax import nnx
        >>> import mtbkd_jax as mk
        >>> x = np.random.default_rng(0).normal(size=(400, 4)).astype(np.float32)
        >>> y = (x[:, 0] > 0).astype(int)
        >>> bank = mk.TeacherBank.from_logits(np.stack([x[:, :2] * 3, x[:, :2]]))
        >>> model = mk.MTBKDModel.paper(mk.Student(mk.MLP(4, 2, rngs=nnx.Rngs(0))), bank)
        >>> post = mk.run_paper_sgld(jax.random.key(0), model, x, y, warm_start_epochs=2,
        ...                          num_epochs=2, progress_bar=False)
        >>> post.num_draws
        12
    """
    differences: list[str] = getattr(model, "differs_from_paper", lambda: [])()
    if differences:
        warnings.warn(
            "run_paper_sgld runs the reference code's sampler, but the model differs from "
            "the reference's (MTBKDModel.paper): " + "; ".join(differences),
            UserWarning,
            stacklevel=2,
        )
    num_examples = int(np.shape(inputs)[0]) if np.ndim(inputs) >= 1 else 0
    settings = dict(
        sampler="sgld",
        batch_size=64,
        warm_start_epochs=120,
        warm_start_optimizer=reference_optimizer(max(num_examples, 1)),
        num_epochs=80,
        num_burnin_epochs=0,
        step_size=8e-8,
        temperature=1.0,
        draws_per_epoch=6,
        random_draw_positions=True,
        partial_last_batch=partial_last_batch,
    )
    settings.update(overrides)
    return run_sgmcmc(rng_key, model, inputs, labels, **settings)
