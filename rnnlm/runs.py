"""A saved run, read-only: `load_run(workdir)`, the Python API behind `rnnlm eval`, `generate` and `predict`.

    import rnnlm
    run = rnnlm.load_run("runs/ptb_small")            # or load_run(workdir, "best" | "latest" | step)
    run.config, run.tokenizer, run.model, run.params, run.step
    run.evaluate("test")                               # {"loss", "perplexity", "word_perplexity", ...}
    run.generate("the company said", length=30)        # language models
    run.predict(["a gorgeous , witty movie ."])        # classifiers

The task (`config.task` in the run's config.json) decides the class:
`rnnlm.tasks.lm.LanguageModelRun` or `rnnlm.tasks.classify.ClassifierRun`.
"""

from __future__ import annotations

from rnnlm.config import load_config
from rnnlm.tasks.registry import task_module
from rnnlm.workdir import existing_run


def load_run(workdir, which: str = "latest"):
    """The run in `workdir` at checkpoint `which` ("latest", "best" or a step number)."""
    workdir = existing_run(workdir)
    config = load_config(workdir / "config.json")
    return task_module(config.task).load(workdir, config, which)
