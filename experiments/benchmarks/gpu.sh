#!/usr/bin/env bash
# The benchmark on a GPU machine, in one call (how docs/performance.md's GPU table was made):
#
#   bash experiments/benchmarks/gpu.sh        # from the repository root; .whl/ may hold extra wheels
#
# A machine whose Python has JAX (CUDA), Flax, Optax, Orbax and PyTorch (CUDA) but no ml_collections,
# and no network, gets that wheel from .whl/ (pip download ml_collections tensorboardX -d .whl elsewhere).
# Results go to $OUT (default ./gpu_out): a log and one markdown table + JSON per config, each config in
# its own process so that a failure in one leaves the others. REPS, BENCH_TIMEOUT and CONFIGS override.
set -u
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
# JAX and PyTorch share the card in one process: JAX reserves 45% up front instead of 75%.
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION=0.45
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
log=$OUT/log.txt
{
  date -u; nvidia-smi -L
  python3 -c "import jax, flax, torch; print('jax', jax.__version__, jax.devices(), '| flax', flax.__version__, \
'| torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version())"
} 2>&1 | tee "$log"
for config in ${CONFIGS:-ptb_medium ptb_small char}; do
  echo "== $config $(date -u +%T)" | tee -a "$log"
  timeout "${BENCH_TIMEOUT:-200}" python3 -m rnnlm.bench --configs "$config" --cells lstm,gru \
    --impls rnnlm,torch,flax --reps "${REPS:-5}" --steps 20 --no-memory \
    --out "$OUT/bench_$config.json" > "$OUT/bench_$config.md" 2>> "$log"
  echo "exit $?" | tee -a "$log"
  cat "$OUT/bench_$config.md"
done
date -u | tee -a "$log"
