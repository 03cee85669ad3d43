"""A run's fingerprint: everything its draws depend on, so that a checkpoint resumes only the run
that wrote it.

A resumed run must produce the draws an uninterrupted run would have. So the fingerprint
records, by value: the sampler's settings; step-size schedules by their values on a grid of
steps (never ``repr``, which holds a memory address); optimisers by their updates on a fixed
probe; the data and every array argument by content hashes (BLAKE2b of their bytes, read a slice
at a time, not sums); the model's settings, its latent sites and their shapes, and its
constants (the teacher prior) by content; the starting point; the key; and the versions of the
libraries whose numerics or random streams the draws depend on.

A user's own model may hold constants the fingerprint cannot see (a closure over a teacher
prior with another ``lambda``). The fingerprint therefore also *probes* the model: its log
density and gradient norm at the run's starting point on the first minibatch. These two
numbers are compared with a relative tolerance (``PROBE_RTOL``), since the same program can
round its last bits differently on another device count.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "RunFingerprint",
    "array_digest",
    "tree_digest",
    "schedule_values",
    "optimizer_digest",
    "library_versions",
    "PROBE_RTOL",
]

PROBE_RTOL = 1e-4
_SLICE_BYTES = 1 << 26  # hash 64 MB at a time: a huge array never needs a full host copy


def array_digest(array) -> str:
    """BLAKE2b of an array's dtype, shape and bytes (hex, 32 characters).

    A device array is copied to the host one slice of its leading axis at a time.
    """
    digest = hashlib.blake2b(digest_size=16)
    if isinstance(array, jax.Array) and jax.dtypes.issubdtype(array.dtype, jax.dtypes.prng_key):
        array = jax.random.key_data(array)
    shape = tuple(np.shape(array))
    dtype = np.dtype(getattr(array, "dtype", np.asarray(array).dtype))
    digest.update(f"{dtype.str}{shape}".encode())
    if len(shape) == 0 or shape[0] == 0:
        digest.update(np.ascontiguousarray(np.asarray(array)).tobytes())
        return digest.hexdigest()
    row_bytes = max(1, dtype.itemsize * math.prod(shape[1:]))
    step = max(1, _SLICE_BYTES // row_bytes)
    for start in range(0, shape[0], step):
        digest.update(np.ascontiguousarray(np.asarray(array[start : start + step])).tobytes())
    return digest.hexdigest()


def tree_digest(tree) -> str:
    """A digest of a pytree: its structure and every leaf's :func:`array_digest`."""
    leaves, structure = jax.tree.flatten(tree)
    digest = hashlib.blake2b(digest_size=16)
    digest.update(str(structure).encode())
    for leaf in leaves:
        digest.update(array_digest(leaf).encode())
    return digest.hexdigest()


def schedule_values(schedule: Callable, num_steps: int, num_points: int = 64) -> list[float]:
    """A schedule's values on a fixed grid of steps (the first few, then geometric up to the
    run's last step), as exact floats: two schedules that agree here are taken as equal."""
    last = max(int(num_steps) - 1, 0)
    grid = set(range(min(4, last + 1)))
    if last > 0:
        grid |= {int(s) for s in np.unique(np.geomspace(1, last, num_points).round())}
    steps = jnp.asarray(sorted(grid), dtype=jnp.int32)
    values = jax.vmap(schedule)(steps)
    return [float(v) for v in np.asarray(values, dtype=np.float64).reshape(-1)]


def optimizer_digest(optimizer) -> str:
    """An optax transformation's behaviour: its updates over three steps on a fixed probe (a
    small parameter tree and fixed gradients), hashed. Two optimisers that give the same updates
    there are taken as equal."""
    params = {
        "a": jnp.linspace(-1.0, 1.0, 6, dtype=jnp.float32).reshape(2, 3),
        "b": jnp.asarray(0.5, jnp.float32),
    }
    state = optimizer.init(params)
    updates_seen = []
    for step in range(3):
        grads = jax.tree.map(lambda p, s=step: jnp.sin(p * (s + 1) + 0.3) * (s + 1), params)
        updates, state = optimizer.update(grads, state, params)
        updates_seen.append(updates)
        params = jax.tree.map(lambda p, u: p + u, params, updates)
    return tree_digest(updates_seen)


def library_versions() -> dict[str, str]:
    """Versions of the libraries the draws' numerics and random streams depend on."""
    out = {}
    for name in ("mtbkd_jax", "jax", "jaxlib", "numpyro", "numpy"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "unknown"
    return out


def _plain(value):
    """JSON-friendly form: tuples as lists, NumPy scalars as Python numbers."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


@dataclass(frozen=True)
class RunFingerprint:
    """What a run's draws depend on.

    Attributes:
        exact: name -> a JSON value that must be equal for a resume.
        approx: name -> a number that must agree within ``PROBE_RTOL`` (the model probe).
    """

    exact: dict = field(default_factory=dict)
    approx: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"exact": _plain(self.exact), "approx": _plain(self.approx)}

    @classmethod
    def from_json(cls, data: Mapping) -> RunFingerprint:
        return cls(dict(data.get("exact", {})), dict(data.get("approx", {})))

    def differences(self, other: RunFingerprint) -> list[str]:
        """What differs between ``self`` (stored) and ``other`` (current), one line each."""
        stored, current = self.to_json(), other.to_json()
        lines = []
        a_flat, b_flat = _flatten(stored["exact"]), _flatten(current["exact"])
        for name in sorted(set(a_flat) | set(b_flat)):
            a, b = a_flat.get(name, "(absent)"), b_flat.get(name, "(absent)")
            if a != b:
                lines.append(f"{name}: checkpoint {_short(a)}, this run {_short(b)}")
        for name in sorted(set(stored["approx"]) | set(current["approx"])):
            a, b = stored["approx"].get(name), current["approx"].get(name)
            if a is None or b is None or not _close(a, b):
                lines.append(f"{name}: checkpoint {_short(a)}, this run {_short(b)}")
        return lines


def _flatten(tree: Mapping, prefix: str = "") -> dict:
    """Nested dicts as one level with dotted names (``model.settings.concentration``)."""
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _close(a: float, b: float) -> bool:
    if not (math.isfinite(a) and math.isfinite(b)):
        return a == b or (math.isnan(a) and math.isnan(b))
    return abs(a - b) <= PROBE_RTOL * max(abs(a), abs(b), 1e-12)


def _short(value, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
