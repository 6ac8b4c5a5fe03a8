"""Sweeps: run an experiment's `get_sweep()` points one after another and tabulate them.

An experiment file may define, beside `get_config(arg)`,

    def get_sweep(arg=None):            # or get_sweep(arg=None, config=None)
        return sweep.product(sweep.axis("model.cell", ["rnn", "lstm"]), sweep.axis("seed", [0, 1, 2]))

a list of overrides, each a dict of dotted config fields, applied over the
command-line overrides. When `get_sweep` has a `config` parameter it receives
the experiment's config after the command-line overrides (to size points from
it, e.g. `matched_hidden_size`). A sweep's runs differ in what their points say
and nothing else, so `seed` is an axis like any other.

    rnnlm sweep --config experiments/ablations/cell_type.py:tiny [--workdir runs/x] [--config.train.max_steps=50]

Each point trains in `<workdir>/<point name>/` with `train_and_evaluate`, so
an interrupted point resumes where its checkpoint left it, and a finished point
(its `sweep_result.json` written for the same config) is skipped on a rerun.
Every point is checked before the first one trains. A point that fails (a
non-finite loss) is reported in the table; the others still run.

The sweep writes `<workdir>/results.md` (one row per point, runs that differ
only in `seed` merged into mean ± sample standard deviation), `results.json`
(every run) and `results.png` (validation perplexity against parameters).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import inspect
import itertools
import json
import pathlib
import re
import statistics

from rnnlm.errors import UserError

RESULT_FILE = "sweep_result.json"


# --- building sweeps (used by experiment files) ------------------------------

def axis(field: str, values) -> list[dict]:
    """One swept field: [{field: v} for v in values]."""
    return [{field: value} for value in values]


def product(*axes: list[dict]) -> list[dict]:
    """Every combination of the given axes, the last varying fastest (big_vision's `hyper.product`)."""
    return [dict(itertools.chain.from_iterable(d.items() for d in combo)) for combo in itertools.product(*axes)]


def model_params(config, vocab_size: int) -> int:
    """Parameters of the language model this config builds (`rnnlm.models.count_params`)."""
    from rnnlm.models import count_params, language_model_from_config
    return count_params(language_model_from_config(config, vocab_size))


def matched_hidden_size(config, vocab_size: int, cell_name: str, target: int) -> int:
    """The hidden size whose model with `cell_name` has the parameter count nearest to `target`."""
    def count(hidden):
        candidate = copy.deepcopy(config)
        candidate.model.cell, candidate.model.hidden_size = cell_name, hidden
        return model_params(candidate, vocab_size)

    low, high = 1, 1
    while count(high) < target:
        high *= 2
    while high - low > 1:  # count is increasing in the hidden size
        middle = (low + high) // 2
        low, high = (middle, high) if count(middle) < target else (low, middle)
    return min((low, high), key=lambda h: abs(count(h) - target))


def vocab_size(config) -> int:
    """The vocabulary a run of this config will fit (reads the train split once)."""
    from rnnlm.data import text as text_lib
    from rnnlm.data.tokenizers import fit_tokenizer
    texts, usual = text_lib.load_corpus_text(config.data)
    return fit_tokenizer(config.data.tokenizer or usual, texts["train"], config.data).vocab_size


# --- loading and applying -----------------------------------------------------

def load_sweep(config_arg: str, config) -> list[dict]:
    """The overrides of `get_sweep` in the experiment file `path[:arg]` (already resolved)."""
    from rnnlm.config import load_experiment_module
    path, _, arg = config_arg.rpartition(":") if ".py:" in config_arg else (config_arg, "", "")
    module = load_experiment_module(path)
    if not hasattr(module, "get_sweep"):
        raise UserError(f"{path} defines no get_sweep(); it is an experiment, not a sweep (use rnnlm train)")
    kwargs = {"config": config} if "config" in inspect.signature(module.get_sweep).parameters else {}
    points = module.get_sweep(arg or None, **kwargs)
    if not points or not all(isinstance(p, dict) for p in points):
        raise UserError(f"{path}: get_sweep() must return a non-empty list of dicts of config overrides")
    return [dict(p) for p in points]


def with_seeds(points: list[dict], seeds) -> list[dict]:
    """The sweep's points with its seed axis replaced by `seeds` (a quick one-seed pass, or more seeds)."""
    if not seeds or any(not isinstance(s, int) or s < 0 for s in seeds):
        raise UserError(f"--seeds: expected non-negative integers such as 0,1,2; got {seeds!r}")
    unique = [dict(p) for p in dict.fromkeys(tuple((k, v) for k, v in p.items() if k != "seed") for p in points)]
    # Every point's first seed before any second seed (a sweep cut short still gives a whole table), and the
    # seed where the sweep put it among the fields, so the run folders keep the names a run without --seeds gives.
    seed_first = next(iter(points[0]), None) == "seed"
    return [{"seed": s, **p} if seed_first else {**p, "seed": s} for s in seeds for p in unique]


def apply_overrides(config, overrides: dict):
    """A copy of `config` with dotted fields set; an unknown field or a wrong type is a UserError."""
    config = copy.deepcopy(config)
    for field, value in overrides.items():
        node, parts = config, field.split(".")
        try:
            for part in parts[:-1]:
                node = node[part]
            if parts[-1] not in node:
                raise KeyError(field)
            node[parts[-1]] = value
        except (KeyError, AttributeError):
            raise UserError(f"sweep override: unknown config field {field!r}") from None
        except TypeError as e:
            raise UserError(f"sweep override {field}={value!r}: {e}") from None
    return config


def point_name(overrides: dict) -> str:
    """A directory name from the overrides: `cell=gru,hidden_size=147,seed=0`."""
    short = [field.rsplit(".", 1)[-1] for field in overrides]
    keys = [s if short.count(s) == 1 else field for s, field in zip(short, overrides)]
    name = ",".join(f"{k}={_format(v)}" for k, v in zip(keys, overrides.values()))
    name = re.sub(r"[^A-Za-z0-9._=,+-]", "_", name) or "base"
    if len(name) > 100:
        name = name[:80] + "-" + hashlib.sha1(name.encode()).hexdigest()[:10]
    return name


def _format(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (tuple, list)):
        return "(" + ",".join(_format(v) for v in value) + ")"
    return str(value)


# --- running --------------------------------------------------------------------

@dataclasses.dataclass
class RunResult:
    name: str
    overrides: dict
    workdir: str
    status: str  # "finished" | "skipped" (finished earlier) | "failed"
    params: int = 0
    step: int = 0
    valid: dict | None = None
    test: dict | None = None
    error: str = ""


def run_sweep(config, points: list[dict], workdir, train_fn=None) -> list[RunResult]:
    """Train every point (skipping finished ones), then write results.md/json/png; returns the runs."""
    from rnnlm.config import validate
    from rnnlm.workdir import check_writable, make_workdir
    if train_fn is None:
        from rnnlm.train import train_and_evaluate as train_fn
    workdir = pathlib.Path(workdir)
    configs = [apply_overrides(config, p) for p in points]
    names = [point_name(p) for p in points]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise UserError(f"two sweep points have the same overrides: {sorted(duplicates)[0]}")
    for point_config in configs:
        validate(point_config)
    check_writable(workdir)
    make_workdir(workdir)
    results = []
    for index, (overrides, point_config, name) in enumerate(zip(points, configs, names), 1):
        run_dir = workdir / name
        done = _finished(run_dir, point_config)
        if done is not None:
            print(f"sweep [{index}/{len(points)}] {name}: finished earlier, skipped")
            results.append(RunResult(name, overrides, str(run_dir), "skipped", **done))
            continue
        print(f"sweep [{index}/{len(points)}] {name} -> {run_dir}")
        try:
            out = train_fn(point_config, run_dir)
        except UserError as e:
            print(f"sweep [{index}/{len(points)}] {name}: failed: {e}")
            results.append(RunResult(name, overrides, str(run_dir), "failed", error=str(e)))
            continue
        if out.get("preempted"):  # SIGTERM or Ctrl-C: the point's checkpoint is written; stop the sweep there
            print(f"sweep [{index}/{len(points)}] {name}: stopped at step {out['step']}, its checkpoint written; "
                  "rerun the same command to resume the sweep")
            return results
        done = {"params": _run_params(point_config, run_dir), "step": int(out["step"]), "valid": out["valid"], "test": out["test"]}
        (run_dir / RESULT_FILE).write_text(json.dumps({"config": point_config.to_dict(), **done}, indent=1, default=str) + "\n")
        results.append(RunResult(name, overrides, str(run_dir), "finished", **done))
    write_results(workdir, config, results)
    failed = [r.name for r in results if r.status == "failed"]
    if failed:
        raise UserError(f"{len(failed)} of {len(results)} sweep runs failed ({', '.join(failed)}); "
                        f"see {workdir / 'results.md'}")
    return results


def _finished(run_dir: pathlib.Path, config) -> dict | None:
    path = run_dir / RESULT_FILE
    if not path.exists():
        return None
    saved = json.loads(path.read_text())
    # Compare as JSON so tuples and lists match.
    if json.loads(json.dumps(saved["config"])) != json.loads(json.dumps(config.to_dict(), default=str)):
        return None  # the config changed (more epochs, say): train_and_evaluate resumes or refuses
    return {k: saved[k] for k in ("params", "step", "valid", "test")}


def _run_params(config, run_dir: pathlib.Path) -> int:
    from rnnlm.models import count_params
    from rnnlm.tasks.registry import task_module
    return count_params(task_module(config.task).build_model(config, pathlib.Path(run_dir))[0])


# --- the table --------------------------------------------------------------------

METRICS = (("valid", "perplexity", "valid ppl"), ("test", "perplexity", "test ppl"),
           ("valid", "word_perplexity", "valid word ppl"), ("test", "word_perplexity", "test word ppl"),
           ("valid", "bits_per_char", "valid bpc"), ("test", "bits_per_char", "test bpc"),
           ("valid", "accuracy", "valid acc"), ("test", "accuracy", "test acc"))


def group_runs(results: list[RunResult]) -> list[dict]:
    """Runs that differ only in `seed` merged: {overrides, runs, seeds, params, <metric>: (mean, std, n)}."""
    groups: dict[str, dict] = {}
    for r in results:
        key_overrides = {k: v for k, v in r.overrides.items() if k != "seed"}
        group = groups.setdefault(json.dumps(key_overrides, sort_keys=True, default=str),
                                  {"overrides": key_overrides, "runs": [], "failed": 0})
        group["runs"].append(r.name)
        if r.status == "failed":
            group["failed"] += 1
            continue
        group.setdefault("params", r.params)
        group.setdefault("steps", r.step)
        for split, metric, label in METRICS:
            if metric in (getattr(r, split) or {}):
                group.setdefault(label, []).append(getattr(r, split)[metric])
    for group in groups.values():
        for _, _, label in METRICS:
            if label in group:
                values = group[label]
                group[label] = {"mean": statistics.fmean(values),
                                "std": statistics.stdev(values) if len(values) > 1 else 0.0, "n": len(values)}
    return list(groups.values())


def choice_metric(groups: list[dict]) -> str:
    """Per-word perplexity when every point has it (it compares across tokenizers), else per token."""
    return "valid word ppl" if all("valid word ppl" in g for g in groups) else "valid ppl"


def choose(groups: list[dict]) -> tuple[dict | None, dict | None]:
    """(best by mean validation perplexity, smallest within one standard deviation of the best)."""
    key = choice_metric(groups)
    scored = [g for g in groups if key in g]
    if not scored:
        return None, None
    best = min(scored, key=lambda g: g[key]["mean"])
    bound = best[key]["mean"] + best[key]["std"]
    within = [g for g in scored if g[key]["mean"] <= bound]
    return best, min(within, key=lambda g: (g["params"], g[key]["mean"]))


def results_markdown(title: str, groups: list[dict]) -> str:
    fields = list(dict.fromkeys(k for g in groups for k in g["overrides"]))
    labels = [label for _, _, label in METRICS if any(label in g for g in groups)]
    short = [f.rsplit(".", 1)[-1] for f in fields]
    header = [s if short.count(s) == 1 else f for s, f in zip(short, fields)] + ["runs", "params", "steps"] + labels
    lines = [f"# {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for g in groups:
        cells = [_format(g["overrides"].get(f, "")) for f in fields]
        runs = f"{len(g['runs']) - g['failed']}" + (f" ({g['failed']} failed)" if g["failed"] else "")
        cells += [runs, f"{g.get('params', 0):,}", str(g.get("steps", ""))]
        for label in labels:
            m = g.get(label)
            cells.append("—" if m is None else f"{m['mean']:.3f}" + (f" ± {m['std']:.3f}" if m["n"] > 1 else ""))
        lines.append("| " + " | ".join(cells) + " |")
    best, chosen = choose(groups)
    if best is not None:
        describe = lambda g: ", ".join(f"{k}={_format(v)}" for k, v in g["overrides"].items()) or "base"
        key = choice_metric(groups)
        what = "per-word perplexity" if key == "valid word ppl" else "perplexity"
        lines += ["", f"Best by mean validation {what}: **{describe(best)}** "
                      f"({best[key]['mean']:.2f}, {best['params']:,} parameters)."]
        if chosen is not best:
            lines.append(f"Smallest within one standard deviation of the best (the one-standard-error rule): "
                         f"**{describe(chosen)}** ({chosen[key]['mean']:.2f}, {chosen['params']:,} parameters).")
    lines += ["", "± is the sample standard deviation across seeds; runs = seeds that finished."]
    return "\n".join(lines) + "\n"


def write_results(workdir: pathlib.Path, config, results: list[RunResult]) -> None:
    groups = group_runs(results)
    (workdir / "results.md").write_text(results_markdown(f"Sweep: {config.name}", groups))
    payload = {"name": config.name, "runs": [dataclasses.asdict(r) for r in results], "groups": groups}
    (workdir / "results.json").write_text(json.dumps(payload, indent=1, default=str) + "\n")
    if any("valid ppl" in g for g in groups):
        from rnnlm import plots
        plots.sweep_plot(groups, workdir / "results.png", title=f"Sweep: {config.name}")
    print(f"sweep: wrote {workdir / 'results.md'}, results.json, results.png")
