"""Command line: `rnnlm train | eval | generate | corpora` (also `python -m rnnlm ...`).

    rnnlm train [--config experiments/<name>.py[:arg]] [--config.<field>=<value> ...] [--workdir DIR]
    rnnlm eval --workdir DIR [--split valid|test|train] [--checkpoint latest|best|STEP]
    rnnlm generate --workdir DIR [--prompt TEXT] [--length N] [--temperature T] [--top-k K] [--top-p P]
    rnnlm corpora

Bad input ends in one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import pathlib
import sys

from rnnlm.errors import UserError

EXPERIMENTS_DIR = pathlib.Path(__file__).resolve().parent.parent / "experiments"


def _resolve_config_path(value: str) -> str:
    """Accept `experiments/x.py`, `x.py` or `x` from any directory, with an optional `:arg`."""
    path, sep, arg = value.rpartition(":") if ".py:" in value else (value, "", "")
    candidates = [pathlib.Path(path), EXPERIMENTS_DIR / path, EXPERIMENTS_DIR / pathlib.Path(path).name,
                  EXPERIMENTS_DIR / f"{path}.py"]
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        raise UserError(f"experiment config not found: {path}")
    return f"{found}{sep}{arg}"


def parse_config(args: list[str]):
    """`--config FILE[:ARG]` and `--config.a.b=value` overrides -> a locked ConfigDict."""
    from absl import flags
    from ml_collections import config_flags

    args = list(args)
    for i, arg in enumerate(args):
        if arg == "--config" and i + 1 < len(args):
            args[i + 1] = _resolve_config_path(args[i + 1])
        elif arg.startswith("--config="):
            args[i] = "--config=" + _resolve_config_path(arg.split("=", 1)[1])
    values = flags.FlagValues()
    # sys_argv: config_flags reads the overrides from it, not from the list given to the parser.
    config_flags.DEFINE_config_file("config", default=str(EXPERIMENTS_DIR / "default.py"),
                                    flag_values=values, lock_config=True, sys_argv=["rnnlm"] + args)
    try:
        extra = values(["rnnlm"] + args)
    except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
        raise UserError(_explain_override_error(args, e)) from None
    if len(extra) > 1:
        raise UserError(f"unexpected argument {extra[1]!r}")
    return values.config


def _explain_override_error(args: list[str], error: Exception) -> str:
    """Name the override that failed: the first `--config.<field>` the loaded config lacks."""
    from absl import flags
    from ml_collections import config_flags

    plain = [a for i, a in enumerate(args) if a == "--config" or a.startswith("--config=")
             or (i > 0 and args[i - 1] == "--config")]
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", default=str(EXPERIMENTS_DIR / "default.py"), flag_values=values,
                                    sys_argv=["rnnlm"] + plain)
    try:
        values(["rnnlm"] + plain)
        config = values.config
    except Exception:  # the config file itself is broken: report the original error
        config = None
    for arg in args:
        if arg.startswith("--config."):
            field = arg[len("--config."):].split("=", 1)[0]
            node = config
            for part in field.split("."):
                if node is None or not hasattr(node, "keys") or part not in node:
                    return f"unknown config field {field!r}"
                node = node[part]
    lines = str(error).strip().splitlines()
    return lines[-1] if lines else repr(error)


def _train(args, rest):
    from rnnlm.sharding import initialize_distributed
    from rnnlm.train import train_and_evaluate
    config = parse_config(rest)
    initialize_distributed(args.distributed, args.coordinator, args.num_processes, args.process_id)
    workdir = args.workdir or f"runs/{config.name}"
    train_and_evaluate(config, workdir)
    print(f"next: rnnlm eval --workdir {workdir} --split test ; rnnlm generate --workdir {workdir}")


def _eval(args, rest):
    _no_extra(rest)
    from rnnlm.inference import load_run
    run = load_run(args.workdir, args.checkpoint)
    metrics = run.evaluate(args.split)
    unit = "bits/char" if run.tokenizer.kind == "char" else "bits/token"
    print(f"{args.split}: loss {metrics['loss']:.4f}, perplexity {metrics['perplexity']:.2f}, "
          f"{unit} {metrics['loss'] / 0.6931471805599453:.4f} (step {run.step}, {args.workdir})")


def _generate(args, rest):
    _no_extra(rest)
    from rnnlm.inference import load_run
    run = load_run(args.workdir, args.checkpoint)
    for text in run.generate(args.prompt, args.length, args.temperature, args.top_k, args.top_p,
                             args.seed, args.num_samples):
        print(text)


def _compile_check(args, rest):
    from rnnlm.aot import compile_check, use_fake_cpu_devices
    use_fake_cpu_devices(args.devices)
    config = parse_config(rest)
    report = compile_check(config, args.devices, args.vocab_size)
    print(f"compiled train step of {config.name} for {report['devices']} devices "
          f"({report['per_device_batch']} streams each, {report['parameters']:,} parameters) "
          f"in {report['compile_seconds']:.1f}s; {report['flops_per_step'] / 1e9:.2f} GFLOP/step, "
          f"{(report['temp_bytes_per_device'] or 0) / 2**20:.1f} MiB temporaries per device")


def _corpora(args, rest):
    _no_extra(rest)
    from rnnlm.data import corpora
    for corpus in corpora.CORPORA.values():
        print(f"{corpus.name:16s} {corpus.task:9s} {corpus.description}")
    print(f"{corpora.DEFAULT_CORPUS:16s} {'lm':9s} CPython's bundled documentation text (offline)")


def _no_extra(rest):
    if rest:
        raise UserError(f"unexpected argument {rest[0]!r}")


def _positive(kind):
    def parse(text):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rnnlm", description="Recurrent neural language models in JAX.")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train or resume a run (config flags are passed through)")
    train.add_argument("--workdir", help="run directory (default: runs/<config.name>)")
    train.add_argument("--distributed", default="auto", choices=("auto", "on", "off"),
                       help="start JAX's distributed runtime (auto: when a coordinator is given or on a multi-host TPU)")
    train.add_argument("--coordinator", default="", help="host:port of process 0 (or $RNNLM_COORDINATOR)")
    train.add_argument("--num-processes", type=int, default=0, help="or $RNNLM_NUM_PROCESSES")
    train.add_argument("--process-id", type=int, default=-1, help="or $RNNLM_PROCESS_ID")
    train.set_defaults(func=_train)

    evaluate = commands.add_parser("eval", help="score a saved run on a split")
    evaluate.add_argument("--workdir", required=True)
    evaluate.add_argument("--split", default="test", choices=("train", "valid", "test"))
    evaluate.add_argument("--checkpoint", default="latest", help="latest, best or a step number")
    evaluate.set_defaults(func=_eval)

    gen = commands.add_parser("generate", help="sample text from a saved run")
    gen.add_argument("--workdir", required=True)
    gen.add_argument("--prompt", default="", help="text to read before sampling")
    gen.add_argument("--length", type=_positive(int), default=300, help="tokens to sample")
    gen.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    gen.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens; 0 = all")
    gen.add_argument("--top-p", type=float, default=1.0, help="nucleus mass; 1 = off")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--num-samples", type=_positive(int), default=1)
    gen.add_argument("--checkpoint", default="latest", help="latest, best or a step number")
    gen.set_defaults(func=_generate)

    aot = commands.add_parser("compile-check", help="compile the train step for N fake CPU devices (config flags pass through)")
    aot.add_argument("--devices", type=_positive(int), default=8)
    aot.add_argument("--vocab-size", type=int, default=0, help="skip reading the corpus")
    aot.set_defaults(func=_compile_check)

    listing = commands.add_parser("corpora", help="list the registered corpora")
    listing.set_defaults(func=_corpora)
    return parser


def _quiet_libraries():
    from absl import logging as absl_logging
    absl_logging.set_verbosity(absl_logging.ERROR)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")


def main(argv=None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    _quiet_libraries()
    try:
        args.func(args, rest)
    except UserError as e:
        print(f"rnnlm: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rnnlm: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
