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
# Issue 22's rows: the new cells at the LSTM's parameter count against T (the linear cells take the
# associative scan off a CPU); NEW_CELLS=0 skips them.
if [ "${NEW_CELLS:-1}" = 1 ]; then
  for config in char_t128 char_t512 char_t2048; do
    echo "== $config new cells $(date -u +%T)" | tee -a "$log"
    timeout "${BENCH_TIMEOUT:-200}" python3 -m rnnlm.bench --configs "$config" --cells lstm,gru,mingru,minlstm,mogrifier \
      --impls rnnlm,torch --equal-params --reps "${REPS:-5}" --steps 20 --no-memory \
      --out "$OUT/cells_$config.json" > "$OUT/cells_$config.md" 2>> "$log"
    echo "exit $?" | tee -a "$log"
    cat "$OUT/cells_$config.md"
  done
fi
date -u | tee -a "$log"
