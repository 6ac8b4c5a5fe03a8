"""Command line of the benchmark: `python -m rnnlm.bench ...` (also `rnnlm bench ...`).

    python -m rnnlm.bench                        # every config, cell and implementation
    python -m rnnlm.bench --configs ptb_small --cells lstm --impls rnnlm,torch --reps 7
    python -m rnnlm.bench --memory-figure --configs ptb_medium --out bench_memory.json
    python -m rnnlm.bench --tiny --reps 1         # seconds: checks that everything runs

For each config and cell, every implementation is built and warmed up (its
compile time measured), then the repetitions are interleaved: in each
repetition every metric is measured for every implementation in turn, the
starting implementation rotating, so a slow drift of the machine (another job,
heat) spreads over all of them instead of biasing whichever ran last.
Progress goes to stderr; stdout holds only the markdown report.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import os
import platform
import subprocess
import sys

from rnnlm.bench import impls, memory, report, shapes, timing
from rnnlm.errors import UserError

DEFAULT_SEQ_LENS = (35, 140, 560)
TINY_SEQ_LENS = (8, 32, 128)


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _ints(text: str) -> list[int]:
    return [int(part) for part in _names(text)]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rnnlm bench", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", type=_names, default=list(shapes.DEFAULT_CONFIGS),
                        help=", ".join(shapes.CONFIGS) + f" (default {','.join(shapes.DEFAULT_CONFIGS)})")
    parser.add_argument("--cells", type=_names, default=["lstm", "gru"],
                        help=", ".join(shapes.GATES) + " (default lstm,gru; PyTorch and Flax have lstm and gru)")
    parser.add_argument("--equal-params", action="store_true",
                        help="give every cell the hidden size of the LSTM's parameter count at each config")
    parser.add_argument("--impls", type=_names, default=None,
                        help="rnnlm,torch,flax (torch only where importable); memory figure default rnnlm,torch")
    parser.add_argument("--reps", type=int, default=5, help="interleaved repetitions; medians over these")
    parser.add_argument("--steps", type=int, default=20, help="train and eval steps per repetition")
    parser.add_argument("--sample-length", type=int, default=100, help="tokens sampled per repetition and batch")
    parser.add_argument("--sample-batches", type=_ints, default=[1, 64], help="sampling batch sizes")
    parser.add_argument("--dropout", type=float, default=0.0,
                        help="dropout on embeddings, between layers and before the decoder, in every implementation")
    parser.add_argument("--torch-threads", type=int, default=0,
                        help="torch.set_num_threads; 0 = PyTorch's default (one per core). 1 avoids OpenMP "
                             "spin-wait stalls on a machine busy with other work")
    parser.add_argument("--peak-size", type=int, default=None, help="n of the n x n matmul peak probe (CPU 2048, accelerators 8192; tiny 256)")
    parser.add_argument("--no-memory", action="store_true", help="skip the per-config peak-RSS subprocesses")
    parser.add_argument("--memory-figure", action="store_true",
                        help="measure only peak RSS of one train step vs. --seq-lens, a fresh process per point")
    parser.add_argument("--seq-lens", type=_ints, default=None, help="memory figure: 35,140,560 (tiny: 8,32,128)")
    parser.add_argument("--tiny", action="store_true", help="shrink every shape so that the run takes seconds")
    parser.add_argument("--out", default="bench.json", help="JSON results file")
    parser.add_argument("--report", metavar="JSON", help="print the markdown of an earlier run's JSON and exit "
                        "(how docs/performance.md is made from docs/performance.json)")
    parser.add_argument("--figure", metavar="PNG", help="with --report: also plot time per token against T for "
                        "the configs measured at several window lengths (char_t128, char_t512, ...)")
    return parser


def _select_impls(requested: list[str] | None, default: list[str]) -> list[str]:
    names = requested or default
    unknown = [n for n in names if n not in impls.IMPLEMENTATIONS]
    if unknown:
        raise UserError(f"unknown implementation(s) {', '.join(unknown)}; "
                        f"choose from {', '.join(impls.IMPLEMENTATIONS)}")
    missing = [n for n in names if not impls.available(n)]
    if missing:
        print(f"bench: skipping {', '.join(missing)}: not importable here", file=sys.stderr)
    names = [n for n in names if impls.available(n)]
    if not names:
        raise UserError("no implementation left to run")
    return names


def configure_torch(threads: int) -> None:
    """PyTorch's thread count (0: its default) and, on a GPU, TF32 for its cuBLAS matmuls: JAX's float32
    matmuls default to TF32 there (as cuDNN's RNNs do in PyTorch), so both then run the same arithmetic."""
    if not impls.available("torch"):
        return
    import torch
    if threads:
        torch.set_num_threads(threads)
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True


def environment() -> dict:
    import flax
    import jax
    import optax

    env = {"python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count(),
           "jax": jax.__version__, "flax": flax.__version__, "optax": optax.__version__,
           "device": str(jax.devices()[0].device_kind), "jax_backend": jax.default_backend(),
           "jax_default_matmul_precision": str(jax.config.jax_default_matmul_precision),
           "time": datetime.datetime.now().isoformat(timespec="seconds"),
           # malloc on huge pages or not (rnnlm/fast/huge_pages.py) moves both sides' rates
           "glibc_tunables": os.environ.get("GLIBC_TUNABLES", "")}
    if impls.available("torch"):
        import torch
        env.update(torch=torch.__version__, torch_threads=torch.get_num_threads())
        if torch.cuda.is_available():
            env.update(torch_device=torch.cuda.get_device_name(), torch_cuda=torch.version.cuda,
                       torch_cudnn=torch.backends.cudnn.version(),
                       torch_matmul_tf32=torch.backends.cuda.matmul.allow_tf32,
                       torch_cudnn_tf32=torch.backends.cudnn.allow_tf32)
    return env


def bench_one(shape: shapes.Shape, cell: str, names: list[str], args) -> list[dict]:
    """Every implementation on one config and cell: warm-up, then interleaved timed repetitions."""
    benches, rows = {}, {}
    skipped = [n for n in names if not impls.supports(n, cell)]
    if skipped:
        print(f"bench: {shape.name} {cell}: {', '.join(skipped)} has no such cell, skipped", file=sys.stderr)
    names = [n for n in names if impls.supports(n, cell)]
    for name in names:
        print(f"bench: {shape.name} {cell} {name}: building, compiling", file=sys.stderr)
        bench = benches[name] = impls.load(name)(shape, cell, args.dropout)
        compile_times = timing.first_call_overhead(lambda: bench.train(1))
        bench.evaluate(args.steps)  # compiles the eval step and the sampler before any timing
        for batch in args.sample_batches:
            bench.sample(batch, args.sample_length)
        rows[name] = {"config": shape.name, "cell": cell, "impl": name, "shape": dataclasses.asdict(shape),
                      "params": shapes.param_count(shape, cell),
                      "compile_s": compile_times["compile_s"], "compile": compile_times}
        if hasattr(bench, "executed_flops_per_token"):  # rnnlm: fewer than the model's where it folds
            rows[name]["executed_flops_per_token"] = bench.executed_flops_per_token()

    metrics = {"train_tokens_per_s": (lambda b: b.train(args.steps), args.steps * shape.tokens_per_train_step()),
               "eval_tokens_per_s": (lambda b: b.evaluate(args.steps), args.steps * shape.tokens_per_eval_step())}
    for batch in args.sample_batches:
        metrics[f"sample_b{batch}_tokens_per_s"] = (
            lambda b, batch=batch: b.sample(batch, args.sample_length), batch * args.sample_length)
    samples = {name: {key: [] for key in metrics} for name in names}
    for rep in range(args.reps):
        order = names[rep % len(names):] + names[:rep % len(names)]
        print(f"bench: {shape.name} {cell}: repetition {rep + 1}/{args.reps}", file=sys.stderr)
        for key, (run, tokens) in metrics.items():
            for name in order:
                gc.collect()  # not inside the timed call
                samples[name][key].append(tokens / timing.timed(run, benches[name]))
    benches.clear()
    gc.collect()

    forward = shapes.forward_flops_per_token(shape, cell)
    for name, row in rows.items():
        row.update({key: timing.summary(values) for key, values in samples[name].items()})
        row["flops_per_token"] = {"forward": forward, "train": shapes.train_flops_per_token(shape, cell)}
        row["train_gflops"] = row["train_tokens_per_s"]["median"] * row["flops_per_token"]["train"] / 1e9
        row["eval_gflops"] = row["eval_tokens_per_s"]["median"] * forward / 1e9
        row["peak_rss_delta_mb"] = None
        if not args.no_memory:
            print(f"bench: {shape.name} {cell} {name}: peak RSS in a fresh process", file=sys.stderr)
            row["memory"] = _measure_memory(name, shape, cell, args)
            row["peak_rss_delta_mb"] = row["memory"]["peak_rss_delta_mb"]
    return list(rows.values())


def _measure_memory(name: str, shape: shapes.Shape, cell: str, args) -> dict:
    """A failed worker (out of memory at a long T, say) is recorded, not fatal to an hour-long run."""
    try:
        return memory.measure(name, shape, cell, args.dropout, args.torch_threads)
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        print(f"bench: {e}", file=sys.stderr)
        return {"peak_rss_delta_mb": None, "error": str(e)[-500:]}


def memory_figure(args, names: list[str]) -> list[dict]:
    points = []
    for config in args.configs:
        base = shapes.get_shape(config, args.tiny)
        for cell in args.cells:
            for name in names:
                for seq_len in args.seq_lens:
                    print(f"bench: memory {config} {cell} {name} T={seq_len}", file=sys.stderr)
                    shape = dataclasses.replace(base, seq_len=seq_len)
                    points.append({"config": config, "cell": cell, "impl": name, "seq_len": seq_len,
                                   **_measure_memory(name, shape, cell, args)})
    return points


def run(args) -> dict:
    """Runs what `args` asks for and returns the JSON document (also written to args.out)."""
    for name in args.configs:
        shapes.get_shape(name)  # an unknown config fails before anything runs
    bad_cells = [c for c in args.cells if c not in shapes.GATES]
    if bad_cells:
        raise UserError(f"unknown cell(s) {', '.join(bad_cells)}; choose from {', '.join(shapes.GATES)}")
    if args.peak_size is None:  # an accelerator needs a bigger product than a CPU to reach its rate
        import jax
        args.peak_size = 256 if args.tiny else 2048 if jax.default_backend() == "cpu" else 8192
    if args.seq_lens is None:
        args.seq_lens = list(TINY_SEQ_LENS if args.tiny else DEFAULT_SEQ_LENS)
    configure_torch(args.torch_threads)
    doc = {"environment": environment(), "settings": {k: v for k, v in vars(args).items() if k != "func"},
           "results": [], "memory_figure": []}
    if args.memory_figure:
        doc["memory_figure"] = memory_figure(args, _select_impls(args.impls, ["rnnlm", "torch"]))
    else:
        names = _select_impls(args.impls, list(impls.IMPLEMENTATIONS))
        doc["matmul_peak_gflops"] = {"jax": timing.jax_matmul_gflops(args.peak_size)}
        if "torch" in names:
            doc["matmul_peak_gflops"]["torch"] = timing.torch_matmul_gflops(args.peak_size)
        for config in args.configs:
            for cell in args.cells:
                shape = shapes.get_shape(config, args.tiny)
                if args.equal_params:
                    shape = shapes.equal_params(shape, cell)
                doc["results"] += bench_one(shape, cell, names, args)
        for row in doc["results"]:
            probe = doc["matmul_peak_gflops"]["torch" if row["impl"] == "torch" else "jax"]
            row["train_fraction_of_peak"] = row["train_gflops"] / probe
        keys = [k for k in doc["results"][0] if k.endswith("_tokens_per_s")] + ["peak_rss_delta_mb"]
        report.add_ratios(doc["results"], keys)
        doc["targets"] = [] if args.tiny else report.target_rows(doc)  # the targets are for the real shapes
    report.write_json(doc, args.out)
    return doc


def main(argv=None) -> int:
    """Bad input raises UserError: `rnnlm bench` reports it like every other command."""
    args = build_parser().parse_args(argv)
    if args.report:
        import json
        import pathlib
        path = pathlib.Path(args.report)
        if not path.is_file():
            raise UserError(f"--report: file not found: {path}")
        doc = json.loads(path.read_text())
        print(report.markdown(doc), end="")
        if args.figure:
            from rnnlm.plots import step_time_plot
            rows = [r for r in doc["results"] if r["config"].startswith("char_t")]
            if not rows:
                raise UserError(f"--figure: {path} has no char_t<T> rows to plot")
            print(f"bench: wrote {step_time_plot(rows, args.figure, 'char shape, equal tokens per step')}",
                  file=sys.stderr)
        return 0
    doc = run(args)
    print(report.markdown(doc), end="")
    print(f"bench: wrote {args.out}", file=sys.stderr)
    return 0
