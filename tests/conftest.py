import os

# Tests run on the CPU with float32 (the package's default precision); a GPU, if present, is used
# only when MTBKD_TEST_DEVICE=gpu is set.
if os.environ.get("MTBKD_TEST_DEVICE", "cpu") == "cpu":
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
