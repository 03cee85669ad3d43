"""Bundled-data loaders and teacher construction."""

from mtbkd_jax.datasets.digits import DistillationData, load_digits_distillation
from mtbkd_jax.datasets.synthetic import (
    SYNTHETIC_KINDS,
    SyntheticData,
    SyntheticGenerator,
    make_synthetic,
)

__all__ = [
    "SYNTHETIC_KINDS",
    "DistillationData",
    "SyntheticData",
    "SyntheticGenerator",
    "load_digits_distillation",
    "make_synthetic",
]
