"""Host arrays a streamed run's chunks are read into, reused chunk after chunk.

A chunk's rows (:meth:`~mtbkd_jax.infer._host_rows.HostRows.take_chunk`) are hundreds of
megabytes. Allocated afresh for every chunk, each such array is a new memory mapping whose every
page faults in when first written, and is unmapped again when the chunk is done; on a virtual
machine a fresh mapping sometimes took a second to fault in (a 131 MB ``np.ones`` took 9 ms at
the median and up to 1.05 s in 30 tries). :class:`StagingBuffers` keeps two sets of arrays and
hands them out in turn, so after the first two chunks no memory is mapped or faulted in.

The arrays are 64-byte aligned: JAX's CPU backend then takes them without a copy
(``jax.device_put`` aliases an aligned, contiguous NumPy array), so on a CPU the device reads
the rows where the host wrote them; other backends copy them to the device.

Reuse is safe because a set is written again only two chunks later: the streamed loop reads
chunk ``k + 2``'s rows after chunk ``k``'s draws have been copied back to the host, that is after
the program that read chunk ``k``'s rows (and, on an accelerator, their transfer) has finished.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["StagingBuffers", "aligned_empty"]

ALIGNMENT = 64  # bytes: what XLA's CPU backend needs to use a host array in place


def aligned_empty(shape: tuple[int, ...], dtype: Any, alignment: int = ALIGNMENT) -> np.ndarray:
    """An uninitialised C-contiguous array whose data start on an ``alignment``-byte
    boundary."""
    dtype = np.dtype(dtype)
    size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if size == 0:
        return np.empty(shape, dtype)
    raw = np.empty(size + alignment, np.uint8)
    offset = (-raw.ctypes.data) % alignment
    return raw[offset : offset + size].view(dtype).reshape(shape)


class StagingBuffers:
    """Two sets of aligned host arrays, handed out in turn (see the module's docstring).

    ``allocator()`` starts the next chunk: it returns an ``allocate(shape, dtype)`` that gives,
    call by call, the arrays of this chunk's set, reusing the set's array of the same call when
    its shape and dtype match (every chunk but a shorter last one) and allocating otherwise.
    """

    def __init__(self, num_sets: int = 2) -> None:
        if num_sets < 2:
            raise ValueError(f"num_sets must be at least 2 (one read, one written), got {num_sets}")
        self._sets: list[list[np.ndarray]] = [[] for _ in range(num_sets)]
        self._turn = 0

    def allocator(self) -> Callable[[tuple[int, ...], Any], np.ndarray]:
        arrays = self._sets[self._turn]
        self._turn = (self._turn + 1) % len(self._sets)
        calls = [0]

        def allocate(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
            k = calls[0]
            calls[0] += 1
            shape, dtype = tuple(int(n) for n in shape), np.dtype(dtype)
            if k < len(arrays) and arrays[k].shape == shape and arrays[k].dtype == dtype:
                return arrays[k]
            array = aligned_empty(shape, dtype)
            if k < len(arrays):
                arrays[k] = array
            else:
                arrays.append(array)
            return array

        return allocate
