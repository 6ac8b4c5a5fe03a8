"""The one training loop, for every task: `train_and_evaluate(config, workdir)`.

What differs between a language model and a classifier (data, model, loss,
evaluation, the checkpoint kept as best, the report) sits behind
`rnnlm.tasks.base.Task`; everything else is written once, here:

    1. set-up and checks: config, mesh, data, whether the step fits in memory; nothing is
       written before all of it passed
    2. the run's files: config.json, the task's tokenizer and data cache
    3. model, optimizer, train state
    4. restore: the newest readable checkpoint (the one order: rnnlm/checkpoint.py)
    5. steps: one jitted, donated `train_step`; metrics summed on device and fetched on
       log steps only; periodic log records and checkpoints; a validation and a
       checkpoint at every epoch's end
    6. stop rules every process agrees on (max steps; the time budget, process 0's
       clock decides); SIGTERM: checkpoint and exit; a non-finite loss or gradient
       stops the run naming its first step, or is skipped and counted
    7. the task's final evaluation and report
"""

from __future__ import annotations

import contextlib
import functools
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from jax.experimental import multihost_utils

from rnnlm import optim, sharding
from rnnlm.checkpoint import Checkpoints
from rnnlm.config import validate
from rnnlm.errors import UserError
from rnnlm.fast import huge_pages
from rnnlm.preemption import PreemptionWatch
from rnnlm.state import TrainState, check_fits, create_train_state
from rnnlm.tasks.base import Context
from rnnlm.tasks.registry import get_task
from rnnlm.workdir import MetricLog, WorkdirLock, check_writable, logged_records, make_workdir, reconcile_config

NO_STEP = np.iinfo(np.int32).max  # "no non-finite step yet"
INT_METRICS = ("steps", "nonfinite", "first_nonfinite_step")  # the step metrics that are counts


# --- the step ---------------------------------------------------------------------------

def train_step(state: TrainState, carry, batch, *, loss_fn, tx, skip_nonfinite: bool = False):
    """One optimizer step: (state, carry, batch) -> (state, carry for the next batch, metrics).

    loss_fn(params, carry, batch, rng) -> (loss, (new carry, sums)) is the task's objective. A
    non-finite loss or gradient is counted in the metrics (with the first step it happened at);
    with skip_nonfinite the update is then dropped, otherwise the host stops the run at its next
    sync, before anything is saved.
    """
    dropout_rng = jax.random.fold_in(state.rng, state.step)
    (_, (new_carry, sums)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, carry, batch,
                                                                              dropout_rng)
    # A drawn window's update is scaled by its length / bptt (AWD-LSTM's learning-rate scaling).
    scale = jnp.mean(batch["lr_scale"]) if "lr_scale" in batch else None
    params, opt_state, grad_norm, finite = optim.apply_gradients(tx, grads, state.opt_state, state.params,
                                                                 sums["nll_sum"], skip_nonfinite, scale)
    if skip_nonfinite:
        new_carry = jax.tree_util.tree_map(lambda new, old: jnp.where(finite, new, old), new_carry, carry)
    state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    if state.average is not None:
        state = state.replace(average=optim.update_average(state.average, params, finite))
    metrics = {name: jnp.where(finite, value, 0.0) for name, value in sums.items()}
    metrics.update(grad_norm=jnp.where(finite, grad_norm, 0.0), steps=jnp.int32(1),
                   nonfinite=(~finite).astype(jnp.int32), first_nonfinite_step=jnp.where(finite, NO_STEP, state.step))
    return state, new_carry, metrics


def compile_train_step(loss_fn, tx, mesh, carry, skip_nonfinite: bool = False):
    """`train_step` bound to a loss and optimizer, compiled with explicit shardings.

    State in and out replicated, batch split on the batch axis, the carry where it lives
    (a language model's streams: split on the batch axis too), metrics replicated; state and
    carry are donated (updated in place).
    """
    replicated, split = sharding.replicated(mesh), sharding.batch_sharded(mesh)
    carry_sharding = jax.tree_util.tree_map(lambda leaf: leaf.sharding, carry)
    return jax.jit(functools.partial(train_step, loss_fn=loss_fn, tx=tx, skip_nonfinite=skip_nonfinite),
                   in_shardings=(replicated, carry_sharding, split), out_shardings=(replicated, carry_sharding, replicated),
                   donate_argnums=(0, 1))


@functools.partial(jax.jit, donate_argnums=(0,))
def _accumulate(total, metrics):
    return {k: jnp.minimum(total[k], v) if k == "first_nonfinite_step" else total[k] + v
            for k, v in metrics.items()}


class PendingMetrics:
    """Step metrics summed on device since the last log record, fetched only when needed.

    A checkpoint between two log steps stores the sums, so a resumed run writes
    the same records as an uninterrupted one.
    """

    def __init__(self, saved: dict | None = None):
        self.sums = None
        if saved:
            saved = {"first_nonfinite_step": int(NO_STEP), **saved}  # checkpoints from before it was counted
            self.sums = {k: jnp.asarray(v, jnp.int32 if k in INT_METRICS else jnp.float32) for k, v in saved.items()}
        self.started = time.perf_counter()

    def add(self, metrics) -> None:
        """Running sums on device (one dispatch); the first non-finite step is a minimum."""
        self.sums = metrics if self.sums is None else _accumulate(self.sums, metrics)

    def fetch(self) -> dict | None:
        return None if self.sums is None else {k: v.item() for k, v in jax.device_get(self.sums).items()}


# --- stop rules ---------------------------------------------------------------------------

def stop_reason(config, step: int, seconds: float, check_clock: bool = True) -> str | None:
    """Why training should stop now, if it should. Every process reaches the same answer: the
    time budget is process 0's clock, broadcast (so checked on log steps only: it is a sync)."""
    if config.train.max_steps and step >= config.train.max_steps:
        return f"reached train.max_steps={config.train.max_steps}"
    if config.train.time_budget_minutes and check_clock:
        over = seconds >= 60 * config.train.time_budget_minutes
        if jax.process_count() > 1:  # clocks differ between hosts: process 0 decides for all
            over = bool(multihost_utils.broadcast_one_to_all(np.array(over)))
        if over:
            return f"reached train.time_budget_minutes={config.train.time_budget_minutes}"
    return None


def _report_stop(stop: str | None, step: int, checkpoints, log, say) -> bool:
    """Say why training stopped; on preemption also close the checkpoints and the log and return True."""
    if stop and stop.startswith("preempted"):
        say(f"preempted: checkpoint of step {step} written to {checkpoints.directory}; rerun the same command to resume")
        checkpoints.close()
        log.close()
        return True
    if stop:
        say(f"stopped: {stop}")
    return False


# --- the loop -------------------------------------------------------------------------------

def train_and_evaluate(config, workdir) -> dict:
    """Train (or resume) the run in `workdir`, then evaluate and report it.

    Returns the task's results ({"step", "best_step", "valid", "test"}, valid and test scored at the
    checkpoint kept as best; a language model adds "final" (the final parameters' scores, when they are
    not the best) and "sample"); {"step", "preempted": True} when a
    SIGTERM or Ctrl-C stopped it (a checkpoint of that step is written first); a finished run's
    saved results, without training or evaluating again, when it is rerun unchanged.
    """
    with contextlib.ExitStack() as held:  # the workdir's lock, from step 2 to the end, however it ends
        return _train_and_evaluate(config, pathlib.Path(workdir), held)


def _train_and_evaluate(config, workdir: pathlib.Path, held: contextlib.ExitStack) -> dict:
    # 1. Set-up and checks: nothing is written until all of them passed.
    train_config = config.train
    validate(config)
    is_writer = jax.process_index() == 0  # the one process that writes files and prints
    say = print if is_writer else (lambda *args, **kwargs: None)
    mesh = sharding.make_mesh(train_config.num_devices)
    sharding.check_batch_size(train_config.batch_size, mesh)
    sharding.check_batch_size(config.eval.batch_size, mesh, "eval.batch_size")
    check_writable(workdir)
    if (workdir / "config.json").exists():
        reconcile_config(config, workdir, write=False)  # refuse a mismatched run before reading data
    task = get_task(config.task)(config, workdir, mesh)
    steps_per_epoch = task.steps_per_epoch
    total_steps = train_config.max_steps or train_config.epochs * steps_per_epoch
    tx = optim.make_optimizer(train_config, total_steps)
    check_fits(task.model, tx, task.batch_shape)
    start_params = finetune_start(config, workdir, task)

    # 2. The run's files.
    make_workdir(workdir)
    if is_writer:
        held.enter_context(WorkdirLock(workdir))
    reconcile_config(config, workdir, write=is_writer)
    if is_writer:
        task.save_files()

    # 3. Model, optimizer, state.
    state = create_train_state(task.model, tx, config.seed, mesh, train_config.averaging, start_params)
    carry = task.initial_carry()
    controller = optim.LearningRateController.from_config(train_config)
    averaging = optim.Averaging.from_config(train_config)
    log = MetricLog(workdir / "metrics.jsonl", enabled=is_writer)
    checkpoints = Checkpoints(workdir, keep=train_config.keep_checkpoints)

    # 4. Restore.
    epoch, position, seconds, pending = 0, 0, 0.0, PendingMetrics()
    restored = checkpoints.restore_latest_good(state, carry)
    if restored is not None:
        step, state, carry, meta = restored
        epoch, seconds = meta["epoch"], meta["train_seconds"]
        position = meta.get("position", meta.get("window", meta.get("batch")))  # older runs: per-task names
        controller = optim.LearningRateController.from_config(train_config, meta["lr"])
        averaging = optim.Averaging.from_config(train_config, meta.get("averaging"))
        pending = PendingMetrics(meta.get("pending"))
        finished = _finished_results(workdir, step) if (
            epoch >= train_config.epochs or stop_reason(config, step, seconds)) else None
        if jax.process_count() > 1:  # process 0 writes the log: its reading decides for every process
            complete = multihost_utils.broadcast_one_to_all(np.array(finished is not None))
            finished = (finished or {"step": step, "complete": True}) if bool(complete) else None
        if finished is not None:  # rerun unchanged: nothing to train, the results are already logged
            say(f"{workdir}: the run is complete (step {step}); its results are in metrics.jsonl. Nothing to do "
                f"(more train.epochs or train.max_steps continue it)")
            checkpoints.close()
            log.close()
            return finished
        log.truncate_after(step)
        say(f"resumed from step {step} (epoch {epoch + 1}, {task.position_name} {position})")
        notice = optim.horizon_notice(train_config, total_steps, step, state.opt_state)
        if notice:
            say(notice)
    else:
        state = task.start(state, log)
    for line in task.describe(sum(x.size for x in jax.tree_util.tree_leaves(state.params))):
        say(line)
    if huge_pages.active():
        say(huge_pages.NOTICE)

    # 5. Steps.
    compiled_step = compile_train_step(task.loss, tx, mesh, carry, train_config.skip_nonfinite)
    skipped = 0

    def save(totals, valid_score=None):
        meta = {"epoch": epoch, "position": position, "train_seconds": seconds, "lr": controller.to_dict(),
                "pending": totals, "averaging": averaging.to_dict()}
        checkpoints.save(step, state, carry, meta, valid_loss=valid_score)

    def check_finite(totals):
        nonlocal skipped
        if totals and totals["nonfinite"]:
            if not train_config.skip_nonfinite:
                checkpoints.wait()
                raise UserError(f"non-finite loss or gradient at step {totals['first_nonfinite_step']}; "
                                f"the last good checkpoint is step {checkpoints.latest_step()} in "
                                f"{checkpoints.directory} (set train.skip_nonfinite=True to skip such steps)")
            skipped += totals["nonfinite"]

    step = int(state.step)
    stop = stop_reason(config, step, seconds)
    valid, valid_step = None, None  # the last validation and the step it scored
    with PreemptionWatch() as preemption:
        while epoch < train_config.epochs and stop is None:
            rate = controller.start_epoch(epoch)
            if rate is not None:
                state = state.replace(opt_state=optim.set_learning_rate(state.opt_state, rate))
            if position == 0:
                carry = task.initial_carry()
            batch_at = task.epoch(epoch)
            steps_per_epoch = task.steps_in_epoch(epoch)  # drawn window lengths: each epoch its own count
            tick = pending.started = time.perf_counter()
            # The bar is cleared on any exit, so that an error prints on a line of its own.
            with tqdm.tqdm(total=steps_per_epoch, initial=position, desc=f"epoch {epoch + 1}/{train_config.epochs}",
                           disable=not is_writer, leave=False, dynamic_ncols=True) as bar:
                while position < steps_per_epoch:
                    state, carry, metrics = compiled_step(state, carry, sharding.shard_batch(batch_at(position), mesh))
                    pending.add(metrics)
                    step, position = step + 1, position + 1
                    bar.update(1)
                    logged = step % train_config.log_every == 0 or position == steps_per_epoch
                    stop = preemption.reason if preemption.requested(step) else stop_reason(
                        config, step, seconds + time.perf_counter() - tick, check_clock=logged)
                    due = position < steps_per_epoch and (
                        stop or (train_config.checkpoint_every and step % train_config.checkpoint_every == 0))
                    if not (logged or due):
                        continue
                    totals = pending.fetch()  # the only host sync: log steps and checkpoints
                    check_finite(totals)
                    now = time.perf_counter()
                    seconds, tick = seconds + now - tick, now
                    if logged:
                        record = {"step": step, "epoch": epoch + position / steps_per_epoch, "split": "train",
                                  "train_seconds": seconds,
                                  **task.train_metrics(totals),
                                  "grad_norm": totals["grad_norm"] / max(totals["steps"] - totals["nonfinite"], 1),
                                  "learning_rate": optim.current_learning_rate(state.opt_state),
                                  f"{task.unit}_per_sec": totals[task.unit] / max(now - pending.started, 1e-9)}
                        pending = PendingMetrics()
                        log.write(record)
                        bar.set_postfix(loss=f"{record['loss']:.3f}")
                    if due:  # mid-epoch; epoch ends are saved below with the validation score
                        score = None
                        if stop and not stop.startswith("preempted"):  # the last parameters may be the best
                            valid, valid_step = task.evaluate(optim.evaluation_params(state), "valid"), step
                            log.write({"step": step, "epoch": epoch + position / steps_per_epoch, "split": "valid",
                                       "train_seconds": seconds,
                                       **task.epoch_record(valid)})
                            score = task.selection_score(valid)
                        save(None if logged else totals, valid_score=score)
                    if stop:
                        break
            if position == steps_per_epoch:
                epoch, position = epoch + 1, 0
                valid = task.evaluate(optim.evaluation_params(state), "valid")
                controller.end_epoch(valid["loss"])
                if averaging.should_start(task.selection_score(valid), step, epoch):
                    state = state.replace(average=optim.start_averaging(state.average))
                    say(f"averaging: on from step {step} " + (
                        f"(the end of epoch {epoch})" if averaging.mode == "epoch" else
                        f"(validation did not improve on the best before the last {train_config.nonmono} epochs)"))
                log.write({"step": step, "epoch": epoch, "split": "valid", "train_seconds": seconds,
                           **task.epoch_record(valid)})
                say(f"epoch {epoch}: {task.describe_epoch(valid)}")
                valid_step = step
                save(None, valid_score=task.selection_score(valid))
        # 6. Stop, preemption.
        checkpoints.wait()
        if skipped:
            say(f"skipped {skipped} step(s) with a non-finite loss or gradient")
        if _report_stop(stop, step, checkpoints, log, say):
            return {"step": step, "preempted": True}
        preemption.training_done()

        # 7. The task's final evaluation and report.
        best_step = checkpoints.best_step()
        checkpoints.close()
        context = Context(step=step, epoch=epoch, position=position,
                          valid=valid if valid_step == step else None, best_step=best_step,
                          restore_params=functools.partial(_restore_params, workdir, state.params), log=log, say=say)
        # Evaluation reads the average once it holds an iterate (`rnnlm.optim.evaluation_params`).
        results = task.finish(state.replace(params=optim.evaluation_params(state)), context)
        log.close()
        return results


def finetune_start(config, workdir: pathlib.Path, task):
    """The parameters a fresh run with train.init_from starts from: that finished run's best checkpoint
    (its average, where it averaged), as AWD-LSTM's finetune.py; read only, so its checkpoints stay as they
    are. None without init_from, or when this run already has a checkpoint to resume."""
    if not config.train.init_from:
        return None
    source = pathlib.Path(config.train.init_from).expanduser()
    if source.resolve() == workdir.resolve():
        raise UserError(f"train.init_from is this run's own workdir {workdir}; finetune into a new --workdir "
                        f"(the original's checkpoints are kept as they are)")
    if any((workdir / "checkpoints").glob("[0-9]*")):
        return None  # resuming the finetune itself
    from rnnlm.data.tokenizers import load_tokenizer
    from rnnlm.state import load_params
    if not (source / "checkpoints").is_dir() or not (source / "tokenizer.json").is_file():
        raise UserError(f"train.init_from: no finished run in {source} (no checkpoints/ and tokenizer.json); "
                        f"train it first, or point --config.train.init_from at one")
    tokenizer = getattr(task, "tokenizer", None)
    if tokenizer is not None and load_tokenizer(source / "tokenizer.json").to_dict() != tokenizer.to_dict():
        raise UserError(f"train.init_from: {source} was trained with another vocabulary than this run's data gives")
    params, step = load_params(source, task.model, "best")
    print(f"finetune: starting from {source}, checkpoint {step} (best)")
    return params


def _finished_results(workdir, step: int) -> dict | None:
    """{"step", "valid", "test", "complete": True} from the log of a run whose final evaluation at `step`
    was written, else None (it stopped before it: train on, or evaluate, as usual)."""
    final = {}
    for record in logged_records(workdir):
        if record.get("step") == step and record.get("split") in ("valid", "test", "valid_best", "test_best"):
            final[record["split"].removesuffix("_best")] = record  # the best checkpoint's, when logged after the final's
    if "test" not in final:
        return None
    strip = lambda record: {k: v for k, v in record.items() if k not in ("step", "epoch", "split", "best_step")}
    return {"step": step, "valid": strip(final.get("valid", {})), "test": strip(final["test"]), "complete": True}


def _restore_params(workdir, params_like, step: int):
    # A fresh reader: the training manager has its handlers bound to full states.
    reader = Checkpoints(workdir, read_only=True)
    try:
        return reader.restore_params(step, params_like)
    finally:
        reader.close()
