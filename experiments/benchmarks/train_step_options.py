"""The cost of AWD-LSTM's regularisation and of a mixture of softmaxes: the train step with and without
them, in one process.

Each variant is the loop's own `train_step` (`compile_train_step`, `window_loss`, the model of the
config) on the same PTB-shaped windows (V = 10,000, B x T of the config), timed as medians of
interleaved repetitions of `--steps` steps each:

    plain         no dropout of any kind
    zaremba       dropout 0.4 everywhere, a fresh mask per position (today's model.dropout)
    awd_dropout   weight drop 0.5 and the three locked dropouts (0.4, 0.25, 0.4): the issue's pair
    awd_all       and embedding-row dropout 0.1, AR 2 and TAR 1
    awd_windows   awd_all on drawn window lengths (masked, padded to multiples of 8)
    mos5, mos15   plain with a mixture of 5 or 15 softmaxes (issue 21)

Goals: awd_dropout at most 10% slower than plain (issue 20); the mixtures' step time and memory
against plain are reported (issue 21). Memory is XLA's temporary buffers of the compiled step
(`memory_analysis().temp_size_in_bytes`: activations and scratch, not the parameters). Prints a
markdown table and writes JSON (`--out`).

    python experiments/benchmarks/train_step_options.py                 # the cpu60 model: 2 layers, 800 and 400
    python experiments/benchmarks/train_step_options.py --sizes 1150,1150,400 --batch 20   # awd's PTB model
    python experiments/benchmarks/train_step_options.py --tiny          # seconds
"""

import argparse
import functools
import json
import platform
import statistics
import time

import jax
import numpy as np

from rnnlm import optim, sharding
from rnnlm.config import base_config
from rnnlm.data.batching import make_streams, variable_lengths
from rnnlm.models import language_model_from_config
from rnnlm.state import create_train_state
from rnnlm.tasks.lm import padded_length, window_loss
from rnnlm.train import compile_train_step

VARIANTS = {
    "plain": {},
    "zaremba": {"model": {"dropout": 0.4, "embed_dropout": 0.4}},
    "awd_dropout": {"model": {"dropout": 0.4, "embed_dropout": 0.4, "hidden_dropout": 0.25, "locked_dropout": True,
                              "weight_drop": 0.5}},
    "awd_all": {"model": {"dropout": 0.4, "embed_dropout": 0.4, "hidden_dropout": 0.25, "locked_dropout": True,
                          "weight_drop": 0.5, "embed_row_dropout": 0.1}, "train": {"ar": 2.0, "tar": 1.0}},
    "mos5": {"model": {"mos_components": 5}},
    "mos15": {"model": {"mos_components": 15}},
}


def build(sizes, batch, bptt, vocab, embed, overrides):
    config = base_config()
    config.model.update(embed_size=embed, hidden_size=sizes[0], num_layers=len(sizes), hidden_sizes=tuple(sizes),
                        tie_weights=True, **overrides.get("model", {}))
    config.train.update(batch_size=batch, bptt=bptt, optimizer="sgd", learning_rate=30.0, grad_clip=0.25,
                        weight_decay=1.2e-6, **overrides.get("train", {}))
    mesh = sharding.make_mesh(1)
    model = language_model_from_config(config, vocab)
    tx = optim.make_optimizer(config.train, 1000)
    state = create_train_state(model, tx, 0, mesh)
    carry = sharding.zeros_carry(model.initial_carry, batch, mesh)
    loss = functools.partial(window_loss, model, "token_mean", ar=config.train.ar, tar=config.train.tar)
    return state, carry, compile_train_step(loss, tx, mesh, carry), mesh


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="800,400", help="layer widths, the last the embedding's")
    parser.add_argument("--batch", type=int, default=40)
    parser.add_argument("--bptt", type=int, default=70)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--out", default="train_step_options.json")
    args = parser.parse_args()
    sizes, vocab = [int(n) for n in args.sizes.split(",")], 10_000
    if args.tiny:
        sizes, vocab, args.batch, args.bptt, args.reps, args.steps = [32, 16], 200, 4, 16, 2, 2
    ids = np.random.default_rng(0).integers(0, vocab, args.batch * args.bptt * 64).astype(np.int32)
    streams = make_streams(ids, args.batch, args.bptt)
    lengths = variable_lengths(np.random.default_rng(1), args.bptt, streams.columns)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])

    def windows(drawn):
        out = []
        for i in range(args.steps):
            if not drawn:
                out.append(streams.window(i))
                continue
            n = int(lengths[i])
            window = streams.span(int(starts[i]), n, padded_length(n, 8))
            window["lr_scale"] = np.full(args.batch, n / args.bptt, np.float32)
            out.append(window)
        return out

    runs = {}
    for name, overrides in {**VARIANTS, "awd_windows": VARIANTS["awd_all"]}.items():
        state, carry, step, mesh = build(sizes, args.batch, args.bptt, vocab, sizes[-1], overrides)
        batches = [sharding.shard_batch(w, mesh) for w in windows(name == "awd_windows")]
        memory = step.lower(state, carry, batches[0]).compile().memory_analysis()
        for batch in batches:  # compile every shape outside the timing
            state, carry, _ = step(state, carry, batch)
        jax.block_until_ready(state.params)
        runs[name] = {"state": state, "carry": carry, "step": step, "batches": batches,
                      "tokens": sum(float(np.asarray(b["weights"]).sum()) for b in batches), "times": [],
                      "temp_mb": (memory.temp_size_in_bytes / 2**20) if memory is not None else float("nan")}
    for _ in range(args.reps):
        for run in runs.values():
            start = time.perf_counter()
            for batch in run["batches"]:
                run["state"], run["carry"], metrics = run["step"](run["state"], run["carry"], batch)
            jax.block_until_ready(metrics)
            run["times"].append(time.perf_counter() - start)
    base = statistics.median(runs["plain"]["times"])
    print(f"Train step options: layers {sizes}, V {vocab}, B {args.batch}, T {args.bptt}, "
          f"{args.reps} interleaved repetitions of {args.steps} steps; {platform.processor() or platform.machine()}, "
          f"{jax.default_backend()}")
    print("| variant | step (ms) | tokens/s | vs plain | XLA temp (MB) |\n|---|---:|---:|---:|---:|")
    table = {}
    for name, run in runs.items():
        median = statistics.median(run["times"])
        table[name] = {"step_ms": 1e3 * median / args.steps, "tokens_per_sec": run["tokens"] / median,
                       "relative": median / base, "temp_mb": run["temp_mb"]}
        print(f"| {name} | {table[name]['step_ms']:.1f} | {table[name]['tokens_per_sec']:,.0f} | "
              f"{table[name]['relative']:.3f} | {run['temp_mb']:,.0f} |")
    with open(args.out, "w") as f:
        json.dump({"sizes": sizes, "vocab": vocab, "batch": args.batch, "bptt": args.bptt, "reps": args.reps,
                   "steps": args.steps, "backend": jax.default_backend(), "variants": table}, f, indent=2)


if __name__ == "__main__":
    main()
