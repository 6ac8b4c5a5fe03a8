"""One minGRU (or minLSTM) layer's recurrence, `lax.associative_scan` against the loop, in one process.

The projected inputs gx [T, B, G*H] are given, so only the recurrence is timed
(`rnnlm.recurrence.scan_projected` with parallel=True and False): a training
pass (forward and backward of a sum of squares) and a forward-only pass, at
the benchmark's char_t shapes (B * T = 8,192), medians of 7 interleaved
repetitions. Prints one line per T and pass.

    python experiments/benchmarks/linear_scan.py                 # minGRU, H = 1,234 (the LSTM's parameters)
    python experiments/benchmarks/linear_scan.py minlstm 998
"""

import statistics
import sys
import time

import jax
import jax.numpy as jnp

from rnnlm.cells import get_cell
from rnnlm.recurrence import scan_projected


def main(name="mingru", hidden=1234):
    cell = get_cell(name)
    for steps, batch in ((128, 64), (512, 16), (2048, 4)):
        gx = jax.random.normal(jax.random.PRNGKey(0), (steps, batch, cell.gates * hidden))
        carry = (jnp.zeros((batch, hidden)),)
        passes = {}
        for parallel in (True, False):
            outputs = lambda g, parallel=parallel: scan_projected(cell, {}, carry, g, parallel=parallel)[1]
            passes[("train", parallel)] = jax.jit(jax.grad(lambda g, f=outputs: jnp.sum(f(g) ** 2)))
            passes[("eval", parallel)] = jax.jit(outputs)
        for fn in passes.values():
            jax.block_until_ready(fn(gx))  # compile outside the timing
        times = {key: [] for key in passes}
        for _ in range(7):
            for key, fn in passes.items():
                start = time.perf_counter()
                jax.block_until_ready(fn(gx))
                times[key].append(time.perf_counter() - start)
        for mode in ("train", "eval"):
            par, seq = (statistics.median(times[(mode, p)]) for p in (True, False))
            print(f"{name} H={hidden} T={steps} B={batch} {mode}: associative scan {par * 1e3:.1f} ms, "
                  f"loop {seq * 1e3:.1f} ms, loop / scan {seq / par:.2f}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "mingru", int(sys.argv[2]) if len(sys.argv) > 2 else 1234)
