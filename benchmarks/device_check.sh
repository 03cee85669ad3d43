#!/usr/bin/env bash
# The GPU check for a lent accelerator machine (see docs/benchmarks.md): the test-suite on the
# GPU, the demo's wall time on the GPU and on 2 of the machine's CPU cores, and vectorised-chain
# throughput (benchmarks/chain_throughput.py) on both, in one run of under 10 minutes (each step
# has its own time limit, overridable: TEST_SECONDS, DEMO_SECONDS, THROUGHPUT_SECONDS). Needs the wheels in .whl/
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
MTBKD_TEST_DEVICE=gpu timeout "${TEST_SECONDS:-150}" python3 -m pytest -q -p no:cacheprovider tests \
  --ignore=tests/test_notebooks.py --ignore=tests/test_deeploc.py -m "not slow" 2>&1 | tee "$OUT/tests_gpu.log" | tail -8
echo "== demo on the GPU"
( time timeout "${DEMO_SECONDS:-120}" python3 -m mtbkd_jax.cli demo --out "$OUT/demo" --no-progress ) 2>&1 \
  | tee "$OUT/demo_gpu.log" | tail -14
echo "== demo on 2 CPU cores"
( time JAX_PLATFORMS=cpu taskset -c 0,1 timeout "${DEMO_SECONDS:-120}" python3 -m mtbkd_jax.cli demo \
  --out "$OUT/demo_cpu" --no-progress ) 2>&1 | tee "$OUT/demo_cpu.log" | tail -14
echo "== vectorised chains on the GPU (draws/s)"
JAX_PLATFORMS=cuda timeout "${THROUGHPUT_SECONDS:-100}" python3 benchmarks/chain_throughput.py \
  --budget 30 --json "$OUT/throughput_gpu.json" 2>&1 | tee "$OUT/throughput_gpu.log" | tail -14
echo "== vectorised chains on 2 CPU cores (draws/s)"
JAX_PLATFORMS=cpu taskset -c 0,1 timeout "${THROUGHPUT_SECONDS:-100}" python3 \
  benchmarks/chain_throughput.py --budget 30 --json "$OUT/throughput_cpu.json" 2>&1 \
  | tee "$OUT/throughput_cpu.log" | tail -14
