"""Bundled-data loaders and teacher construction."""

from mtbkd_jax.datasets.digits import DistillationData, load_digits_distillation

__all__ = ["DistillationData", "load_digits_distillation"]
