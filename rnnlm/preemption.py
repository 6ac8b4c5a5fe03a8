"""SIGTERM -> "checkpoint now and exit 0": what TPU maintenance events and most schedulers send (and
the first Ctrl-C: the same; a second one stops at once).

One process: a signal handler sets a flag that the train loop reads after each
step (no host sync). Several processes: JAX's distributed runtime already
watches for preemption notices; `reached_preemption_sync_point` makes every
process stop at the same step.
"""

from __future__ import annotations

import signal
import sys
import threading

import jax


class Preempted(Exception):
    """SIGTERM after training was saved (during the final evaluation): nothing is lost, exit 0."""


def exit_cleanly_on_sigterm() -> None:
    """Before and after training (start-up, compilation, final evaluation) a SIGTERM loses nothing: exit 0."""
    def handle(signum, frame):
        raise Preempted("SIGTERM outside the training loop; nothing unsaved was lost, rerun the same command")

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handle)


class PreemptionWatch:
    """A context manager; `.requested(step)` says whether to checkpoint and stop at this step.

    Once training is over and saved, `training_done()` makes a later SIGTERM raise
    `Preempted` at once: the final evaluation is cheap to redo, so there is no
    reason to make the scheduler wait for it.
    """

    def __init__(self):
        self.signalled = False
        self.raise_on_signal = False
        self.reason = "preempted (SIGTERM)"
        self._previous = {}

    def __enter__(self):
        if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
            self._previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, self._handle),
                              signal.SIGINT: signal.signal(signal.SIGINT, self._interrupt)}
        return self

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        return False

    def _handle(self, signum, frame):
        self.signalled = True
        if self.raise_on_signal:
            raise Preempted(f"{self.reason} after training was saved; rerun the same command to evaluate")

    def _interrupt(self, signum, frame):
        """The first Ctrl-C saves at the next step, as SIGTERM does; a second one interrupts at once."""
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if not self.raise_on_signal:
            print("\nrnnlm: Ctrl-C: saving at the next step (press it again to stop without saving)", file=sys.stderr)
        self.reason = "preempted (Ctrl-C)"
        self._handle(signum, frame)

    def training_done(self) -> None:
        self.raise_on_signal = True
        if self.signalled:
            raise Preempted(f"{self.reason} after training was saved; rerun the same command to evaluate")

    def requested(self, step: int) -> bool:
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            return bool(multihost_utils.reached_preemption_sync_point(step))
        return self.signalled
