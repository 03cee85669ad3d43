"""What :func:`~mtbkd_jax.experiments.run_baselines` refuses of a problem before any fit: what
its config asks of the data that the data lacks. Each used to surface only at the method that
needed it, after the methods before it had run (a learned-trust row on validation labels
without the teachers on them; 3-D inputs for the MLP student)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from mtbkd_jax.datasets import DistillationData
    from mtbkd_jax.experiments.config import ExperimentConfig
    from mtbkd_jax.experiments.methods import Method

__all__ = ["check_problem"]


def check_problem(
    data: DistillationData, config: ExperimentConfig, methods: Sequence[Method]
) -> None:
    """Raise a ``ValueError`` naming what ``data`` lacks for ``config`` and its ``methods``."""
    if config.tune and not data.has_validation:
        raise ValueError(f"config.tune needs a validation split; problem {data.name!r} has none")
    trusted = [m.label for m in methods if m.trust]
    lacks = data.teachers_validation is None or data.y_validation is None
    if trusted and config.trust_labels == "validation" and lacks:
        raise ValueError(
            f"config.trust_labels='validation' (rows {trusted}) needs the teachers on the "
            f"validation inputs and their labels; problem {data.name!r} has no "
            "teachers_validation or y_validation"
        )
    if np.ndim(data.x_train) != 2:  # the runner's student is an MLP on flat inputs
        raise ValueError(
            "the experiments' student is an MLP of flat inputs: x_train must have shape "
            f"(N, D), got {np.shape(data.x_train)} (flatten the inputs, or fit your own "
            "student with mtbkd_jax.infer)"
        )
