"""The byte-level pieces of a checkpoint file (:mod:`mtbkd_jax.infer.checkpoint`): exact
reads, digests as data pass, and the appended draws' blocks parsed back into arrays."""

from __future__ import annotations

import math
import os
from typing import IO, Any

import numpy as np

__all__ = ["hashed", "parse_draws", "read_exactly"]


def hashed(digest: Any, data: bytes) -> bytes:
    """``data``, after adding it to ``digest``."""
    digest.update(data)
    return data


def parse_draws(data: memoryview, sites: list) -> dict[str, np.ndarray]:
    """The committed draws' blocks (a count, then each site's array) joined along the draws
    axis; a ValueError where a count is negative or a block runs past the committed bytes."""
    parts: dict[str, list[np.ndarray]] = {name: [] for name, _, _ in sites}
    offset = 0
    while offset < len(data):  # frombuffer raises past the end of data
        count = int(np.frombuffer(data, dtype="<i8", count=1, offset=offset)[0])
        if count < 0:
            raise ValueError(f"the block at byte {offset} holds {count} draws")
        offset += 8
        for name, dtype, shape in sites:
            dtype, shape = np.dtype(dtype), [count if d == -1 else int(d) for d in shape]
            if offset + dtype.itemsize * math.prod(shape) > len(data):
                raise ValueError(f"a block of {count} draws runs past the committed bytes")
            array = np.frombuffer(data, dtype=dtype, count=math.prod(shape), offset=offset)
            parts[name].append(array.reshape(shape))
            offset += array.nbytes
    return {name: np.concatenate(arrays, axis=1) for name, arrays in parts.items()}


def read_exactly(handle: IO[bytes], size: int) -> bytes:
    """``size`` bytes from ``handle``, or an EOFError (never a read past the file's end)."""
    if not 0 <= size <= os.fstat(handle.fileno()).st_size - handle.tell():  # no huge read
        raise EOFError(f"expected {size} bytes, fewer are left")
    data = handle.read(size)
    if len(data) != size:
        raise EOFError(f"expected {size} bytes, found {len(data)}")
    return data
