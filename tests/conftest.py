import os
import sys

import pytest

# Tests that call the CLI in-process would otherwise fill the user's JAX compilation cache
# (~/.cache/mtbkd_jax/jax-compilation-cache); the CLI's own cache tests point it elsewhere.
os.environ.setdefault("MTBKD_COMPILE_CACHE", "0")

# Tests run on the CPU with float32 (the package's default precision); a GPU, if present, is used
# only when MTBKD_TEST_DEVICE=gpu is set. On NVIDIA GPUs XLA runs float32 matrix products in
# TF32 by default (about 1e-3 relative error); the tests compare against float64 references at
# tighter tolerances, so on a GPU they ask for full float32 precision.
if os.environ.get("MTBKD_TEST_DEVICE", "cpu") == "cpu":
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
else:
    import jax

    jax.config.update("jax_default_matmul_precision", "highest")


@pytest.fixture(scope="session")
def die_with_parent():
    """A ``preexec_fn`` for a test's subprocesses (Linux): the child is killed when the test
    process dies, however it dies (a killed CI run left such children running: the
    multiprocess scripts ignore SIGTERM)."""

    if not sys.platform.startswith("linux"):
        return None
    import ctypes
    import signal

    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before any fork

    def arm() -> None:  # runs in the child between fork and exec: nothing to import here
        prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG

    return arm


@pytest.fixture(scope="session")
def free_port():
    """A function that returns a TCP port free on 127.0.0.1 now (for a ``jax.distributed``
    coordinator the test starts)."""
    import socket

    def pick() -> int:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            return int(probe.getsockname()[1])

    return pick


# Every compiled XLA CPU program holds a few memory mappings until its jitted function's cache
# lets it go; one process running the whole suite collected ~65,000 of them, Linux's default
# vm.max_map_count, and XLA's compiler then crashed (a segfault, not an error) in whichever test
# compiled next. JAX frees the programs when its caches are cleared
# (mtbkd_jax._compiled_programs, which the experiments use between fits too).


@pytest.fixture(autouse=True, scope="module")
def release_compiled_programs_after_each_module():
    """Each test module's compiled programs are released when it ends."""
    yield
    from mtbkd_jax._compiled_programs import release_compiled_programs

    release_compiled_programs()


@pytest.fixture(autouse=True)
def release_compiled_programs_when_mappings_pile_up():
    """A module that compiles very many programs releases them once the process holds
    ``MAPPINGS_LIMIT`` memory mappings (about half the default limit)."""
    yield
    from mtbkd_jax._compiled_programs import release_if_crowded

    release_if_crowded()
