"""Bundled-data loaders and teacher construction; every problem is a :class:`DistillationData`."""

from __future__ import annotations

from mtbkd_jax.datasets.data import DistillationData
from mtbkd_jax.datasets.deeploc import (
    DEEPLOC_CLASS_NAMES,
    DEEPLOC_TEACHER_NAMES,
    DeepLocData,
    DeepLocSplit,
    deeploc_available,
    find_deeploc_dir,
    load_deeploc,
)
from mtbkd_jax.datasets.digits import load_digits_distillation
from mtbkd_jax.datasets.fashion_mnist import (
    FASHION_MNIST_CLASS_NAMES,
    fashion_mnist_available,
    find_fashion_mnist_dir,
    load_fashion_mnist,
    load_fashion_mnist_distillation,
)
from mtbkd_jax.datasets.protein_features import sequence_features
from mtbkd_jax.datasets.synthetic import (
    SYNTHETIC_KINDS,
    SyntheticData,
    SyntheticGenerator,
    make_synthetic,
)

__all__ = [
    "DEEPLOC_CLASS_NAMES",
    "DEEPLOC_TEACHER_NAMES",
    "FASHION_MNIST_CLASS_NAMES",
    "SYNTHETIC_KINDS",
    "DeepLocData",
    "DeepLocSplit",
    "DistillationData",
    "SyntheticData",
    "SyntheticGenerator",
    "deeploc_available",
    "fashion_mnist_available",
    "find_deeploc_dir",
    "find_fashion_mnist_dir",
    "load_deeploc",
    "load_digits_distillation",
    "load_fashion_mnist",
    "load_fashion_mnist_distillation",
    "make_synthetic",
    "sequence_features",
]
