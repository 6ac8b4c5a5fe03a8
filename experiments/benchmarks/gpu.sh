#!/usr/bin/env bash
# Issue 5's GPU measurement in one call on a lent GPU machine (the device tool's `run`):
#
#   bash experiments/benchmarks/gpu.sh        # carry .whl holding the ml_collections and tensorboardX wheels
#
# The machine's image has JAX, Flax, Optax, Orbax and PyTorch with CUDA but no ml_collections, and it
# cannot reach PyPI, so those wheels travel with the call. Results go to $OUT (default ./gpu_out):
# versions, the cuDNN path's tests and numerical check on the GPU, and one benchmark table + JSON per
# config (each in its own process, so a failure in one leaves the others).
set -u
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
# JAX and PyTorch share the card in one process: JAX takes 45% up front instead of 75%.
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION=0.45
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
log=$OUT/log.txt
{
  date -u; nvidia-smi -L
  python3 -c "import jax, flax, optax, orbax.checkpoint as o, torch; print('jax', jax.__version__, jax.devices(), \
'| flax', flax.__version__, '| optax', optax.__version__, '| torch', torch.__version__, 'cuda', torch.version.cuda, \
'cudnn', torch.backends.cudnn.version())"
  timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_cudnn.py 2>&1 | tail -15
  timeout 120 python3 -m experiments.benchmarks.cudnn_check --config ptb_medium 2>&1 | tail -15
} 2>&1 | tee "$log"
for config in ${CONFIGS:-ptb_medium ptb_small char}; do
  echo "== $config $(date -u +%T)" | tee -a "$log"
  timeout "${BENCH_TIMEOUT:-200}" python3 -m experiments.benchmarks.run --configs "$config" --cells lstm,gru \
    --impls rnnlm,rnnlm_cudnn,torch,flax --reps "${REPS:-5}" --steps 20 --no-memory --peak-size 8192 \
    --out "$OUT/bench_$config.json" > "$OUT/bench_$config.md" 2>> "$log"
  echo "exit $?" | tee -a "$log"
  cat "$OUT/bench_$config.md"
done
date -u | tee -a "$log"
