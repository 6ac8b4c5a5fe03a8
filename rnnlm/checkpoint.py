"""Orbax checkpoints in `<workdir>/checkpoints`: the last few plus the best by validation loss.

A checkpoint holds three items:
  * `state`: the train state (step, params, optimizer state incl. learning rate, RNG, and the
    average of the iterates where `train.averaging` keeps one: what eval and generate then read);
  * `carry`: the recurrent state of every train stream, so a mid-epoch resume
    continues the streams exactly where they were;
  * `meta`: JSON with the data position (epoch, next window), the host-side
    learning-rate controller, the metric sums not yet logged, the training
    seconds spent so far, and a sha256 fingerprint of the saved arrays.

Restore order (the only one): resuming training takes the latest step; if it
cannot be read or its arrays do not match their fingerprint, it is moved to
`<workdir>/checkpoints-damaged/` (never deleted) and the next older step is
tried. `eval` and `generate` take the step asked for ("latest", "best" or a
number) and refuse a damaged one. Arrays are restored onto the shardings of a
freshly built state, so a run resumes on whatever mesh it is started with.

Orbax writes each step into a temporary directory and renames it when complete,
so a save interrupted by a kill is never listed as a step.
"""

from __future__ import annotations

import hashlib
import logging
import pathlib
import shutil
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

from rnnlm.errors import UserError


def multihost_sync(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)

BEST_METRIC = "valid_loss"


def _abstract(tree):
    return jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, tree)


def _reason(error: Exception) -> str:
    """The first line of a reading error, without the TensorStore spec it appends (a page of JSON)."""
    text = str(error).splitlines()[0] if str(error) else repr(error)
    clauses = text.split(" [tensorstore_spec", 1)[0].split(" [os_error_code", 1)[0].split(": ")
    # TensorStore nests one clause per driver layer: the code and the innermost two say what broke.
    return ": ".join(clauses if len(clauses) <= 3 else [clauses[0], "...", *clauses[-2:]])


def fingerprint(tree) -> str:
    """sha256 of the arrays' bytes (replicated arrays: this process's copy)."""
    digest = hashlib.sha256()
    for leaf in jax.tree_util.tree_leaves(tree):
        digest.update(np.asarray(jax.device_get(leaf)).tobytes())
    return digest.hexdigest()


class DamagedCheckpoint(Exception):
    pass


class Checkpoints:
    def __init__(self, workdir: pathlib.Path, keep: int = 3, read_only: bool = False):
        policy = checkpoint_managers.AnyPreservationPolicy([
            checkpoint_managers.LatestN(n=max(keep, 1)),
            checkpoint_managers.BestN(get_metric_fn=lambda m: m[BEST_METRIC], reverse=True, n=1,
                                      keep_checkpoints_without_metrics=False),
        ])
        options = ocp.CheckpointManagerOptions(
            preservation_policy=policy,
            best_fn=lambda m: m[BEST_METRIC],
            best_mode="min",
            read_only=read_only,
            create=not read_only,
        )
        self.directory = pathlib.Path(workdir).absolute() / "checkpoints"
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_names=("state", "carry", "meta"))
        self._writing = None  # the step whose asynchronous save may still be running

    def latest_step(self):
        return self.manager.latest_step()

    def best_step(self):
        return self.manager.best_step()

    def resolve(self, which: str = "latest") -> int:
        """'latest', 'best' or a step number -> an existing step, or a UserError."""
        if which == "latest":
            step = self.latest_step()
        elif which == "best":
            step = self.best_step()
        else:
            step = int(which) if str(which).isdigit() else None
            if step not in self.manager.all_steps():
                raise UserError(f"no checkpoint {which!r} in {self.directory}; have {self.manager.all_steps()}")
        if step is None:
            raise UserError(f"no checkpoint in {self.directory}")
        return step

    def save(self, step: int, state, carry, meta: dict, valid_loss: float | None = None) -> None:
        """Start an (async) save; a failure to write stops the run with a UserError."""
        metrics = None if valid_loss is None else {BEST_METRIC: float(valid_loss)}
        prints = {"params": fingerprint(state.params), "state": fingerprint(state)}
        average = getattr(state, "average", None)
        if average is not None and int(average["count"]) > 0:  # eval and generate read the average
            prints["average"] = fingerprint(average["params"])
        meta = dict(meta, fingerprint=prints)
        self.wait()  # the previous save's failure is that step's, not this one's
        self._writing = step
        try:
            self.manager.save(step, args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                carry=ocp.args.StandardSave(carry),
                meta=ocp.args.JsonSave(meta),
            ), metrics=metrics, force=True)
        except Exception as e:  # noqa: BLE001 - any failure to write must stop training, not be logged and ignored
            raise UserError(f"cannot write the checkpoint of step {step} to {self.directory}: {_reason(e)}") from None

    def _read(self, step: int, state_target, carry_like):
        items = {"state": ocp.args.StandardRestore(state_target), "meta": ocp.args.JsonRestore(),
                 "carry": ocp.args.StandardRestore(_abstract(carry_like))}
        return self.manager.restore(step, args=ocp.args.Composite(**items))

    def _restore(self, step: int, state_like, carry_like):
        try:
            restored = self._read(step, _abstract(state_like), carry_like)
        except Exception as e:  # noqa: BLE001 - Orbax/TensorStore raise many types for damaged files
            if getattr(state_like, "average", None) is not None or "average" not in str(e):
                raise DamagedCheckpoint(f"step {step} cannot be read: {_reason(e)}")
            # Written before the train state had an `average` field: the same four fields, no average.
            target = _abstract(state_like)
            try:
                restored = self._read(step, {name: getattr(target, name) for name in ("step", "params", "opt_state",
                                                                                       "rng")}, carry_like)
            except Exception:  # noqa: BLE001
                raise DamagedCheckpoint(f"step {step} cannot be read: {_reason(e)}")
            restored = {"state": state_like.replace(**restored["state"]), "carry": restored["carry"],
                        "meta": restored["meta"]}
        expected = (restored["meta"] or {}).get("fingerprint", {}).get("state")
        if expected is not None and expected != fingerprint(restored["state"]):  # None: saved before fingerprints
            raise DamagedCheckpoint(f"step {step}: the arrays do not match the fingerprint written with them")
        return restored["state"], restored["carry"], restored["meta"]

    def restore_latest_good(self, state_like, carry_like):
        """(step, state, carry, meta) of the newest readable checkpoint, or None if there is none.

        Damaged steps are moved aside (process 0 moves; every process skips them).
        """
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                return (step, *self._restore(step, state_like, carry_like))
            except DamagedCheckpoint as e:
                logging.warning("checkpoint %s; moving it to %s and trying an older one", e, self.quarantine)
                if jax.process_index() == 0:
                    self.quarantine.mkdir(parents=True, exist_ok=True)
                    shutil.move(str(self.directory / str(step)), str(self.quarantine / f"{step}-{int(time.time())}"))
                multihost_sync("quarantine")
                self.manager.reload()
        if self.quarantine.exists() and any(self.quarantine.iterdir()):
            raise UserError(f"no readable checkpoint in {self.directory}; damaged ones are in {self.quarantine}")
        return None

    @property
    def quarantine(self) -> pathlib.Path:
        return self.directory.parent / "checkpoints-damaged"

    def restore_params(self, step: int, params_like):
        """Just the parameters evaluation reads (for eval and generate), checked against their fingerprint:
        the average of the iterates where the run averages and has averaged a step, else the parameters."""
        try:
            meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"] or {}
            averaged = "average" in meta.get("fingerprint", {})
            item = {"average": {"params": _abstract(params_like)}} if averaged else {"params": _abstract(params_like)}
            restored = self.manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.PyTreeRestore(
                    item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item), partial_restore=True)))
        except Exception as e:  # noqa: BLE001
            raise UserError(f"checkpoint {step} in {self.directory} cannot be read: {_reason(e)}") from None
        params = restored["state"]["average"]["params"] if averaged else restored["state"]["params"]
        expected = meta.get("fingerprint", {}).get("average" if averaged else "params")
        if expected is not None and expected != fingerprint(params):  # None: saved before fingerprints
            raise UserError(f"checkpoint {step} in {self.directory} is damaged: its parameters do not match "
                            f"their fingerprint")
        return params

    def wait(self) -> None:
        try:
            self.manager.wait_until_finished()
        except Exception as e:  # noqa: BLE001 - an async write that failed
            raise UserError(f"cannot write the checkpoint of step {self._writing} to {self.directory}: "
                            f"{_reason(e)}") from None

    def close(self) -> None:
        self.manager.close()
