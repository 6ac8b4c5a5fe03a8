"""TensorBoard event files beside metrics.jsonl, so `tensorboard --logdir runs` shows every run.

`MetricLog` (rnnlm/workdir.py) hands each record here too: its numbers become
scalars tagged `<split>/<name>` (`train/loss`, `valid/perplexity`, ...) at the
record's step, written with tensorboardX's `SummaryWriter` and flushed per
record (records come only on log steps).

Resuming opens a new event file with `purge_step` = restored step + 1:
TensorBoard then drops the older events from that step on, as
`MetricLog.truncate_after` drops the JSON records.
"""

from __future__ import annotations

import itertools
import logging
import os

_counter = itertools.count()


class EventFile:
    def __init__(self, logdir):
        self.logdir = str(logdir)
        self.purge_step: int | None = None
        self.writer = None
        self.broken = False

    def purge_from(self, step: int) -> None:
        """Events at `step` and later from earlier files are void (takes effect with the next file)."""
        self.purge_step = step

    def write(self, record: dict) -> None:
        if self.broken:
            return
        if self.writer is None:
            try:
                from tensorboardX import SummaryWriter
            except ImportError as e:  # a declared dependency; without it the JSON log still works
                logging.warning("no TensorBoard events (%s); metrics.jsonl is still written", e)
                self.broken = True
                return
            # A unique suffix: two writers opened in the same second must not share a file name.
            self.writer = SummaryWriter(self.logdir, purge_step=self.purge_step,
                                        filename_suffix=f".{os.getpid()}.{next(_counter):04d}")
        split, step = record.get("split", "train"), int(record["step"])
        for key, value in record.items():
            if key not in ("step", "split") and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(f"{split}/{key}", float(value), step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
