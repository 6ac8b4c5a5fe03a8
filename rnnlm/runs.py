"""A saved run, read-only: `load_run(workdir)`, the Python API behind `rnnlm eval`, `generate` and `predict`.

    import rnnlm
    run = rnnlm.load_run("runs/ptb_small")            # or load_run(workdir, "best" | "latest" | step)
    run.config, run.tokenizer, run.model, run.params, run.step
    run.evaluate("test")                               # {"loss", "perplexity", "word_perplexity", ...}
    run.generate("the company said", length=30)        # language models
    run.predict(["a gorgeous , witty movie ."])        # classifiers
    evaluate_ensemble([run, load_run(other)], "test")  # each run's metrics, then their mean's (`rnnlm eval`)

The task (`config.task` in the run's config.json) decides the class:
`rnnlm.tasks.lm.LanguageModelRun` or `rnnlm.tasks.classify.ClassifierRun`.

`export_run(workdir, out)` (`rnnlm export`) writes one checkpoint's parameters
as safetensors beside the run's config and tokenizer; `load_run(out)` reads
such a folder like a run.

`list_runs(folders)` (`rnnlm runs [DIR ...]`) summarises the runs under folders
from their files alone (nothing is loaded or compiled): experiment, latest
checkpoint, best validation, test, training time and whether the run is
running (its workdir lock is held), finished (its final test is logged at its
latest checkpoint) or stopped.
"""

from __future__ import annotations

import json
import math
import pathlib

from rnnlm.config import load_config
from rnnlm.errors import UserError
from rnnlm.tasks.registry import task_module
from rnnlm.workdir import existing_run, logged_records


def load_run(workdir, which: str = "latest"):
    """The run in `workdir` at checkpoint `which` ("latest", "best" or a step number)."""
    workdir = existing_run(workdir)
    config = load_config(workdir / "config.json")
    return task_module(config.task).load(workdir, config, which)


def evaluate_ensemble(runs: list, split: str = "test") -> tuple[list[dict], dict]:
    """(each run's metrics, their ensemble's) on a split: the ensemble's probabilities are the mean of the
    runs' (of each token for language models, of each class for classifiers); rnnlm/tasks/*.py say what
    the runs must share."""
    if len(runs) < 2:
        raise UserError("an ensemble needs at least two runs")
    if len({run.task for run in runs}) > 1:
        raise UserError("an ensemble mixes classifiers and language models: "
                        + ", ".join(f"{run.workdir} ({run.task})" for run in runs))
    return task_module(runs[0].task).evaluate_ensemble(runs, split)


def _latest_checkpoint(workdir: pathlib.Path) -> tuple[int | None, dict]:
    """(step, meta) of the newest complete checkpoint, read from Orbax's JSON file."""
    steps = sorted((int(p.name) for p in (workdir / "checkpoints").glob("*") if p.name.isdigit()), reverse=True)
    for step in steps:
        try:
            return step, json.loads((workdir / "checkpoints" / str(step) / "meta" / "metadata").read_text())
        except (OSError, json.JSONDecodeError):
            continue
    return None, {}


def _is_running(workdir: pathlib.Path) -> bool:
    import fcntl
    try:
        with open(workdir / ".lock") as lock:
            fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)  # taken (and dropped) at once: nobody trains
    except FileNotFoundError:
        return False
    except BlockingIOError:
        return True
    return False


def _score(record: dict | None, task: str) -> str:
    if not record:
        return ""
    if task == "classify":
        return f"acc {record['accuracy']:.2%}"
    return f"loss {record['loss']:.4f}, ppl {math.exp(min(record['loss'], 700)):.2f}"


def run_summary(workdir) -> dict:
    """One run's line of `rnnlm runs`, from its config, metric log and latest checkpoint's metadata."""
    workdir = pathlib.Path(workdir)
    config = load_config(workdir / "config.json")
    records = logged_records(workdir)
    step, meta = _latest_checkpoint(workdir)
    task = config.task
    valid = [r for r in records if r.get("split") == "valid" and ("loss" in r)]
    if task == "classify":
        best = max(valid, key=lambda r: r.get("accuracy", 0.0), default=None)
    else:
        best = min(valid, key=lambda r: r["loss"], default=None)
    tests = [r for r in records if r.get("split") in ("test", "test_best")]
    finished = bool(tests) and step is not None and tests[-1]["step"] == step
    state = "running" if _is_running(workdir) else "finished" if finished else "stopped"
    seconds = meta.get("train_seconds")
    return {"run": str(workdir), "experiment": config.name, "task": task, "step": step,
            "best_valid": _score(best, task), "test": _score(tests[-1] if tests else None, task),
            "train_minutes": None if seconds is None else seconds / 60, "state": state}


def list_runs(folders) -> list[dict]:
    """The summaries of every run in or under `folders` (a run is a directory with a config.json)."""
    found = []
    for folder in map(pathlib.Path, folders):
        if not folder.is_dir():
            raise UserError(f"not a directory: {folder}")
        found += [folder] if (folder / "config.json").exists() else sorted(
            p.parent for p in folder.glob("**/config.json") if (p.parent / "checkpoints").exists()
            or (p.parent / "metrics.jsonl").exists())
    if not found:
        raise UserError(f"no runs in {', '.join(map(str, folders))} (a run is a directory with a config.json)")
    return [run_summary(run) for run in found]


def format_runs(summaries: list[dict]) -> str:
    lines = ["| run | experiment | task | step | best valid | test | train min | state |", "|---|---|---|---|---|---|---|---|"]
    for s in summaries:
        minutes = "" if s["train_minutes"] is None else f"{s['train_minutes']:.1f}"
        step = "" if s["step"] is None else s["step"]
        lines.append(f"| {s['run']} | {s['experiment']} | {s['task']} | {step} | {s['best_valid']} | {s['test']} | "
                     f"{minutes} | {s['state']} |")
    return "\n".join(lines)


def export_run(workdir, out, which: str = "latest") -> pathlib.Path:
    """Write <out>/model.safetensors (checkpoint `which`), config.json and the tokenizer's files."""
    import shutil
    from rnnlm.state import EXPORTED, write_exported
    out = pathlib.Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out {out} exists and is not an empty directory; nothing was written")
    run = load_run(workdir, which)
    names = ["config.json", "tokenizer.json"] + [p.name for p in run.workdir.glob("tokenizer.model")]
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copyfile(run.workdir / name, out / name)
    write_exported(out / EXPORTED, run.params, run.step)
    return out / EXPORTED
