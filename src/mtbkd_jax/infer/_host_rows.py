"""The host side of a streamed run: which arrays are streamed by which plate, each chunk's rows
gathered on the host from the epochs' orders, and memory-mapped pages handed back.

A streamed run's data (the inputs, the labels, the model's array keyword arguments) stay where
the caller keeps them: NumPy arrays or ``np.load(path, mmap_mode="r")`` memory maps. Every leaf
whose leading axis is a subsampled plate's length is *streamed* by that plate: for a chunk of
``S`` steps, the rows each step will visit (the next ``|B|`` entries of its epoch's order, as
:meth:`~mtbkd_jax.infer.minibatch.PlateSpec.indices` reads them on the device) are gathered into
an array (chains, S, |B|, ...). Other leaves (a 0-d temperature, a small table) are *resident*:
copied to the device once. Rows are cast as the device-resident path casts its data (the inputs
and a transfer set's inputs to float32, labels to int32, anything else to JAX's default dtype
of its kind), so a step sees the same values on both paths.

Reading rows of a memory map maps their pages into the process (they count in its resident set
until the kernel reclaims them). A chunk's rows of a map are read in ascending order (the device
puts them in step order), a block of 16,384 rows at a time; each block's rows lie in one
stretch of the file, and after the block exactly that stretch's pages are handed back
(``madvise(MADV_DONTNEED)``: the file's pages stay in the page cache, the process's resident set
stays bounded by one block's pages), so a run over a file larger than memory keeps a flat
footprint. Handing back the whole map after every block instead made a chunk of 512,000 random
rows of a 2.56 GB file take 4.5 s to gather, against 0.2 s then (``madvise`` walks the page
tables of the range it is given). Rows of an array in memory are read in step order.
"""

from __future__ import annotations

import mmap
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from mtbkd_jax.infer._loop import keep_positions
from mtbkd_jax.infer._orders import EpochOrders

if TYPE_CHECKING:
    from mtbkd_jax.infer.minibatch import PlateSpec

    Allocate = Callable[[tuple[int, ...], Any], np.ndarray]  # (shape, dtype) -> array

__all__ = ["HostRows", "OrdersCache", "kept_in_range", "release_pages", "check_finite_rows"]

_BLOCK_ROWS = 1 << 14  # rows gathered at a time (bounds the fancy-indexing temporaries)


def release_pages(array: Any, rows: tuple[int, int] | None = None) -> None:
    """Hand a memory map's pages back to the kernel: those of the rows ``[start, stop)`` of
    ``array`` when ``rows`` is given (and the rows are evenly spaced in the map), else the whole
    map's. ``madvise`` walks the page tables of the range it is given, so a small range costs
    little where the whole map of a large file does not.

    Only a ``np.memmap`` that shares the file's pages (mode ``"r"``, ``"r+"`` or ``"w+"``) is
    released: dropping a copy-on-write map's pages (``mode="c"``) would throw away the
    caller's edits, so such a map, an array in memory, or a buffer of unknown kind is left
    alone."""
    mapped = _shared_map(array)
    if mapped is None:
        return
    span = None if rows is None else _byte_range(mapped, array, *rows)
    if span is None:
        mapped.madvise(mmap.MADV_DONTNEED)
    elif span[1] > 0:
        mapped.madvise(mmap.MADV_DONTNEED, *span)


def _shared_map(array: Any) -> mmap.mmap | None:
    """The memory map under ``array`` when its pages are the file's and can be handed back
    (a ``np.memmap`` of mode ``"r"``, ``"r+"`` or ``"w+"`` on a system with
    ``MADV_DONTNEED``), else ``None``."""
    base = array
    while base is not None:
        mapped = getattr(base, "_mmap", None) if isinstance(base, np.memmap) else None
        if isinstance(mapped, mmap.mmap):
            shared = base.mode in ("r", "r+", "w+") and hasattr(mmap, "MADV_DONTNEED")
            return mapped if shared else None
        base = getattr(base, "base", None)
    return None


def _byte_range(mapped: mmap.mmap, array: Any, start: int, stop: int) -> tuple[int, int] | None:
    """``(offset, length)`` in ``mapped`` of the pages that hold rows ``[start, stop)`` of
    ``array`` (offset page-aligned), or ``None`` where the rows' place cannot be told."""
    stride = array.strides[0] if array.ndim else 0
    if stride <= 0 or len(mapped) == 0:
        return None
    origin = np.frombuffer(mapped, np.uint8).ctypes.data
    first = array.__array_interface__["data"][0] - origin
    if not 0 <= first < len(mapped):
        return None
    row_bytes = array.itemsize * int(np.prod(array.shape[1:], dtype=np.int64))
    begin = first + start * stride
    end = min(len(mapped), first + (stop - 1) * stride + row_bytes)
    begin -= begin % mmap.PAGESIZE
    return begin, max(0, end - begin)


def check_finite_rows(array: Any, name: str, device_dtype: Any = np.float32) -> None:
    """Raise a ``ValueError`` naming ``name`` if a floating host array holds NaN or inf, or a
    value that becomes inf in ``device_dtype`` (the dtype the device takes it in: a float64
    above float32's largest value), reading it a block at a time (no copy of the whole
    array)."""
    if not np.issubdtype(array.dtype, np.floating):
        return
    step = max(1, (1 << 24) // max(1, array.dtype.itemsize * int(np.prod(array.shape[1:]))))
    for start in range(0, array.shape[0], step):
        block = np.asarray(array[start : start + step])
        with np.errstate(over="ignore"):  # an overflow is what is looked for here
            bad = ~np.isfinite(block.astype(device_dtype, copy=False))
        if bad.any():
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            where = (where[0] + start, *where[1:])
            value = block[(where[0] - start, *where[1:])]
            detail = "" if not np.isfinite(value) else f" (it is inf in {np.dtype(device_dtype)})"
            raise ValueError(
                f"{name} must be finite; found a non-finite value at index {where}: {value}{detail}"
            )
        release_pages(array, (start, min(start + step, array.shape[0])))  # the block's pages


@dataclass(frozen=True, eq=False)  # compared by identity: jit's cache key of an estimator
class HostRows:
    """The model's data for a streamed run, leaf by leaf.

    Attributes:
        treedef: the structure of ``(model_args, array model_kwargs)``.
        roles: per leaf, the plate whose minibatches index it, or ``None`` (resident).
        leaves: the host arrays (streamed) and device arrays (resident), per leaf.
        dtypes: the dtype each leaf takes on the device.
        plates: the subsampled plates (the first sets the epoch).
    """

    treedef: Any
    roles: tuple[str | None, ...]
    leaves: tuple[Any, ...]
    dtypes: tuple[Any, ...]
    plates: tuple[PlateSpec, ...]

    @property
    def streamed(self) -> tuple[int, ...]:
        return tuple(i for i, role in enumerate(self.roles) if role is not None)

    @property
    def resident(self) -> tuple[Any, ...]:
        return tuple(self.leaves[i] for i, role in enumerate(self.roles) if role is None)

    def assemble(self, rows: tuple, resident: tuple) -> tuple[tuple, dict]:
        """``(model_args, array kwargs)`` from a minibatch's streamed rows and the resident
        leaves."""
        rows_it, resident_it = iter(rows), iter(resident)
        leaves = [next(resident_it) if r is None else next(rows_it) for r in self.roles]
        args, arrays = jax.tree.unflatten(self.treedef, leaves)
        return tuple(args), dict(arrays)

    def take(self, indices: Mapping[str, np.ndarray]) -> tuple[np.ndarray, ...]:
        """Every streamed leaf's rows at ``indices`` (plate -> int array of any shape),
        shaped ``indices.shape + row shape``, cast to the leaf's device dtype."""
        flat = {plate: np.asarray(index).reshape(1, -1) for plate, index in indices.items()}
        buffers, positions = self.take_chunk(flat)
        return tuple(
            buffer[0][where[0]].reshape(*np.shape(indices[plate]), *buffer.shape[2:])
            for plate, buffer, where in zip(
                self._plates_of_streamed, buffers, positions, strict=True
            )
        )

    @property
    def _plates_of_streamed(self) -> tuple[str, ...]:
        return tuple(role for role in self.roles if role is not None)

    def take_chunk(
        self, indices: Mapping[str, np.ndarray], allocate: Allocate = np.empty
    ) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
        """A chunk's rows as the device reads them: ``(buffers, positions)``, per streamed
        leaf a buffer (chains, n, ...) of the rows at ``indices`` (plate -> (chains, ...) int
        array of n entries per chain), cast to the leaf's device dtype, and the positions
        (int32, shaped like the plate's indices) at which each entry's row lies in its chain's
        buffer: ``buffer[c][positions[c]]`` is ``leaf[indices[c]]``.

        A shared memory map's rows lie in a chain's buffer in ascending order (the file is
        read front to back, its pages handed back a block at a time); an array in memory's in
        the indices' order. Placing the rows in step order is left to the device (a gather of
        |B| rows a step, as the device-resident path does), not done here: on the host it cost
        as much as the reading. ``allocate(shape, dtype)`` gives the arrays they are written
        into (:class:`~mtbkd_jax.infer._staging.StagingBuffers` reuses them chunk after
        chunk)."""
        layouts: dict[tuple[str, bool], tuple[np.ndarray, np.ndarray]] = {}
        buffers, positions = [], []
        for i, plate in zip(self.streamed, self._plates_of_streamed, strict=True):
            leaf, index = self.leaves[i], np.asarray(indices[plate])
            flat = index.reshape(index.shape[0], -1)
            mapped = _shared_map(leaf) is not None
            if (plate, mapped) not in layouts:
                layouts[(plate, mapped)] = _read_layout(flat, mapped, allocate)
            ordered, where = layouts[(plate, mapped)]
            buffer = allocate((*ordered.shape, *leaf.shape[1:]), self.dtypes[i])
            buffers.append(self._read(leaf, ordered, buffer, mapped))
            positions.append(where.reshape(index.shape))
        return tuple(buffers), tuple(positions)

    @staticmethod
    def _read(leaf: Any, ordered: np.ndarray, buffer: np.ndarray, mapped: bool) -> np.ndarray:
        """``leaf``'s rows at ``ordered`` (chains, n) in that order, into ``buffer``, a block
        at a time (a map's pages handed back after each block, by the block's stretch of the
        file)."""
        source = np.asarray(leaf)  # a plain view: np.take skips np.memmap's overhead
        for chain, wanted in enumerate(ordered):
            for start in range(0, wanted.shape[0], _BLOCK_ROWS):
                block = wanted[start : start + _BLOCK_ROWS]
                buffer[chain, start : start + _BLOCK_ROWS] = np.take(source, block, axis=0)
                if mapped and block.size:  # ascending: the block lies in one stretch
                    release_pages(leaf, (int(block[0]), int(block[-1]) + 1))
        return buffer

    def first_rows(self) -> tuple[jax.Array, ...]:
        """The rows ``0 .. |B| - 1`` of every plate (the device-resident path's
        ``first_batch``), on the device."""
        first = {p.name: np.arange(p.batch_size) for p in self.plates}
        return tuple(jnp.asarray(r) for r in self.take(first))

    def step_indices(
        self, orders: Mapping[str, np.ndarray], first_epoch: int, start: int, stop: int
    ) -> dict[str, np.ndarray]:
        """The rows of global steps ``start .. stop - 1``: plate -> (chains, S, |B|), read from
        ``orders`` (plate -> (chains, epochs, N) from ``first_epoch`` on)."""
        spe = self.plates[0].size // self.plates[0].batch_size
        steps = np.arange(start, stop)
        epochs = steps // spe - first_epoch
        out = {}
        for plate in self.plates:
            offset = (steps % spe)[:, None] * plate.batch_size + np.arange(plate.batch_size)
            position = np.mod(offset, plate.size)
            out[plate.name] = orders[plate.name][:, epochs[:, None], position]
        return out


def _read_layout(
    flat: np.ndarray, ascending: bool, allocate: Allocate
) -> tuple[np.ndarray, np.ndarray]:
    """``(ordered, positions)`` for a chunk's indices ``flat`` (chains, n): the indices in the
    order to read them (ascending per chain, or as given) and where each entry lands in its
    chain's buffer (int32, (chains, n), from ``allocate``)."""
    count = flat.shape[1]
    positions = allocate(flat.shape, np.dtype(np.int32))
    if not ascending:
        positions[...] = np.arange(count, dtype=np.int32)
        return flat, positions
    # equal indices read the same row, so the sort need not be stable (NumPy's default sort of
    # integers is vectorised: 4.7x faster than the stable one on 512,000 indices)
    order = np.argsort(flat, axis=-1)
    np.put_along_axis(positions, order, np.arange(count, dtype=np.int32)[None], axis=-1)
    return np.take_along_axis(flat, order, axis=-1), positions


class OrdersCache:
    """The epochs' orders a streamed run's chunks read, each epoch drawn once however many
    chunks it spans (:class:`~mtbkd_jax.infer._orders.EpochOrders`), the epochs before the
    current chunk's dropped."""

    def __init__(self, orders: EpochOrders) -> None:
        self.orders = orders
        self.epochs: dict[int, dict[str, np.ndarray]] = {}

    def take(self, first: int, last: int) -> dict[str, np.ndarray]:
        """Plate -> (chains, last - first + 1, N): the orders of epochs ``first .. last``."""
        self.epochs = {e: v for e, v in self.epochs.items() if e >= first}
        missing = [e for e in range(first, last + 1) if e not in self.epochs]
        if missing:
            drawn = self.orders.take(missing[0], missing[-1] + 1)
            for k, e in enumerate(range(missing[0], missing[-1] + 1)):
                self.epochs[e] = {name: v[:, k] for name, v in drawn.items()}
        names = self.epochs[first].keys()
        return {
            name: np.stack([self.epochs[e][name] for e in range(first, last + 1)], axis=1)
            for name in names
        }


def kept_in_range(
    keep: Callable[[int], np.ndarray], steps_per_epoch: int, start: int, stop: int, slots: int
) -> tuple[np.ndarray, np.ndarray]:
    """The kept steps among global steps ``start .. stop - 1``, as positions in the range,
    padded to ``slots``: ``(kept, real)``; padding repeats the last real position (-1 when
    there is none) and is marked ``real = False``. ``keep(epoch)`` gives an epoch's kept
    steps (:func:`~mtbkd_jax.infer._loop.keep_positions`)."""
    found: list[int] = []
    for epoch in range(start // steps_per_epoch, (stop - 1) // steps_per_epoch + 1):
        steps = epoch * steps_per_epoch + np.asarray(keep(epoch))
        found.extend(int(s) - start for s in steps if start <= s < stop)
    if len(found) > slots:
        raise AssertionError(f"{len(found)} kept steps exceed the chunk's {slots} slots")
    kept = np.full(slots, found[-1] if found else -1, np.int32)
    kept[: len(found)] = found
    real = np.arange(slots) < len(found)
    return kept, real


def keep_rule(
    keep_key: jax.Array, steps_per_epoch: int, draws_per_epoch: int, random: bool
) -> Callable[[int], np.ndarray]:
    """``epoch -> kept steps`` of the run (the device-resident loop's rule), cached."""
    compute = jax.jit(
        lambda epoch: keep_positions(keep_key, epoch, steps_per_epoch, draws_per_epoch, random)
    )
    cache: dict[int, np.ndarray] = {}

    def keep(epoch: int) -> np.ndarray:
        if epoch not in cache:
            cache[epoch] = np.asarray(compute(jnp.asarray(epoch, jnp.int32)))
        return cache[epoch]

    return keep
