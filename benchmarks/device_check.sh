#!/usr/bin/env bash
# The GPU check for a lent accelerator machine (see docs/benchmarks.md), in one run of under
# 10 minutes. The GPU's jobs run one after the other on cores 4-15; the CPU's figures, for
# comparison, run at the same time on 2 other cores each (taskset), so they cost no extra time:
#   1. the demo, profiled (benchmarks/demo_profile.py: wall time, each method's seconds, the
#      seconds spent compiling) on the GPU; the same on cores 0-1 and vectorised-chain
#      throughput (benchmarks/chain_throughput.py) on cores 2-3, meanwhile;
#   2. vectorised-chain throughput on the GPU, SGLD then NUTS (one invocation each);
#   3. tests on the GPU, with the time that is left (the GPU-specific paths first).
# Each step has its own time limit (DEMO_SECONDS, CPU_THROUGHPUT_SECONDS and THROUGHPUT_SECONDS
# per sampler, END_SECONDS: when the run stops). Everything is packed into $OUT/device_check.tar.gz after every step, so a time
# limit keeps what was measured. Needs the wheels in .whl/ (the device image lacks ArviZ 1.x
# and BlackJAX, and has older numpyro, flax and xarray). A dry run on the CPU, with another
# Python and its own packages: PY=.venv/bin/python NO_INSTALL=1 GPU_PLATFORM=cpu DEMO_SECONDS=60 \
#   THROUGHPUT_SECONDS=40 END_SECONDS=150 OUT=/tmp/dry bash benchmarks/device_check.sh
set -u
PY=${PY:-python3}
GPU_PLATFORM=${GPU_PLATFORM:-cuda}
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/device-out}
LOGS=/tmp/device-check
START=$SECONDS
rm -rf "$LOGS"; mkdir -p "$OUT" "$LOGS"  # nothing of an earlier run on a warm machine
pack() { tar -czf "$OUT/device_check.tar.gz" --exclude="*.nc" --exclude="*.png" -C "$LOGS" . 2>/dev/null; }
PINNED=0  # pin to cores only where taskset works and the cores exist
if [ "$(nproc)" -ge 16 ] && taskset -c 4-15 true 2>/dev/null; then PINNED=1; fi
pin() { if [ "$PINNED" = 1 ]; then taskset -c "$@"; else shift; "$@"; fi; }
if [ -z "${NO_INSTALL:-}" ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
fi
export PYTHONPATH=/tmp/site:$PWD/src TQDM_DISABLE=1
{ nvidia-smi -L; echo "cores $(nproc), pinned $PINNED"; lscpu | grep -E "Model name|^CPU\(s\)"; $PY -c "import jax, numpyro, flax, arviz, blackjax; print('jax', jax.__version__, jax.devices(), 'numpyro', numpyro.__version__, 'flax', flax.__version__, 'arviz', arviz.__version__, 'blackjax', blackjax.__version__)"; } 2>&1 | tee "$LOGS/machine.txt"

echo "== 1. demo on the GPU; demo and throughput on 2 CPU cores each, meanwhile"
JAX_PLATFORMS=cpu pin 0,1 timeout -k 10 "${DEMO_SECONDS:-280}" $PY benchmarks/demo_profile.py \
  --out "$LOGS/demo_cpu" --json "$LOGS/demo_cpu.json" > "$LOGS/demo_cpu.log" 2>&1 &
CPU_DEMO=$!
( for sampler in sgld nuts; do  # one invocation per sampler: NUTS cannot starve SGLD
    JAX_PLATFORMS=cpu pin 2,3 timeout -k 10 "${CPU_THROUGHPUT_SECONDS:-140}" $PY \
      benchmarks/chain_throughput.py --samplers $sampler --budget 30 \
      --json "$LOGS/throughput_cpu_$sampler.json" > "$LOGS/throughput_cpu_$sampler.log" 2>&1
  done ) &
CPU_THROUGHPUT=$!
JAX_PLATFORMS=$GPU_PLATFORM pin 4-15 timeout -k 10 "${DEMO_SECONDS:-280}" $PY benchmarks/demo_profile.py \
  --out "$LOGS/demo_gpu" --json "$LOGS/demo_gpu.json" > "$LOGS/demo_gpu.log" 2>&1
echo "GPU demo: exit $? after $((SECONDS - START)) s"; tail -c 1500 "$LOGS/demo_gpu.log"; pack

echo "== 2. vectorised chains on the GPU (draws/s)"
for sampler in sgld nuts; do
  JAX_PLATFORMS=$GPU_PLATFORM pin 4-15 timeout -k 10 "${THROUGHPUT_SECONDS:-85}" $PY \
    benchmarks/chain_throughput.py --samplers $sampler --budget 30 \
    --json "$LOGS/throughput_gpu_$sampler.json" > "$LOGS/throughput_gpu_$sampler.log" 2>&1
  echo "GPU throughput ($sampler): exit $? after $((SECONDS - START)) s"
  cat "$LOGS/throughput_gpu_$sampler.log"
done
wait $CPU_DEMO; echo "CPU demo: exit $?"; tail -c 600 "$LOGS/demo_cpu.log"
wait $CPU_THROUGHPUT; echo "CPU throughput:"; cat "$LOGS"/throughput_cpu_*.log; pack

LEFT=$(( ${END_SECONDS:-540} - (SECONDS - START) ))
echo "== 3. tests on the GPU (${LEFT} s left)"
if [ "$LEFT" -gt 20 ]; then
  MTBKD_TEST_DEVICE=gpu JAX_PLATFORMS=$GPU_PLATFORM timeout -k 5 "$LEFT" $PY -m pytest -q -p no:cacheprovider \
    -m "not slow" tests/test_staging.py tests/test_streaming.py tests/test_sgmcmc.py tests/test_posterior.py \
    > "$LOGS/tests_gpu.log" 2>&1
  echo "GPU tests: exit $?"; tail -15 "$LOGS/tests_gpu.log"
fi
pack
echo "done after $((SECONDS - START)) s"
