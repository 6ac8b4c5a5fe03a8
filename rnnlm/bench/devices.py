"""Train-step throughput on meshes of 1..N fake CPU devices, interleaved in one process.

    python -m rnnlm.bench.devices --devices 1,2 --config ptb_small

On one CPU machine, "devices" made with `jax_num_cpu_devices` share the same
cores, so more of them is not a speed-up: this measures what splitting the
batch costs, and checks that the sharded path runs. Real data parallelism needs
real accelerators (or hosts).
"""

from __future__ import annotations

import argparse
import statistics
import time


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", default="1,2", help="comma-separated mesh sizes")
    parser.add_argument("--config", default="ptb_small", help="a shape from rnnlm.bench.shapes")
    parser.add_argument("--cell", default="lstm")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.devices.split(",")]

    import jax
    jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_num_cpu_devices", max(counts))
    from rnnlm.bench import shapes
    from rnnlm.bench.rnnlm_impl import RnnlmBench

    shape = shapes.get_shape(args.config)
    benches = {n: RnnlmBench(shape, args.cell, num_devices=n) for n in counts}
    for bench in benches.values():
        bench.train(2)  # compile
    times = {n: [] for n in counts}
    for _ in range(args.repeats):
        for n, bench in benches.items():
            start = time.perf_counter()
            bench.train(args.steps)
            times[n].append((time.perf_counter() - start) / args.steps)
    base = statistics.median(times[counts[0]])
    print(f"| devices | train tokens/s ({args.config}, {args.cell}) | ratio to {counts[0]} |\n|---|---|---|")
    for n in counts:
        median = statistics.median(times[n])
        print(f"| {n} | {shape.tokens_per_train_step() / median:,.0f} | {base / median:.2f} |")


if __name__ == "__main__":
    main()
