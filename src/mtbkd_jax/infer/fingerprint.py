"""A run's fingerprint: everything its draws depend on, so that a checkpoint resumes only the run
that wrote it.

A resumed run must produce the draws an uninterrupted run would have. So the fingerprint
records, by value: the sampler's settings; step-size schedules by their values at every step
(never ``repr``, which holds a memory address); optimisers by their updates on a fixed probe
over the warm start's steps; static arguments by value; the data and every array argument by
content hashes (BLAKE2b of their bytes, read a slice at a time, not sums); the model's
settings, its latent sites and their shapes, its constants (the teacher prior) by content and
its base prior by its log density at fixed points; the starting point; the key; and the
versions of the libraries whose numerics or random streams the draws depend on, with a digest of
this package's own source (an editable install keeps its version when its code changes).

A user's own model may hold constants the fingerprint cannot see (a closure over a teacher
prior with another ``lambda``). The fingerprint therefore also *probes* the model at the run's
starting point: its log density on minibatches that together cover every example of every
plate (summed into at most 64 groups of consecutive minibatches; a streamed run, whose rows
stay on the host, reads 16 minibatches spread over them instead), its gradient norm and each
sample site's log density on the first minibatch, and the log density there at every chain's
start and at a point away from each (a change the model makes only where chain 0 does not
start: a clip, a bounded activation), and the streamed predictions at chain 0's start and away
from it (a ``logits_fn`` changed only where the logits are large). These numbers are compared
with a relative tolerance (``PROBE_RTOL``), since the same program can round its last bits
differently on another device count. So a change to a constant the fingerprint cannot see is
caught only when it moves a probed group's log density by more than ``PROBE_RTOL`` of it: one
teacher's logits moved by 0.02 on one example of 40 went unseen (the draws then differed by up
to 6e-6). Pass such constants as the model's arguments, where they are hashed.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.distributions import Distribution

from mtbkd_jax.infer._host_rows import release_pages

if TYPE_CHECKING:
    import optax

    from mtbkd_jax.infer._common import PyTree
    from mtbkd_jax.infer.gradients import MinibatchPlan

__all__ = [
    "RunFingerprint",
    "array_digest",
    "tree_digest",
    "schedule_values",
    "optimizer_digest",
    "static_value",
    "library_versions",
    "source_digest",
    "model_description",
    "PROBE_RTOL",
]

PROBE_RTOL = 1e-4
_SLICE_BYTES = 1 << 26  # hash 64 MB at a time: a huge array never needs a full host copy


def array_digest(array: np.ndarray | jax.Array, blocks: int = 1, dtype: Any = None) -> str:
    """BLAKE2b of an array's dtype, shape and bytes (hex, 32 characters).

    A device array is copied to the host one slice of its leading axis at a time. With
    ``dtype``, each slice is first converted to it (a streamed run's host file, digested as
    the device will hold it: the same labels stored as uint8 or int64 give one digest).

    With ``blocks = D > 1`` (a ``shard_data`` run's data, split over D data shards) an array
    whose leading axis D divides is digested as D blocks of consecutive rows: the digest of
    its dtype, shape, D and each block's plain digest. That value depends on the array and D
    only, not on where the rows live: an array spread over several processes
    (:mod:`mtbkd_jax.infer.multiprocess`) is digested block by block, each process the blocks
    its devices hold, and the block digests gathered (a collective: every process calls this
    in the same order), giving what one process with the whole array gives. Other arrays
    (no leading axis, or one D does not divide) get the plain digest.

    Raises:
        ValueError: an array split over processes other than into D row blocks (its rows
            cannot be digested without gathering them).
    """
    if isinstance(array, jax.Array) and jax.dtypes.issubdtype(array.dtype, jax.dtypes.prng_key):
        array = jax.random.key_data(array)
    shape = tuple(np.shape(array))
    split = blocks > 1 and len(shape) >= 1 and shape[0] % blocks == 0
    if isinstance(array, jax.Array) and not array.is_fully_addressable:
        if array.is_fully_replicated:  # every process holds it whole
            array = array.addressable_shards[0].data
        elif split:
            return _block_digest(_global_blocks(array, blocks), array.dtype, shape)
        else:
            raise ValueError(
                f"an array of shape {shape} spread over several processes can be digested only "
                f"as the data of a shard_data run (blocks of rows, one per data shard)"
            )
    if split:
        size = shape[0] // blocks
        parts = [_plain_digest(array[b * size : (b + 1) * size], dtype) for b in range(blocks)]
        return _block_digest(parts, np.dtype(dtype or array.dtype), shape)
    return _plain_digest(array, dtype)


def _plain_digest(array: np.ndarray | jax.Array, as_dtype: Any = None) -> str:
    digest = hashlib.blake2b(digest_size=16)
    shape = tuple(np.shape(array))
    dtype = np.dtype(as_dtype or getattr(array, "dtype", np.asarray(array).dtype))
    digest.update(f"{dtype.str}{shape}".encode())
    if len(shape) == 0 or shape[0] == 0:
        digest.update(np.ascontiguousarray(np.asarray(array, dtype)).tobytes())
        return digest.hexdigest()
    row_bytes = max(1, dtype.itemsize * math.prod(shape[1:]))
    step = max(1, _SLICE_BYTES // row_bytes)
    for start in range(0, shape[0], step):
        rows = np.asarray(array[start : start + step]).astype(dtype, copy=False)
        digest.update(np.ascontiguousarray(rows).tobytes())
        # a memory map's pages read for this slice are handed back: digesting a file larger
        # than memory keeps the process's resident set at one slice
        release_pages(array, (start, min(start + step, shape[0])))
    return digest.hexdigest()


def _block_digest(parts: list[str], dtype: Any, shape: tuple) -> str:
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{np.dtype(dtype).str}{shape} in {len(parts)} blocks".encode())
    for part in parts:
        digest.update(bytes.fromhex(part))
    return digest.hexdigest()


def _global_blocks(array: jax.Array, blocks: int) -> list[str]:
    """The plain digests of an array's ``blocks`` row blocks, where several processes hold
    it: each process digests the blocks of its own shards, then all gather them."""
    from jax.experimental import multihost_utils

    size = array.shape[0] // blocks
    mine = np.zeros((blocks, 16), np.uint8)
    for shard in array.addressable_shards:
        rows = shard.index[0] if shard.index else slice(None)
        first, stop = rows.start or 0, array.shape[0] if rows.stop is None else rows.stop
        whole = [b for b in range(blocks) if first <= b * size and (b + 1) * size <= stop]
        if shard.index[1:] and any(s != slice(None) for s in shard.index[1:]):
            whole = []  # split along another axis too: no block is whole here
        for b in whole:
            if not mine[b].any():
                local = shard.data[b * size - first : (b + 1) * size - first]
                mine[b] = np.frombuffer(bytes.fromhex(_plain_digest(local)), np.uint8)
    everyone = np.asarray(multihost_utils.process_allgather(mine))  # (processes, blocks, 16)
    found = np.bitwise_or.reduce(everyone, axis=0)
    if not found.any(axis=-1).all():  # a block no process holds whole
        raise ValueError(
            f"an array of shape {tuple(array.shape)} spread over several processes is not split "
            f"into {blocks} blocks of rows (one per data shard), so it cannot be digested"
        )
    # a block held by several processes has the same digest in each: OR changes nothing
    return [bytes(row).hex() for row in found]


def tree_digest(tree: PyTree, blocks: int = 1) -> str:
    """A digest of a pytree: its structure and every leaf's :func:`array_digest` (with
    ``blocks``)."""
    leaves, structure = jax.tree.flatten(tree)
    digest = hashlib.blake2b(digest_size=16)
    digest.update(str(structure).encode())
    for leaf in leaves:
        digest.update(array_digest(leaf, blocks).encode())
    return digest.hexdigest()


def schedule_values(schedule: Callable, num_steps: int) -> str:
    """A digest of a schedule's values at every step of the run (evaluated a million steps at a
    time, in float32): two schedules are taken as equal only if they agree at every step."""
    digest = hashlib.blake2b(digest_size=16)
    evaluate = jax.jit(jax.vmap(schedule))
    step = 1 << 20
    for start in range(0, max(int(num_steps), 1), step):
        steps = jnp.arange(start, min(start + step, max(int(num_steps), 1)), dtype=jnp.int32)
        values = np.asarray(evaluate(steps), dtype=np.float32)
        digest.update(np.ascontiguousarray(values).tobytes())
    return digest.hexdigest()


def optimizer_digest(optimizer: optax.GradientTransformation, num_steps: int = 3) -> str:
    """An optax transformation's behaviour: its updates over ``num_steps`` steps (the warm
    start's own number, so that schedules inside the optimiser are seen at every step) on a
    fixed probe, hashed. The probe's gradients span six orders of magnitude (1e-3 to 1e3), so
    that clipping thresholds and other scale-dependent settings show."""
    params = {
        "a": jnp.linspace(-1.0, 1.0, 6, dtype=jnp.float32).reshape(2, 3),
        "b": jnp.asarray(0.5, jnp.float32),
    }

    def step(
        carry: tuple[PyTree, PyTree], index: jax.Array
    ) -> tuple[tuple[PyTree, PyTree], PyTree]:
        params, state = carry
        scale = 10.0 ** (jnp.mod(index, 7).astype(jnp.float32) - 3.0)
        grads = jax.tree.map(lambda p: jnp.sin(p * (index + 1) + 0.3) * scale, params)
        updates, state = optimizer.update(grads, state, params)
        params = jax.tree.map(lambda p, u: p + u, params, updates)
        return (params, state), updates

    steps = jnp.arange(max(int(num_steps), 3), dtype=jnp.int32)
    _, updates = jax.jit(lambda p: jax.lax.scan(step, (p, optimizer.init(p)), steps))(params)
    return tree_digest(updates)


def static_value(value: object) -> Any:
    """A JSON value for a static (non-array) argument, by value: plain values as they are,
    arrays and array trees by digest, functions by their module and qualified name (and a
    ``functools.partial`` with its arguments), a NumPyro distribution by its structure and
    parameters, never a ``repr`` holding a memory address."""
    import functools

    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray | jax.Array):
        return {"array": array_digest(value)}
    if isinstance(value, list | tuple):
        return [static_value(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): static_value(v) for k, v in value.items()}
    if isinstance(value, functools.partial):
        return {
            "partial": static_value(value.func),
            "args": static_value(value.args),
            "kwargs": static_value(value.keywords),
        }
    if callable(value) and hasattr(value, "__qualname__"):
        return f"{getattr(value, '__module__', '?')}.{value.__qualname__}"
    if isinstance(value, Distribution):  # by its parameters, not its type alone
        leaves = [np.asarray(leaf) for leaf in jax.tree.leaves(value)]
        return {"distribution": str(jax.tree.structure(value)), "parameters": tree_digest(leaves)}
    description = getattr(value, "description", None)
    if description is not None:
        return static_value(description)
    return f"{type(value).__module__}.{type(value).__qualname__}"


def library_versions() -> dict[str, str]:
    """Versions of the libraries the draws' numerics and random streams depend on, and a
    digest of this package's own source (``mtbkd_jax_source``): an editable install, or a
    checkout on ``PYTHONPATH``, keeps its version number when its code changes."""
    out = {}
    for name in ("mtbkd_jax", "jax", "jaxlib", "numpyro", "numpy"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "unknown"
    out["mtbkd_jax_source"] = source_digest(Path(__file__).resolve().parents[1])
    return out


@functools.cache
def source_digest(root: Path) -> str:
    """BLAKE2b of every ``*.py`` file under ``root``, by relative path and content."""
    digest = hashlib.blake2b(digest_size=16)
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def _plain(value: object) -> Any:
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

    def to_json_text(self) -> str:
        """The fingerprint as JSON text; a ``TypeError`` names a value JSON cannot hold."""
        import json

        try:
            return json.dumps(self.to_json())
        except TypeError as error:
            raise TypeError(
                f"the run's fingerprint holds a value JSON cannot store ({error}); a model's "
                "settings() must return plain values (numbers, strings, lists, dicts)"
            ) from None

    def differences(self, other: RunFingerprint) -> list[str]:
        """What differs between ``self`` (stored) and ``other`` (current), one line each."""
        stored, current = self.to_json(), other.to_json()
        lines = []
        a_flat, b_flat = _flatten(stored["exact"]), _flatten(current["exact"])
        for name in sorted(set(a_flat) | set(b_flat)):
            a, b = a_flat.get(name, "(absent)"), b_flat.get(name, "(absent)")
            if a != b:
                lines.append(f"{name}: checkpoint {_short(a)}, this run {_short(b)}")
        if any(line.startswith("minibatch_strata:") for line in lines):  # a data-axis size
            data = ("inputs:", "labels:", "model_kwargs.")  # digested per stratum: they differ
            lines = [line for line in lines if not line.startswith(data)]
            lines.append("(the data are digested per stratum, so their digests differ with it)")
        probed = len(lines)
        for name in sorted(set(stored["approx"]) | set(current["approx"])):
            a, b = stored["approx"].get(name), current["approx"].get(name)
            if not _close_values(a, b):
                lines.append(f"{name}: checkpoint {_short(a)}, this run {_short(b)}")
        if len(lines) > probed and not probed:  # what the probe saw, where no setting names it
            lines.append(
                "so the model's density where the chains start differs: its code, a constant "
                "or prior in it, or its data changed"
            )
        elif len(lines) > probed:  # a setting such as num_chains changes the probe's lists
            lines.append(
                "the probe's figures differ too: with the settings above, or because the "
                "model's code, a constant or prior in it, or its data changed as well"
            )
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


def _close_values(a: float | list[float] | None, b: float | list[float] | None) -> bool:
    """Numbers, or equally long lists of numbers, equal within ``PROBE_RTOL``."""
    if a is None or b is None:
        return False
    if isinstance(a, list) or isinstance(b, list):
        if not (isinstance(a, list) and isinstance(b, list)) or len(a) != len(b):
            return False
        return all(_close(x, y) for x, y in zip(a, b, strict=True))
    return _close(a, b)


def _close(a: float, b: float) -> bool:
    if not (math.isfinite(a) and math.isfinite(b)):
        return a == b or (math.isnan(a) and math.isnan(b))
    return abs(a - b) <= PROBE_RTOL * max(abs(a), abs(b), 1e-12)


def _short(value: object, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def model_description(model: Any, plan: MinibatchPlan, features: jax.Array | np.ndarray) -> dict:
    """The model's identity, settings, sites, constants and base prior (by value), for the
    fingerprint."""
    out = {
        "model": static_value(model),
        "latent_shapes": {k: list(v) for k, v in plan.latent_shapes.items()},
    }
    if callable(getattr(model, "settings", None)):
        out["settings"] = static_value(model.settings())
    constants = getattr(model, "constant_kwargs", None)
    if callable(constants):
        out["constants"] = tree_digest(constants())
    student = getattr(model, "student", None)
    if student is not None and callable(getattr(student, "prior_digest", None)):
        out["base_prior"] = student.prior_digest(tuple(features.shape[1:]))
    return out
