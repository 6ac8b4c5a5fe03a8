"""Command line: `rnnlm train | eval | generate | corpora` (also `python -m rnnlm ...`).

    rnnlm train [--config experiments/<name>.py[:arg]] [--config.<field>=<value> ...] [--workdir DIR]
    rnnlm eval --workdir DIR [--split valid|test|train] [--checkpoint latest|best|STEP]
    rnnlm generate --workdir DIR [--prompt TEXT] [--length N] [--temperature T] [--top-k K] [--top-p P]
    rnnlm predict --workdir DIR "sentence" ["sentence" ...]     (classifier runs)
    rnnlm corpora
    rnnlm bench [--tiny] [--configs ptb_small,char,ptb_medium] [--cells lstm,gru] [--impls rnnlm,torch,flax] [--out JSON]
    rnnlm sweep --config experiments/ablations/<name>.py[:arg] [--workdir DIR] [--seeds 0,1] [--config.<field>=<value> ...]
    rnnlm plot --workdir DIR [--workdir DIR ...] [--out PNG]
    rnnlm study gradients --workdir DIR [...] | rnnlm study synthetic [--tiny]
    rnnlm visualize --workdir DIR [--text TEXT] [--units 3,17] ; rnnlm units --workdir DIR [--feature NAME]

Bad input ends in one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys

from rnnlm.config import EXPERIMENTS_DIR, resolve_experiment
from rnnlm.errors import UserError
from rnnlm.preemption import Preempted

def parse_config(args: list[str]):
    """`--config FILE[:ARG]` and `--config.a.b=value` overrides -> a locked ConfigDict."""
    from absl import flags
    from ml_collections import config_flags

    args = list(args)
    for i, arg in enumerate(args):
        if arg == "--config" and i + 1 < len(args):
            args[i + 1] = resolve_experiment(args[i + 1])
        elif arg.startswith("--config="):
            args[i] = "--config=" + resolve_experiment(arg.split("=", 1)[1])
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
    from rnnlm.config import MOVED
    for arg in args:
        if arg.startswith("--config."):
            field = arg[len("--config."):].split("=", 1)[0]
            if field in MOVED:
                return f"config field {field!r} is now {MOVED[field]!r} (--config.{MOVED[field]}=...)"
            node = config
            for part in field.split("."):
                if node is None or not hasattr(node, "keys") or part not in node:
                    return f"unknown config field {field!r}"
                node = node[part]
    lines = str(error).strip().splitlines()
    return lines[-1] if lines else repr(error)


def _train(args, rest):
    from rnnlm.preemption import exit_cleanly_on_sigterm
    exit_cleanly_on_sigterm()
    from rnnlm.sharding import initialize_distributed
    from rnnlm.train import train_and_evaluate
    config = parse_config(rest)
    initialize_distributed(args.distributed, args.coordinator, args.num_processes, args.process_id)
    workdir = args.workdir or f"runs/{config.name}"
    train_and_evaluate(config, workdir)
    then = "predict --workdir {} \"a sentence\"" if config.task == "classify" else "generate --workdir {}"
    print(f"next: rnnlm eval --workdir {workdir} --split test ; rnnlm {then.format(workdir)}")


DYNAMIC_FLAGS = ("rule", "lr", "decay", "eps", "bptt", "batch_size")
CACHE_FLAGS = {"window": "cache_window", "theta": "cache_theta", "lam": "cache_lambda"}


def _eval(args, rest):
    _no_extra(rest)
    from rnnlm.runs import load_run
    if len(args.workdir) > 1:
        return _eval_ensemble(args)
    args.workdir = args.workdir[0]
    dynamic = {name: getattr(args, f"dynamic_{name}") for name in DYNAMIC_FLAGS}
    cached = {name: getattr(args, flag) for name, flag in CACHE_FLAGS.items()}
    if any(v is not None for v in dynamic.values()) and not args.dynamic:
        raise UserError("the --dynamic-* options need --dynamic")
    if any(v is not None for v in cached.values()) and not args.cache:
        raise UserError("the --cache-* options need --cache")
    if args.tune and not (args.dynamic or args.cache):
        raise UserError("--tune chooses the settings of --dynamic or --cache; give one of them")
    if args.tune and args.dynamic and args.cache:
        raise UserError("--tune one method at a time (--dynamic or --cache); then combine their saved choices")
    if args.dynamic or args.cache:
        from rnnlm.config import load_config
        from rnnlm.workdir import existing_run
        if load_config(existing_run(args.workdir) / "config.json").get("task", "lm") != "lm":
            flag = "--dynamic" if args.dynamic else "--cache"
            raise UserError(f"{flag} is for language models; {args.workdir} holds a classifier")
    run = load_run(args.workdir, args.checkpoint)
    if args.dynamic or args.cache:
        from rnnlm import cache, dynamic_eval
        from rnnlm.metrics import describe
        parts = []
        if args.cache:  # bad settings fail before any work
            chosen = cache.Settings.from_config(run.config.eval, run.workdir, **cached)
        if args.dynamic:
            dynamic_eval.Settings.from_config(run.config.eval, run.workdir, **dynamic)
            metrics = run.evaluate_dynamic(args.split, tune=args.tune, cache=chosen if args.cache else None, **dynamic)
            s = metrics["settings"]
            parts.append(f"dynamic ({s['rule']}, lr {s['lr']:g}, decay {s['decay']:g}, window {s['bptt']}, "
                         f"{s['batch_size']} stream(s))")
        else:
            metrics = run.evaluate_cache(args.split, tune=args.tune, **cached)
        if args.cache:
            c = metrics.get("cache", metrics["settings"])
            parts.append(f"cache (window {c['window']}, theta {c['theta']:g}, lambda {c['lam']:g})")
        print(f"{args.split}, {' + '.join(parts)}: {describe(metrics, run.tokenizer.kind)} "
              f"(step {run.step}, {args.workdir})")
        return
    metrics = run.evaluate(args.split)
    if run.task == "classify":
        from rnnlm.tasks.classify import format_confusion
        print(f"{args.split}: accuracy {metrics['accuracy']:.2%} of {metrics['examples']:,}, loss {metrics['loss']:.4f} "
              f"(step {run.step}, {args.workdir})")
        print("confusion matrix:\n" + format_confusion(metrics["confusion"], run.tokenizer.classes))
        return
    from rnnlm.metrics import describe
    print(f"{args.split}: {describe(metrics, run.tokenizer.kind)} (step {run.step}, {args.workdir})")


def _eval_ensemble(args):
    """Each run's figures on the split, then those of the mean of their probabilities."""
    from rnnlm.metrics import describe
    from rnnlm.runs import evaluate_ensemble, load_run
    from rnnlm.workdir import existing_run
    if args.dynamic or args.cache or args.tune:
        raise UserError("an ensemble (several --workdir) is scored as trained: it takes no --dynamic, --cache or --tune")
    workdirs = [existing_run(w) for w in args.workdir]
    if len({w.resolve() for w in workdirs}) < len(workdirs):
        raise UserError("an ensemble names each run once: a --workdir is repeated")
    runs = [load_run(w, args.checkpoint) for w in workdirs]
    members, ensemble = evaluate_ensemble(runs, args.split)
    if runs[0].task == "classify":
        from rnnlm.tasks.classify import format_confusion
        for run, metrics in zip(runs, members):
            print(f"{args.split}: accuracy {metrics['accuracy']:.2%}, loss {metrics['loss']:.4f} "
                  f"(step {run.step}, {run.workdir})")
        print(f"{args.split}, ensemble of {len(runs)}: accuracy {ensemble['accuracy']:.2%} of "
              f"{ensemble['examples']:,}, loss {ensemble['loss']:.4f} (mean of the class probabilities)")
        print("confusion matrix:\n" + format_confusion(ensemble["confusion"], runs[0].tokenizer.classes))
        return
    kind = runs[0].tokenizer.kind
    for run, metrics in zip(runs, members):
        print(f"{args.split}: {describe(metrics, kind)} (step {run.step}, {run.workdir})")
    print(f"{args.split}, ensemble of {len(runs)}: {describe(ensemble, kind)} (mean of the token probabilities)")


def _generate(args, rest):
    _no_extra(rest)
    from rnnlm.runs import load_run
    if args.beam is None and args.length_penalty is not None:
        raise UserError("--length-penalty is for beam search: give --beam N")
    if args.beam is not None and (args.top_k or args.top_p != 1.0 or args.num_samples != 1):
        raise UserError("--beam searches for the most likely text: it takes no --top-k, --top-p or --num-samples")
    run = load_run(args.workdir, args.checkpoint)
    if args.beam is not None:
        text, log_prob = run.generate_beam(args.prompt, args.length, args.beam, args.length_penalty or 0.0)
        print(text)
        print(f"(beam {args.beam}: log-probability {log_prob:.3f})", file=sys.stderr)
        return
    pieces = run.generate_stream(args.prompt, args.length, args.temperature, args.top_k, args.top_p, args.seed,
                                 args.num_samples)
    if args.num_samples == 1:  # one text: printed as it is sampled
        for piece, in pieces:
            print(piece, end="", flush=True)
        print()
    else:
        for text in ("".join(texts) for texts in zip(*pieces)):
            print(text)


def _score(args, rest):
    _no_extra(rest)
    import json
    import sys
    from rnnlm.config import load_config
    from rnnlm.runs import load_run
    from rnnlm.workdir import existing_run
    if load_config(existing_run(args.workdir) / "config.json").get("task", "lm") != "lm":
        raise UserError(f"{args.workdir} holds a classifier; score needs a language model run (task=lm)")
    if args.text_file == "-":
        text = sys.stdin.read()
    else:
        from rnnlm.data.text import read_text
        text = read_text(args.text_file)
    lines = text.splitlines()
    if not lines:
        raise UserError(f"{args.text_file}: no lines to score")
    run = load_run(args.workdir, args.checkpoint)
    for record in run.score(lines, carry=args.carry, per_token=args.per_token):
        print(json.dumps(record, ensure_ascii=False))


def _compare(args, rest):
    _no_extra(rest)
    from rnnlm.plots import training_curves
    from rnnlm.runs import format_runs, list_runs
    summaries = list_runs(args.workdirs)
    print(format_runs(summaries))
    print(f"wrote {training_curves([s['run'] for s in summaries], args.out)}")


def _export(args, rest):
    _no_extra(rest)
    from rnnlm.runs import export_run
    print(f"wrote {export_run(args.workdir, args.out, args.checkpoint)}")


def _runs(args, rest):
    _no_extra(rest)
    from rnnlm.runs import format_runs, list_runs
    print(format_runs(list_runs(args.folders)))


def _predict(args, rest):
    from rnnlm.runs import load_run
    sentences = list(args.sentences) + rest  # argparse leaves sentences after an option in rest
    if any(s.startswith("--") for s in rest):
        raise UserError(f"unexpected argument {next(s for s in rest if s.startswith('--'))!r}")
    from rnnlm.config import load_config
    from rnnlm.workdir import existing_run
    if load_config(existing_run(args.workdir) / "config.json").get("task", "lm") != "classify":
        raise UserError(f"{args.workdir} holds a language model; predict needs a classifier run (task=classify)")
    run = load_run(args.workdir, args.checkpoint)
    for sentence, out in zip(sentences, run.predict(sentences)):
        probabilities = " ".join(f"{label}={p:.3f}" for label, p in out["probabilities"].items())
        note = f" (truncated to {run.tokenizer.maxlen} words)" if out["truncated"] else ""
        print(f"{out['label']}\t{probabilities}\t{sentence}{note}")


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


def _sweep(args, rest):
    from rnnlm import sweep
    config = parse_config(rest)
    given = [rest[i + 1] for i, a in enumerate(rest[:-1]) if a == "--config"]
    given += [a.split("=", 1)[1] for a in rest if a.startswith("--config=")]
    if not given:
        raise UserError("sweep needs --config experiments/ablations/<name>.py[:arg], a file with get_sweep()")
    points = sweep.load_sweep(resolve_experiment(given[-1]), config)
    if args.seeds is not None:
        try:
            seeds = [int(s) for s in args.seeds.split(",")]
        except ValueError:
            raise UserError(f"--seeds must be comma-separated integers, got {args.seeds!r}") from None
        points = sweep.with_seeds(points, seeds)
    sweep.run_sweep(config, points, args.workdir or f"runs/{config.name}")


def _plot(args, rest):
    _no_extra(rest)
    from rnnlm.plots import quality_against_time, training_curves
    out = args.out or (f"{args.workdir[0]}/curves.png" if len(args.workdir) == 1 else "curves.png")
    print(f"wrote {(quality_against_time if args.time else training_curves)(args.workdir, out)}")


def _study(args, rest):
    _no_extra(rest)
    if args.study == "gradients":
        from rnnlm.studies.gradients import gradient_study
        paths = gradient_study(args.workdir, args.out, lags=args.lags, count=args.windows, layer=args.layer)
    else:
        from rnnlm.studies.synthetic import synthetic_study
        if args.tiny:
            args.cells, args.distances, args.steps, args.seeds, args.hidden = "rnn,lstm", "2,4", 20, 1, 8
        try:
            distances = [int(d) for d in args.distances.split(",")]
        except ValueError:
            raise UserError(f"--distances must be comma-separated integers, got {args.distances!r}") from None
        paths = synthetic_study(args.cells.split(","), distances, args.seeds, args.steps, args.hidden,
                                args.out or "runs/study_synthetic")
    print("wrote " + ", ".join(map(str, paths)))


def _read_text_arg(args):
    if args.text is not None and args.text_file:
        raise UserError("give --text or --text-file, not both")
    if args.text_file:
        from rnnlm.data.text import read_text
        return read_text(args.text_file)
    return args.text


def _visualize(args, rest):
    _no_extra(rest)
    from rnnlm import visualize
    paths = visualize.visualize(args.workdir, _read_text_arg(args), visualize.parse_units(args.units), args.layer,
                                args.state, args.out, args.max_chars, args.checkpoint)
    print("wrote " + ", ".join(map(str, paths)))


def _units(args, rest):
    _no_extra(rest)
    from rnnlm import visualize
    from rnnlm.studies.activations import FEATURES
    table, paths = visualize.find_units(args.workdir, args.feature or list(FEATURES), args.top, _read_text_arg(args),
                                        args.out, args.max_chars, args.checkpoint)
    print(table + "wrote " + ", ".join(map(str, paths)))


def _bench(args, rest):
    from rnnlm.bench import run  # options: python -m rnnlm.bench --help
    run.main(rest)


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


class _OneLineParser(argparse.ArgumentParser):
    """argparse prints the usage block before an error; a bad flag gets one line like every other error."""

    def error(self, message):
        raise UserError(message)


CONFIG_HELP = """the experiment and its settings (read by ml_collections, so not in the list above):
  --config FILE[:ARG]   an experiment file: experiments/<name>.py, <name>.py or <name>, from any
                        directory (default: experiments/default.py); ARG picks a variant, e.g. :tiny
  --config.SECTION.FIELD=VALUE
                        override one field; sections: data, model, speed, train, eval, sample
                        (every field and its meaning: rnnlm/config.py)

examples:
  rnnlm train --config experiments/ptb_small.py --workdir runs/ptb_small
  rnnlm train --config experiments/default.py:tiny --config.model.cell=gru --config.train.epochs=2
  rnnlm sweep --config experiments/ablations/cell_type.py:tiny --seeds 0
"""


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="rnnlm", description="Recurrent neural language models in JAX.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_OneLineParser)
    with_config = {"epilog": CONFIG_HELP, "formatter_class": argparse.RawDescriptionHelpFormatter}

    train = commands.add_parser("train", help="train or resume a run (--config, --config.<field>=value)", **with_config)
    train.add_argument("--workdir", help="run directory (default: runs/<config.name>)")
    train.add_argument("--distributed", default="auto", choices=("auto", "on", "off"),
                       help="start JAX's distributed runtime (auto: when a coordinator is given or on a multi-host TPU)")
    train.add_argument("--coordinator", default="", help="host:port of process 0 (or $RNNLM_COORDINATOR)")
    train.add_argument("--num-processes", type=int, default=0, help="processes in the job (or $RNNLM_NUM_PROCESSES)")
    train.add_argument("--process-id", type=int, default=-1, help="this process's index (or $RNNLM_PROCESS_ID)")
    train.set_defaults(func=_train)

    evaluate = commands.add_parser("eval", help="score a saved run on a split")
    evaluate.add_argument("--workdir", required=True, action="append",
                          help="a run directory written by rnnlm train; give several for an ensemble (the mean "
                               "of their probabilities: classes, or every token's for language models)")
    evaluate.add_argument("--split", default="test", choices=("train", "valid", "test"), help="the split scored")
    evaluate.add_argument("--checkpoint", default="latest", help="latest, best or a step number")
    evaluate.add_argument("--dynamic", action="store_true",
                          help="dynamic evaluation: a gradient step after each window is scored (eval.dynamic_*)")
    evaluate.add_argument("--dynamic-rule", choices=("rms", "sgd"), help="the update rule (default eval.dynamic_rule)")
    evaluate.add_argument("--dynamic-lr", type=float, help="its learning rate")
    evaluate.add_argument("--dynamic-decay", type=float, help="lambda, the pull toward the trained parameters")
    evaluate.add_argument("--dynamic-eps", type=float, help="rms: eps")
    evaluate.add_argument("--dynamic-bptt", type=int, help="tokens per window (and per step)")
    evaluate.add_argument("--dynamic-batch-size", type=int, help="streams adapted together")
    evaluate.add_argument("--cache", action="store_true",
                          help="mix the model with the continuous cache of recent states (eval.cache_*)")
    evaluate.add_argument("--cache-window", type=int, help="positions held per stream")
    evaluate.add_argument("--cache-theta", type=float, help="attention weights exp(theta h_t . h_i)")
    evaluate.add_argument("--cache-lambda", type=float, help="the cache's share of the mixture, in [0, 1]")
    evaluate.add_argument("--tune", action="store_true",
                          help="with --dynamic (lr, decay) or --cache (theta, lambda): choose them on valid first "
                               "(eval.dynamic_grid_*, eval.cache_grid_*); saved beside the run")
    evaluate.set_defaults(func=_eval)

    gen = commands.add_parser("generate", help="sample text from a saved run")
    gen.add_argument("--workdir", required=True, help="a run directory written by rnnlm train")
    gen.add_argument("--prompt", default="", help="text to read before sampling")
    gen.add_argument("--length", type=_positive(int), default=300, help="tokens to sample")
    gen.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    gen.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens; 0 = all")
    gen.add_argument("--top-p", type=float, default=1.0, help="nucleus mass; 1 = off")
    gen.add_argument("--seed", type=int, default=0, help="sampling seed: the same seed gives the same text")
    gen.add_argument("--num-samples", type=_positive(int), default=1, help="independent samples, drawn as one batch")
    gen.add_argument("--beam", type=_positive(int), help="beam search of this width instead of sampling")
    gen.add_argument("--length-penalty", type=float,
                     help="beam: rank by log-probability / length ** this (default 0: the log-probability)")
    gen.add_argument("--checkpoint", default="latest", help="latest, best or a step number")
    gen.set_defaults(func=_generate)

    score = commands.add_parser("score", help="each line's log-probability under a saved language model (JSONL)")
    score.add_argument("--workdir", required=True, help="a run directory written by rnnlm train")
    score.add_argument("--text-file", required=True, help="the text, one item per line; - reads standard input")
    score.add_argument("--carry", action="store_true",
                       help="one stream, the state carried across lines (eval's totals); default: each line alone")
    score.add_argument("--per-token", action="store_true", help="also every token's surprisal in bits")
    score.add_argument("--checkpoint", default="latest", help="latest, best or a step number")
    score.set_defaults(func=_score)

    predict = commands.add_parser("predict", help="label sentences with a saved classifier run")
    predict.add_argument("--workdir", required=True, help="a run directory written by rnnlm train")
    predict.add_argument("--checkpoint", default="best", help="latest, best or a step number")
    predict.add_argument("sentences", nargs="*", help="sentences to classify")
    predict.set_defaults(func=_predict)

    aot = commands.add_parser("compile-check", help="compile the train step for N fake CPU devices "
                              "(--config, --config.<field>=value)", **with_config)
    aot.add_argument("--devices", type=_positive(int), default=8, help="fake CPU devices the step is sharded over")
    aot.add_argument("--vocab-size", type=int, default=0, help="skip reading the corpus")
    aot.set_defaults(func=_compile_check)

    runs = commands.add_parser("runs", help="list the runs under folders: step, best valid, test, time, state")
    runs.add_argument("folders", nargs="*", default=["runs"], help="run or sweep folders, searched below (default: runs)")
    runs.set_defaults(func=_runs)

    compare = commands.add_parser("compare", help="one table and overlaid training curves of several runs")
    compare.add_argument("workdirs", nargs="+", help="run or sweep directories")
    compare.add_argument("--out", default="compare.png", help="PNG of the overlaid curves (default: ./compare.png)")
    compare.set_defaults(func=_compare)

    export = commands.add_parser("export", help="a run's parameters as safetensors, beside its config and tokenizer")
    export.add_argument("--workdir", required=True, help="a run directory written by rnnlm train")
    export.add_argument("--out", required=True, help="a new (or empty) folder; rnnlm eval/generate read it like a run")
    export.add_argument("--checkpoint", default="latest", help="latest, best or a step number")
    export.set_defaults(func=_export)

    listing = commands.add_parser("corpora", help="list the registered corpora")
    listing.set_defaults(func=_corpora)
    _add_research_commands(commands, with_config)
    # add_help=False: `rnnlm bench --help` and every option reach the benchmark's own parser.
    bench = commands.add_parser("bench", add_help=False, help="speed and memory: rnnlm vs PyTorch vs Flax")
    bench.set_defaults(func=_bench)
    return parser


def _add_research_commands(commands, with_config):
    """sweep, plot, study, visualize, units: see rnnlm/sweep.py, plots.py, studies/, visualize.py."""
    sweep = commands.add_parser("sweep", help="run an experiment's get_sweep() points; write results.md/json/png",
                                **with_config)
    sweep.add_argument("--workdir", help="sweep directory, one run per point (default: runs/<config.name>)")
    sweep.add_argument("--seeds", help="replace the sweep's seed axis, e.g. 0 or 0,1,2,3,4")
    sweep.set_defaults(func=_sweep)

    plot = commands.add_parser("plot", help="training curves of one or several runs (or a sweep) to PNG")
    plot.add_argument("--workdir", action="append", required=True, help="a run or a sweep directory; repeatable")
    plot.add_argument("--out", help="PNG path (default: <workdir>/curves.png, or ./curves.png for several)")
    plot.add_argument("--time", action="store_true", help="validation perplexity against training time instead")
    plot.set_defaults(func=_plot)

    study = commands.add_parser("study", help="gradients: norm against lag; synthetic: the adding problem")
    kinds = study.add_subparsers(dest="study", required=True)
    gradients = kinds.add_parser("gradients", help="‖d loss_t / d h_(t-k)‖ against k, trained and initial")
    gradients.add_argument("--workdir", action="append", required=True, help="a run or a sweep directory; repeatable")
    gradients.add_argument("--lags", type=_positive(int), default=100, help="window length: lags 0..N-1")
    gradients.add_argument("--windows", type=_positive(int), default=32, help="validation windows averaged")
    gradients.add_argument("--layer", type=int, default=0, help="the layer whose h is differentiated")
    gradients.add_argument("--out", help="output folder (default: <workdir>/gradients)")
    synthetic = kinds.add_parser("synthetic", help="success rate against distance on the adding problem")
    synthetic.add_argument("--cells", default="rnn,lstm,gru", help="comma-separated cell names")
    synthetic.add_argument("--distances", default="5,10,20,50,100", help="comma-separated distances")
    synthetic.add_argument("--steps", type=_positive(int), default=2000, help="Adam steps per network")
    synthetic.add_argument("--seeds", type=_positive(int), default=3, help="networks per (cell, distance)")
    synthetic.add_argument("--hidden", type=_positive(int), default=32, help="hidden size")
    synthetic.add_argument("--tiny", action="store_true", help="seconds: rnn,lstm; distances 2,4; 20 steps")
    synthetic.add_argument("--out", help="output folder (default: runs/study_synthetic)")
    for parser in (gradients, synthetic):
        parser.set_defaults(func=_study)

    for name, func, text_help, chars in (("visualize", _visualize, "per-token hidden units, gates, surprisal", 400),
                                         ("units", _units, "units most correlated with a text feature", 20000)):
        command = commands.add_parser(name, help=f"{text_help}: HTML page" + (" and PNG" if name == "visualize" else ""))
        command.add_argument("--workdir", required=True, help="a run directory written by rnnlm train")
        command.add_argument("--text", help="text to read (default: the start of the validation split)")
        command.add_argument("--text-file", help="read the text from this file")
        command.add_argument("--max-chars", type=_positive(int), default=chars, help="tokens of the text used")
        command.add_argument("--checkpoint", default="latest", help="latest, best or a step number")
        command.add_argument("--out", help="output folder (default: <workdir>/visualize)")
        command.set_defaults(func=func)
        if name == "visualize":
            command.add_argument("--units", help="comma-separated unit indices (default: the 8 most variable)")
            command.add_argument("--layer", type=int, default=-1, help="layer index; -1 = the top one")
            command.add_argument("--state", default="h", help="h, or c for an LSTM's cell state")
        else:
            command.add_argument("--feature", action="append", help="inside_quotes, line_position or "
                                 "bracket_depth; repeatable (default: all)")
            command.add_argument("--top", type=_positive(int), default=5, help="units listed per feature")


def _ignore_closed_event_loops(unraisable, default=sys.unraisablehook):
    """Orbax reads with asyncio; after a failed read TensorStore's late callbacks find its loop closed and
    each prints a traceback of no consequence. Every other unraisable exception is reported as usual."""
    if isinstance(unraisable.exc_value, RuntimeError) and str(unraisable.exc_value) == "Event loop is closed":
        return
    default(unraisable)


def _quiet_libraries():
    from absl import logging as absl_logging
    sys.unraisablehook = _ignore_closed_event_loops
    # Orbax logs a failed asynchronous save at ERROR, with tracebacks, before raising it; rnnlm reports the
    # raised error in one line (rnnlm/checkpoint.py), so only fatal records of absl's loggers are shown.
    absl_logging.set_verbosity(absl_logging.FATAL)
    logging.getLogger("absl").setLevel(logging.CRITICAL)
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)  # the same failure again, from Orbax's unawaited tasks
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")


def main(argv=None) -> int:
    parser = build_parser()
    try:
        args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
        _quiet_libraries()
        args.func(args, rest)
    except UserError as e:
        print(f"rnnlm: error: {e}", file=sys.stderr)
        return 2
    except Preempted as e:
        print(f"rnnlm: {e}", file=sys.stderr)
        return 0
    except KeyboardInterrupt:
        print("rnnlm: interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # the machine refused (permissions, a full disk): its reason and path, in one line
        where = f": {e.filename}" if e.filename else ""
        print(f"rnnlm: error: {e.strerror or e}{where}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
