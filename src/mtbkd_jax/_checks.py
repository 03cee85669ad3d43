"""Validation helpers used at the public boundary (never inside jitted code)."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, SupportsFloat, cast

import numpy as np
from numpy.typing import ArrayLike

if TYPE_CHECKING:
    import jax


def as_float_array(value: ArrayLike, name: str, ndim: int | tuple[int, ...]) -> np.ndarray:
    """Return ``value`` as a float64 NumPy array with the expected number of dimensions."""
    try:
        array = np.asarray(value)
        real = not np.iscomplexobj(array)  # float64 would drop the imaginary part (a warning)
        if real:
            array = array.astype(np.float64, copy=False)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name} must be a numeric array, got {type(value).__name__}") from error
    if not real:
        raise TypeError(f"{name} must be real, got complex values")
    allowed = (ndim,) if isinstance(ndim, int) else ndim
    if array.ndim not in allowed:
        raise ValueError(
            f"{name} must have {' or '.join(map(str, allowed))} dimensions, got shape {array.shape}"
        )
    return array


def require_finite(array: np.ndarray, name: str) -> None:
    """Raise if ``array`` holds NaN or infinite values, saying where the first one is."""
    bad = ~np.isfinite(array)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        kind = "NaN" if np.isnan(array[where]) else "infinite"
        raise ValueError(
            f"{name} must be finite; found {int(bad.sum())} non-finite value(s), "
            f"the first ({kind}) at index {where}"
        )


def _as_number(value: object, name: str) -> float:
    """``value`` as a float, raising a ``TypeError`` naming ``name`` unless it is a real number
    (a Python or NumPy number, or a 0-d/one-element array; not a string, not ``None``)."""
    if isinstance(value, str | bytes) or value is None:
        raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    try:
        return float(cast(SupportsFloat, value))  # anything else raises TypeError here
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"{name} must be a number, got {value!r} ({type(value).__name__})"
        ) from error


# float32's smallest normal number and its reciprocal: a positive setting outside this range, or
# its reciprocal (XLA divides by multiplying with it), rounds to 0 or inf in float32 and turns
# a temperature's ``-inf / T`` into NaN
_FLOAT32_TINY = float(np.finfo(np.float32).tiny)
_FLOAT32_RANGE = (_FLOAT32_TINY, 1.0 / _FLOAT32_TINY)


def require_positive(value: float, name: str) -> float:
    """Return ``value`` as a float, raising unless it is finite and > 0, and within float32's
    normal range with its reciprocal (1.2e-38 to 8.5e37)."""
    value = _as_number(value, name)
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    low, high = _FLOAT32_RANGE
    if not low <= value <= high:
        raise ValueError(
            f"{name} must be a finite number > 0 between {low:.3g} and {high:.3g} (it and its "
            f"reciprocal normal float32 numbers), got {value}"
        )
    return value


def require_nonnegative(value: float, name: str) -> float:
    """Return ``value`` as a float, raising unless it is finite and >= 0."""
    value = _as_number(value, name)
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return value


#: a teacher prior's concentration above this is warned: in float32 its normaliser (log-gammas
#: of size lambda log lambda) and the teachers' responsibilities lose accuracy
ACCURATE_CONCENTRATION = 1e3
#: and one above this is refused (the density off by a nat and more; NaN from about 1e37)
MAX_CONCENTRATION = 1e6


def require_concentration(value: float, name: str = "concentration") -> float:
    """Return a teacher prior's ``lambda`` as a float: finite, >= 0 and at most
    :data:`MAX_CONCENTRATION`, warned above :data:`ACCURATE_CONCENTRATION`. A review measured,
    against float64, where two teachers share an example (the prior's gradient is then a
    difference of terms of size ``lambda``): the gradient off by 1.4% at ``lambda = 1e3``, 27%
    at 1e4 and fifteen-fold at 1e6, the log density by 1.1 nats at 1e6 and 23 at 1e7."""
    value = require_nonnegative(value, name)
    if value > MAX_CONCENTRATION:
        raise ValueError(
            f"{name} must be at most {MAX_CONCENTRATION:g}, got {value:g}: in float32 the "
            "teacher prior's log density is off by a nat at 1e6 and 23 nats at 1e7 (NaN from "
            "about 1e37); for teachers taken as exact, train the student on their soft labels"
        )
    if value > ACCURATE_CONCENTRATION:
        warnings.warn(
            f"{name}={value:g} is above {ACCURATE_CONCENTRATION:g}: in float32 the teacher "
            "prior's gradient loses accuracy where teachers share an example (measured against "
            "float64: 1.4% off at 1e3, 27% at 1e4)",
            UserWarning,
            skip_file_prefixes=(str(Path(__file__).parent),),
        )
    return value


def scalar_argument(value: object, name: str, error: type[Exception] = ValueError) -> object:
    """``value`` as it is, or the Python number a 0-d NumPy or JAX array holds
    (``np.asarray(0.9)``, ``jnp.asarray(10)``: the checks that follow take it as that number);
    ``error``, saying that a scalar was expected, for an array of another shape, a list or a
    tuple, and for a traced value (inside jit, whose value is unknown)."""
    if isinstance(value, list | tuple):
        raise error(
            f"{name} must be a scalar (a number or a 0-d array), got a {type(value).__name__}"
        )
    if isinstance(value, np.generic) or not (hasattr(value, "shape") and hasattr(value, "dtype")):
        return value
    if not isinstance(value, np.ndarray) and is_traced(value):  # NumPy's: no jax import
        raise error(
            f"{name} must be a concrete scalar (a number or a 0-d array), got a traced value"
        )
    shape = tuple(cast(np.ndarray, value).shape)
    if shape:
        raise error(
            f"{name} must be a scalar (a number or a 0-d array), got an array of shape {shape}"
        )
    return cast(np.ndarray, value).item()


#: The most equal-width (or equal-mass) bins the calibration metrics take. Bins of width 1e-6
#: resolve confidences far more finely than a test set fills them, and the arrays grow with
#: the count (the streaming state holds ``6 * (C + 1) * num_bins`` numbers): ``num_bins=10**9``
#: was taken and allocated gigabytes.
MAX_NUM_BINS = 10**6


def require_bin_count(num_bins: object, name: str = "num_bins") -> int:
    """``num_bins`` as an int, or a ``ValueError``: a positive whole number (an int, a float
    such as ``10.0``, or a 0-d array of one; not a bool, a string or 2.5) at most
    :data:`MAX_NUM_BINS`."""
    value = scalar_argument(num_bins, name)
    number = isinstance(value, int | np.integer | float | np.floating)
    if isinstance(value, bool) or not number:
        raise ValueError(f"{name} must be a positive integer, got {num_bins!r}")
    count = float(value)  # type: ignore[arg-type]  # a number, checked above
    if not np.isfinite(count) or count != int(count) or count < 1:
        raise ValueError(f"{name} must be a positive integer, got {num_bins!r}")
    if count > MAX_NUM_BINS:
        raise ValueError(
            f"{name} must be at most {MAX_NUM_BINS:_} (bins of width 1e-6; the arrays grow "
            f"with the count), got {int(count):_}"
        )
    return int(count)


def require_counts(**counts: tuple[object, int]) -> None:
    """Raise unless each ``name=(value, lowest)`` is an integer (not a bool, not a float such
    as ``2.0``) >= lowest."""
    for name, (value, lowest) in counts.items():
        require_count(value, name, lowest)


def require_count(value: object, name: str, lowest: int = 1) -> int:
    """Return ``value`` as an int, raising unless it is an integer (not a bool, not a float
    such as ``2.0``; a 0-d array of one is taken) >= lowest."""
    value = scalar_argument(value, name, TypeError)
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(
            f"{name} must be an integer >= {lowest}, got {value!r} ({type(value).__name__})"
        )
    if value < lowest:
        raise ValueError(f"{name} must be an integer >= {lowest}, got {value!r}")
    return int(value)


def is_traced(value: object) -> bool:
    """Whether ``value`` is a JAX tracer (inside jit/grad: its value is not known)."""
    import jax

    return isinstance(value, jax.core.Tracer)


def require_nonnegative_values[V](value: V, name: str, *, strictly: bool = False) -> V:
    """Check a number or a concrete array (NumPy or JAX) elementwise: finite and >= 0 (> 0 with
    ``strictly``). Traced values (inside jit) are returned unchecked: their values are unknown
    there, and validation belongs at the public boundary."""
    if is_traced(value):
        return value
    if isinstance(value, str | bytes) or value is None:
        raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name} must be a number, got {type(value).__name__}") from error
    bad = ~np.isfinite(array) | ((array <= 0) if strictly else (array < 0))
    if bad.any():
        first = float(array.reshape(-1)[int(np.argmax(bad.reshape(-1)))])
        bound = "> 0" if strictly else ">= 0"
        where = "" if array.ndim == 0 else f" (shape {array.shape})"
        raise ValueError(f"{name} must be finite and {bound}, got {first}{where}")
    return value


def require_indices(indices: object, size: int, context: str, name: str = "indices") -> None:
    """Raise unless concrete ``indices`` are integers in ``0..size-1`` (``context``, e.g. "the
    prior has 5 examples", goes into the message); traced ones (inside jit) are not checked."""
    if is_traced(indices):
        return
    array = np.asarray(indices)
    if not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"{name} must hold integers, got dtype {array.dtype}")
    if array.size and (array.min() < 0 or array.max() >= size):
        raise ValueError(
            f"{name} must lie in 0..{size - 1} ({context}), got {array.min()}..{array.max()}"
        )


def require_unit_sums(value: object, name: str, what: str, axis: int = 0) -> None:
    """Raise unless a concrete array's sums over ``axis`` (``what`` says which, for the
    message) are 1 within 1e-3; traced values (inside jit) are not checked."""
    if is_traced(value):
        return
    sums = np.asarray(value, np.float64).sum(axis)
    if sums.size and np.abs(sums - 1).max() > 1e-3:
        where = np.unravel_index(int(np.argmax(np.abs(sums - 1))), sums.shape)
        raise ValueError(
            f"{name} must have {what} summing to 1 (within 1e-3), got a sum of "
            f"{sums[where]:.6g} at index {tuple(int(i) for i in where)}; normalise it (e.g. "
            f"{name} / {name}.sum({axis}))"
        )


def as_labels(labels: ArrayLike, name: str, num_examples: int, num_classes: int) -> np.ndarray:
    """Return integer class labels of shape (N,), checking range and length."""
    return checked_labels(labels, name, num_examples, num_classes).astype(np.int32)


def checked_labels(labels: ArrayLike, name: str, num_examples: int, num_classes: int) -> np.ndarray:
    """:func:`as_labels`'s checks, the labels returned as they are when they already hold
    integers (a memory map stays one: no copy of N labels), else converted (floats holding
    whole numbers)."""
    array = labels if isinstance(labels, np.ndarray) else np.asarray(labels)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional (N,), got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        if not np.issubdtype(array.dtype, np.floating):
            raise TypeError(f"{name} must hold integer class indices, got dtype {array.dtype}")
        fractional = np.mod(array, 1) != 0  # NaN included
        if fractional.any():
            first = int(np.argmax(fractional))
            raise TypeError(
                f"{name} must hold integer class indices (floats holding whole numbers are "
                f"taken), got {array[first].item()!r} at index {first}"
            )
        array = array.astype(np.int64)
    if array.shape[0] != num_examples:
        raise ValueError(
            f"{name} has {array.shape[0]} entries but the inputs have {num_examples} examples"
        )
    low, high = label_range(array)
    if array.size and (low < 0 or high >= num_classes):
        raise ValueError(
            f"{name} must lie in 0..{num_classes - 1} (C = {num_classes} classes), "
            f"got values in {low}..{high}"
        )
    return array


LABEL_BLOCK = 1 << 22  # labels read at a time by label_range


def label_range(labels: np.ndarray) -> tuple[int, int]:
    """``(min, max)`` of integer ``labels`` (``(0, -1)`` when empty), read ``LABEL_BLOCK``
    entries at a time; a memory map's pages are handed back after each block
    (:func:`~mtbkd_jax.infer._host_rows.release_pages`), so that checking the labels of a
    file larger than memory does not grow the process's resident set by the file (pages that
    were resident before are handed back too)."""
    from mtbkd_jax.infer._host_rows import release_pages  # the infer package imports this one

    low, high = None, None
    for start in range(0, labels.shape[0], LABEL_BLOCK):
        stop = min(start + LABEL_BLOCK, labels.shape[0])
        block = np.asarray(labels[start:stop])
        block_low, block_high = int(block.min()), int(block.max())
        low = block_low if low is None else min(low, block_low)
        high = block_high if high is None else max(high, block_high)
        release_pages(labels, (start, stop))
    return (0, -1) if low is None or high is None else (low, high)


def require_key(key: object, name: str = "rng_key") -> jax.Array | np.ndarray:
    """Raise a ``TypeError`` naming ``name`` unless ``key`` is a JAX PRNG key: a typed key
    (``jax.random.key``) or a raw ``uint32`` key (``jax.random.PRNGKey``); and a
    ``ValueError`` unless it is a single key: shape ``()`` typed, or the default
    implementation's raw key shape (``(2,)``) raw, not a batch such as
    ``jax.random.split(key, 2)``."""
    import jax

    if isinstance(key, jax.Array | np.ndarray):
        typed = jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
        if typed or (key.dtype == np.uint32 and key.ndim >= 1):
            raw_shape = jax.eval_shape(jax.random.PRNGKey, 0).shape
            if key.shape != (() if typed else raw_shape):
                raise ValueError(
                    f"{name} must be a single JAX PRNG key: a typed key of shape () (e.g. "
                    f"jax.random.key(0)) or a raw uint32 key of shape {raw_shape} (e.g. "
                    f"jax.random.PRNGKey(0)), got a {'typed' if typed else 'raw uint32'} key "
                    f"array of shape {key.shape}; a batch of keys is not taken (pass keys[0])"
                )
            return key
    raise TypeError(
        f"{name} must be a JAX PRNG key, e.g. jax.random.key(0), got {key!r} ({type(key).__name__})"
    )


def as_input_batch(inputs: ArrayLike, name: str) -> jax.Array | np.ndarray:
    """``inputs`` as an array of shape (N, ...) with N >= 1 and a numeric (or bool) dtype; a
    ``jax.Array`` is kept as it is (no host copy), anything else becomes a NumPy array."""
    import jax

    if not isinstance(inputs, jax.Array):
        try:
            inputs = np.asarray(inputs)
        except (TypeError, ValueError) as error:
            raise TypeError(f"{name} must be an array, got {type(inputs).__name__}") from error
    if inputs.ndim < 2 or inputs.shape[0] == 0:
        raise ValueError(f"{name} must have shape (N, ...) with N >= 1, got {inputs.shape}")
    if not (np.issubdtype(inputs.dtype, np.number) or inputs.dtype == bool):
        raise TypeError(f"{name} must be numeric, got dtype {inputs.dtype}")
    if np.issubdtype(inputs.dtype, np.complexfloating):  # the network would drop or keep it
        raise TypeError(f"{name} must be real, got dtype {inputs.dtype}")
    return inputs


def check_prior_form(prior: object) -> None:
    """Raise a ``TypeError`` naming ``prior`` unless it is a form NumPyro's module lifting
    takes: ``None`` (the default), a distribution, a ``(name, shape) -> Distribution``
    callable, or a dict of parameter path -> distribution."""
    import numpyro.distributions as dist

    if prior is None or isinstance(prior, dist.Distribution):
        return
    if isinstance(prior, Mapping):
        for key, value in prior.items():
            if not isinstance(key, str) or not isinstance(value, dist.Distribution):
                raise TypeError(
                    "prior (a dict) must map parameter paths (str) to NumPyro distributions, "
                    f"got {key!r}: {type(value).__name__}"
                )
        return
    if not callable(prior):
        raise TypeError(
            "prior must be a NumPyro distribution, a (name, shape) -> Distribution callable "
            f"(e.g. mtbkd_jax.normal_prior(1.0)) or a dict of path -> distribution, "
            f"got {prior!r} ({type(prior).__name__})"
        )


def layer_widths(widths: object, name: str, example: str) -> tuple[int, ...]:
    """``widths`` as a tuple of layer widths, each an integer >= 1 (``()`` is allowed)."""
    if isinstance(widths, np.ndarray) and widths.ndim == 1:
        widths = widths.tolist()
    if isinstance(widths, str | bytes) or not isinstance(widths, Sequence):
        raise TypeError(
            f"{name} must be a sequence of layer widths, e.g. {example}, got {widths!r}"
        )
    return tuple(require_count(width, f"{name}[{i}]") for i, width in enumerate(widths))


def refuse_slashed_sites(names: Iterable[str]) -> None:
    """Refuse latent sites whose names hold '/' (NumPyro's ``random_nnx_module`` /
    ``random_flax_module`` name them ``prefix/param``), before anything runs: a
    :class:`~mtbkd_jax.Posterior` cannot hold them (ArviZ 1.x rejects them), which a run learnt
    only after sampling, and lost."""
    slashed = [name for name in names if "/" in name]
    if slashed:
        raise ValueError(
            f"the model's latent sites {slashed[:3]} contain '/', which ArviZ 1.x rejects, so "
            "the posterior could not hold them: lift the network with mtbkd_jax.Student (its "
            "sites are named with '.') or name the sites without '/'"
        )
