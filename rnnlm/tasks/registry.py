"""Task names -> task modules: what `rnnlm.train` trains and `rnnlm.load_run` loads by `config.task`."""

from __future__ import annotations

from rnnlm.errors import UserError
from rnnlm.tasks import classify, lm

TASKS = {lm.NAME: lm, classify.NAME: classify}


def task_module(name: str):
    """The module of a task: its `TASK` class, `load(workdir, config, which)` and `build_model(config, workdir)`."""
    if name not in TASKS:
        raise UserError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    return TASKS[name]


def get_task(name: str):
    return task_module(name).TASK
