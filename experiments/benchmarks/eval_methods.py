"""The cost of the evaluation-time methods against static evaluation, on a saved run, in one process.

Each method scores the same split with the same streams and window (the run's eval.batch_size and
eval.bptt): static evaluation (`Evaluator`), the cache (`rnnlm.cache`), dynamic evaluation with the
run's chosen rule and rates (`rnnlm.dynamic_eval`; the rms rule's gradient statistics are computed
before the timing) and both. Each is run once to compile, then timed as the median of `--reps`
interleaved repetitions. Goals (issue 21): dynamic evaluation at most 3x static, the cache at most 1.5x.

    python experiments/benchmarks/eval_methods.py --workdir runs/awd_lstm_ptb_cpu60 [--split test] [--reps 3]
"""

import argparse
import dataclasses
import statistics
import time

from rnnlm import cache, dynamic_eval, sharding
from rnnlm.runs import load_run
from rnnlm.tasks.lm import Evaluator
from rnnlm.workdir import prepare_data


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--checkpoint", default="best")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    run = load_run(args.workdir, args.checkpoint)
    splits = prepare_data(run.config, run.workdir)[1]
    ids = splits[args.split]
    mesh = sharding.make_mesh()
    batch, bptt = run.config.eval.batch_size, run.config.eval.bptt or run.config.train.bptt
    chosen_cache = cache.Settings.from_config(run.config.eval, run.workdir)
    chosen = dynamic_eval.Settings.from_config(run.config.eval, run.workdir)
    # The rms rule's statistics as `rnnlm eval --dynamic` takes them (at the chosen window length); only the
    # scoring then runs at the static evaluation's streams and window.
    ms = dynamic_eval.gradient_statistics(run.model, run.params, splits["train"], chosen, mesh) if chosen.rule == "rms" else None
    dynamic = dataclasses.replace(chosen, batch_size=batch, bptt=bptt)
    evaluator = Evaluator(run.model, mesh, batch, bptt)
    methods = {
        "static": lambda: evaluator(run.params, ids, False),
        "cache": lambda: cache.cache_evaluate(run.model, run.params, ids, chosen_cache, mesh, batch, bptt, False),
        "dynamic": lambda: dynamic_eval.dynamic_evaluate(run.model, run.params, ids, dynamic, mesh, False, ms),
        "dynamic + cache": lambda: dynamic_eval.dynamic_evaluate(run.model, run.params, ids, dynamic, mesh, False, ms,
                                                                 cache=chosen_cache),
    }
    results = {name: fn() for name, fn in methods.items()}  # compile
    times = {name: [] for name in methods}
    for _ in range(args.reps):
        for name, fn in methods.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times["static"])
    print(f"{args.workdir} {args.split}: {len(ids) - 1:,} tokens, {batch} streams, windows of {bptt}; "
          f"cache {dataclasses.asdict(chosen_cache)}; dynamic {dynamic.rule} lr {dynamic.lr:g}, decay {dynamic.decay:g}")
    print("| method | seconds | x static | perplexity |\n|---|---:|---:|---:|")
    for name in methods:
        median = statistics.median(times[name])
        print(f"| {name} | {median:.1f} | {median / base:.2f} | {results[name]['perplexity']:.2f} |")


if __name__ == "__main__":
    main()
