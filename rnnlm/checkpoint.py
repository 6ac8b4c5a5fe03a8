"""Orbax checkpoints in `<workdir>/checkpoints`: the last few plus the best by validation loss.

A checkpoint holds three items:
  * `state`: the train state (step, params, optimizer state incl. learning rate, RNG);
  * `carry`: the recurrent state of every train stream, so a mid-epoch resume
    continues the streams exactly where they were;
  * `meta`: JSON with the data position (epoch, next window), the host-side
    learning-rate controller, and the training seconds spent so far.

Restore order (the only one): the step asked for ("best" or a number), else the
latest step. The arrays are restored onto the shardings of a freshly built
state, so a run resumes on whatever mesh it is started with.
"""

from __future__ import annotations

import pathlib

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

from rnnlm.errors import UserError

BEST_METRIC = "valid_loss"


def _abstract(tree):
    return jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, tree)


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
        metrics = None if valid_loss is None else {BEST_METRIC: float(valid_loss)}
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            carry=ocp.args.StandardSave(carry),
            meta=ocp.args.JsonSave(meta),
        ), metrics=metrics, force=True)

    def restore(self, step: int, state_like, carry_like=None):
        """Restore onto the structure, dtypes and shardings of the given example trees."""
        items = {"state": ocp.args.StandardRestore(_abstract(state_like)), "meta": ocp.args.JsonRestore()}
        if carry_like is not None:
            items["carry"] = ocp.args.StandardRestore(_abstract(carry_like))
        restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        return restored["state"], restored.get("carry") if carry_like is not None else None, restored["meta"]

    def restore_params(self, step: int, params_like):
        """Just the parameters (for eval and generate): the rest of the state is skipped."""
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.PyTreeRestore(
                item={"params": _abstract(params_like)},
                restore_args=ocp.checkpoint_utils.construct_restore_args({"params": _abstract(params_like)}),
                partial_restore=True,
            )))
        return restored["state"]["params"]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()
