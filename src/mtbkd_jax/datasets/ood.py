"""Out-of-distribution (OOD) input sets for the experiments' OOD-detection columns.

Each experiment's problem carries an ``ood_inputs`` set (:class:`~mtbkd_jax.datasets.
DistillationData`) in the same input space as its test inputs, drawn here cheaply and
deterministically from a seed; a row's OOD AUROC tells these inputs (the positives) from the
test inputs by predictive entropy and by mutual information. The sets are honest but simple
stand-ins, not a benchmark's curated OOD data (none is bundled, and nothing is downloaded):

* :func:`digits_ood` (scikit-learn digits): Gaussian-noise images and pixel-shuffled test
  images, half each.
* :func:`digit_images` (Fashion-MNIST): scikit-learn's 8x8 handwritten digits enlarged to
  28x28 images, a different kind of image in Fashion-MNIST's pixel range.
* :func:`shuffled_features` (DeepLoc): the test proteins with every feature column permuted
  independently, so each feature keeps its marginal distribution but not its relations to the
  others (a "shuffled" OOD set).
* :func:`far_gaussian` (synthetic problems): inputs three standard deviations away from the
  training inputs' mean, in random directions.

Every function takes a ``seed`` (the problem's), and its own random stream is derived from
``(seed, stream tag)`` so that it never shares draws with the problem's other streams.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

__all__ = [
    "digit_images",
    "digits_ood",
    "far_gaussian",
    "gaussian_like",
    "shuffled_features",
    "shuffled_pixels",
]

_STREAM = 0x00D  # the tag of the OOD streams: rng = default_rng((seed, _STREAM, k))


def _rng(seed: int, part: int) -> np.random.Generator:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    return np.random.default_rng((int(seed), _STREAM, part))


def _matrix(values: ArrayLike, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 2 or 0 in array.shape:
        raise ValueError(f"{name} must be a non-empty (N, D) array, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.floating) or not np.isfinite(array).all():
        raise ValueError(f"{name} must hold finite floating-point values")
    return array


def _count(num: int, name: str = "num") -> int:
    if isinstance(num, bool) or not isinstance(num, int | np.integer) or num < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {num!r}")
    return int(num)


def gaussian_like(
    reference: ArrayLike, num: int, seed: int = 0, *, clip: bool = True
) -> np.ndarray:
    """``num`` Gaussian inputs with ``reference``'s per-feature mean and standard deviation
    (independent features), clipped to ``reference``'s overall range when ``clip``;
    ``reference``'s dtype, shape (num, D)."""
    x = _matrix(reference, "reference")
    num = _count(num)
    mean, std = x.mean(0, dtype=np.float64), x.std(0, dtype=np.float64)
    noise = mean + std * _rng(seed, 0).standard_normal((num, x.shape[1]))
    if clip:
        noise = np.clip(noise, x.min(), x.max())
    return noise.astype(x.dtype)


def shuffled_pixels(images: ArrayLike, seed: int = 0) -> np.ndarray:
    """Each row of ``images`` (N, D) with its D positions permuted, by a permutation of its
    own: the pixel values survive, the image does not. Same shape and dtype."""
    x = _matrix(images, "images")
    return _rng(seed, 1).permuted(x, axis=1)


def shuffled_features(inputs: ArrayLike, seed: int = 0) -> np.ndarray:
    """``inputs`` (N, D) with each feature column permuted independently across the rows:
    every feature keeps its marginal distribution, the rows lose the features' joint
    structure. Same shape and dtype."""
    x = _matrix(inputs, "inputs")
    return _rng(seed, 2).permuted(x, axis=0)


def far_gaussian(
    reference: ArrayLike, num: int, seed: int = 0, *, distance: float = 3.0
) -> np.ndarray:
    """``num`` inputs ``distance`` standard deviations from ``reference``'s mean: ``mean +
    std * (distance * u + 0.25 * z)`` with ``u`` uniform on the unit sphere and ``z`` standard
    Gaussian (per-feature mean and standard deviation of ``reference``); its dtype, (num, D)."""
    x = _matrix(reference, "reference")
    num = _count(num)
    if not np.isfinite(distance) or distance <= 0:
        raise ValueError(f"distance must be a positive number, got {distance!r}")
    rng = _rng(seed, 3)
    direction = rng.standard_normal((num, x.shape[1]))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    mean, std = x.mean(0, dtype=np.float64), x.std(0, dtype=np.float64)
    std = np.where(std > 0, std, 1.0)
    points = distance * direction + 0.25 * rng.standard_normal((num, x.shape[1]))
    return (mean + std * points).astype(x.dtype)


def digits_ood(train_inputs: ArrayLike, test_inputs: ArrayLike, seed: int = 0) -> np.ndarray:
    """The digits problem's OOD set, as many inputs as ``test_inputs``: first ``ceil(N / 2)``
    Gaussian-noise images (:func:`gaussian_like` ``train_inputs``, clipped to their range),
    then the other ``floor(N / 2)`` test images, picked at random, each pixel-shuffled
    (:func:`shuffled_pixels`)."""
    test = _matrix(test_inputs, "test_inputs")
    num_noise = (len(test) + 1) // 2
    noise = gaussian_like(train_inputs, num_noise, seed)
    picked = _rng(seed, 4).choice(len(test), len(test) - num_noise, replace=False)
    return np.concatenate([noise, shuffled_pixels(test[np.sort(picked)], seed)]).astype(test.dtype)


def digit_images(num: int, seed: int = 0, *, side: int = 28) -> np.ndarray:
    """``num`` of scikit-learn's bundled 8x8 handwritten digits (at most 1,797, picked at
    random) as MNIST-like (num, side, side) float32 images in [0, 1]: each pixel enlarged to a
    3x3 block (24x24) and the result padded with zeros (ink bright on a dark background, as in
    Fashion-MNIST and MNIST)."""
    from sklearn.datasets import load_digits

    num = _count(num)
    if isinstance(side, bool) or not isinstance(side, int) or side < 24:
        raise ValueError(f"side must be an integer >= 24, got {side!r}")
    images = load_digits().images
    if num > len(images):
        raise ValueError(f"num must be at most {len(images)} (the bundled digits), got {num}")
    picked = np.sort(_rng(seed, 5).choice(len(images), num, replace=False))
    enlarged = np.kron(images[picked] / 16.0, np.ones((1, 3, 3)))
    before = (side - 24) // 2
    padded = np.pad(enlarged, ((0, 0), (before, side - 24 - before), (before, side - 24 - before)))
    return padded.astype(np.float32)
