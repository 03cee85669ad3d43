#!/usr/bin/env bash
# The GPU check for a lent accelerator machine (see docs/benchmarks.md): the test-suite on the
# GPU, the demo's wall time and the quick benchmark, in one short run. Needs the wheels in .whl/
# (the device image lacks ArviZ 1.x, BlackJAX, h5netcdf; pins of this project do not apply there).
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/device-out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src
{ nvidia-smi -L; python3 -c "import jax, numpyro, flax, arviz, blackjax; print('jax', jax.__version__, jax.devices(), 'numpyro', numpyro.__version__, 'flax', flax.__version__, 'arviz', arviz.__version__, 'blackjax', blackjax.__version__)"; } 2>&1 | tee "$OUT/gpu.txt"
echo "== tests on the GPU"
MTBKD_TEST_DEVICE=gpu timeout "${TEST_SECONDS:-260}" python3 -m pytest -q -p no:cacheprovider tests \
  --ignore=tests/test_notebooks.py --ignore=tests/test_deeploc.py -m "not slow" 2>&1 | tee "$OUT/tests_gpu.log" | tail -8
echo "== demo on the GPU"
( time timeout "${DEMO_SECONDS:-150}" python3 -m mtbkd_jax.cli demo --out "$OUT/demo" --no-progress ) 2>&1 \
  | tee "$OUT/demo_gpu.log" | tail -14
echo "== quick benchmark on the GPU"
JAX_PLATFORMS=cuda timeout "${BENCH_SECONDS:-120}" python3 benchmarks/bench.py --quick --out "$OUT/bench" 2>&1 \
  | tee "$OUT/bench_gpu.log" | tail -30
