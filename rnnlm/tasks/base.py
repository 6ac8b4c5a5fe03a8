"""The interface between the one training loop (`rnnlm.train`) and a task.

A task is built from a config, a workdir and the device mesh, having read and
checked its data without writing anything. The loop then asks it, by these names:

    save_files()              write what the run needs beside its checkpoints (tokenizer, data cache)
    model, steps_per_epoch    the Flax module and the optimizer steps of one epoch
    batch_shape               (rows, tokens per row) of one training batch on one device
    initial_carry()           the state that flows between a stream's batches, at an epoch's start
    loss(params, carry, batch, rng) -> (loss, (carry, sums))
                              the training objective of one batch; `sums` holds `nll_sum` (summed
                              negative log-likelihood) and the task's counts, summed into log records
    epoch(epoch)              a function position -> this process's rows of that batch
    steps_in_epoch(epoch)     that epoch's steps (steps_per_epoch unless its batches vary, e.g. drawn
                              window lengths)
    start(state, log)         a fresh run's first actions (none for most tasks)
    describe(parameters)      the lines printed when training starts
    train_metrics(totals)     a train log record's task fields, from the summed `sums`
    evaluate(params, split)   metrics of a whole split
    selection_score(metrics)  lower is better: the checkpoint kept as "best"
    epoch_record(metrics), describe_epoch(metrics)   what an epoch's validation logs and prints
    finish(state, context)    the final evaluation and report, returns the results

`Run` is what `rnnlm.load_run(workdir)` returns for the task: config, tokenizer,
model, parameters, step, and the task's own methods (`evaluate`, `generate`,
`predict`).
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any, Callable


class Task:
    """See the module docstring; `rnnlm.tasks.lm.LanguageModelTask` and `rnnlm.tasks.classify.ClassifierTask`."""

    name: str
    position_name: str  # what a position within an epoch is called in messages ("window", "batch")
    unit: str  # what train records count per second ("tokens", "examples"): a key of `sums`
    model: Any
    steps_per_epoch: int
    batch_shape: tuple[int, int]

    def save_files(self) -> None: ...
    def initial_carry(self): ...
    def loss(self, params, carry, batch, rng): ...
    def epoch(self, epoch: int) -> Callable[[int], dict]: ...
    def start(self, state, log): return state
    def steps_in_epoch(self, epoch: int) -> int: return self.steps_per_epoch
    def describe(self, parameters: int) -> list[str]: ...
    def train_metrics(self, totals: dict) -> dict: ...
    def evaluate(self, params, split: str) -> dict: ...
    def selection_score(self, metrics: dict) -> float: ...
    def epoch_record(self, metrics: dict) -> dict: ...
    def describe_epoch(self, metrics: dict) -> str: ...
    def finish(self, state, context: "Context") -> dict: ...


@dataclasses.dataclass
class Context:
    """Where the loop stopped, handed to `Task.finish`."""

    step: int
    epoch: int
    position: int
    valid: dict | None  # the last epoch's validation, if it scored the final parameters
    best_step: int | None  # the checkpoint kept as best, if any epoch ended
    restore_params: Callable  # step -> that checkpoint's parameters
    log: Any  # the run's MetricLog
    say: Callable


@dataclasses.dataclass
class Run:
    """A saved run, read-only (`rnnlm.load_run`)."""

    workdir: pathlib.Path
    config: Any
    tokenizer: Any
    model: Any
    params: Any
    step: int
