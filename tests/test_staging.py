"""Host arrays of a streamed run's chunks (:mod:`mtbkd_jax.infer._staging`): aligned, reused
every second chunk, reallocated when a chunk's shapes change, taken by JAX's CPU backend in
place."""

import jax
import numpy as np
import pytest

from mtbkd_jax.infer._staging import ALIGNMENT, StagingBuffers, aligned_empty


@pytest.mark.parametrize(
    "shape, dtype", [((3, 5), np.float32), ((7,), np.int32), ((2, 0, 3), np.float64)]
)
def test_aligned_arrays_have_the_shape_dtype_and_alignment(shape, dtype):
    array = aligned_empty(shape, dtype)
    assert array.shape == shape and array.dtype == dtype and array.flags.c_contiguous
    assert array.size == 0 or array.ctypes.data % ALIGNMENT == 0
    array[...] = 1  # writable


def test_two_sets_alternate_and_are_reused_while_the_shapes_match():
    staging = StagingBuffers()
    chunks = []
    for _ in range(4):
        allocate = staging.allocator()
        chunks.append((allocate((4, 3), np.float32), allocate((4,), np.int32)))
    assert chunks[0][0] is chunks[2][0] and chunks[0][1] is chunks[2][1]  # every second chunk
    assert chunks[1][0] is chunks[3][0]
    assert not np.shares_memory(chunks[0][0], chunks[1][0])  # the two sets are apart
    assert not np.shares_memory(chunks[0][0], chunks[0][1])
    allocate = staging.allocator()  # a shorter last chunk: new arrays of its shapes
    last = allocate((2, 3), np.float32), allocate((4,), np.float64)
    assert last[0].shape == (2, 3) and last[1].dtype == np.float64
    assert last[0] is not chunks[0][0] and last[1] is not chunks[0][1]
    with pytest.raises(ValueError, match="num_sets"):
        StagingBuffers(1)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the CPU backend's zero copy")
def test_the_cpu_backend_reads_an_aligned_array_in_place():
    """Why the arrays are aligned: ``jax.device_put`` of one is no copy on a CPU (a change to
    the host array shows in the device array), so a chunk is not copied a second time."""
    host = aligned_empty((1000, 8), np.float32)
    host[...] = 0.0
    device = jax.device_put(host)
    host[3, 4] = 7.0
    assert float(device[3, 4]) == 7.0
