"""Training and evaluation of a language model: `train_and_evaluate(config, workdir)`.

One pure `train_step(state, carry, batch) -> (state, carry, metrics)`, jitted
once with the state and carry donated; configuration is bound with
`functools.partial` before `jit`. Metrics stay on device and are summed and
fetched only on log steps.
"""

from __future__ import annotations

import functools
import math
import pathlib
import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from jax.experimental import multihost_utils

from rnnlm import decoder_loss, optim, sharding
from rnnlm.checkpoint import Checkpoints
from rnnlm.config import validate
from rnnlm.data.batching import make_streams
from rnnlm.errors import UserError
from rnnlm.metrics import split_units, with_per_unit_metrics
from rnnlm.models import count_params, language_model_from_config
from rnnlm.preemption import PreemptionWatch
from rnnlm.sampling import sample_text
from rnnlm.workdir import MetricLog, load_data, reconcile_config, save_data

LN2 = math.log(2.0)
NO_STEP = np.iinfo(np.int32).max  # "no non-finite step yet"


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array  # raw uint32 key; dropout uses fold_in(rng, step)


def create_train_state(model, tx, seed: int, mesh) -> TrainState:
    init_key, dropout_key = jax.random.split(jax.random.PRNGKey(seed))
    tokens = jnp.zeros((1, 1), jnp.int32)

    def init():
        params = model.init({"params": init_key}, tokens, model.initial_carry(1))["params"]
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), rng=dropout_key)

    # Built directly with replicated shardings: no host copy of the parameters.
    return jax.jit(init, out_shardings=sharding.replicated(mesh))()


def train_step(state: TrainState, carry, batch, *, model, tx, loss: str, skip_nonfinite: bool = False):
    """One optimizer step on a [B, T] window; returns the carry for the next window.

    A non-finite loss or gradient is counted in the metrics (with the first step
    it happened at); with skip_nonfinite the update is then dropped, otherwise the
    host stops the run at its next sync, before anything is saved.
    """
    dropout_rng = jax.random.fold_in(state.rng, state.step)
    weights = batch["weights"]

    def loss_fn(params):
        features, new_carry = model.apply({"params": params}, batch["tokens"], carry, train=True,
                                          rngs={"dropout": dropout_rng}, method=model.features)
        nll_sum = decoder_loss.window_nll(model, params, features, batch["targets"], weights, train=True)
        count = weights.sum()
        # time_sum: sum over time, mean over streams, the scale Zaremba et al.'s lr = 1 expects.
        denominator = weights.shape[0] if loss == "time_sum" else jnp.maximum(count, 1.0)
        return nll_sum / denominator, (new_carry, nll_sum, count)

    (_, (new_carry, nll_sum, count)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    params, opt_state, grad_norm, finite = optim.apply_gradients(tx, grads, state.opt_state, state.params,
                                                                 nll_sum, skip_nonfinite)
    if skip_nonfinite:
        new_carry = jax.tree_util.tree_map(lambda new, old: jnp.where(finite, new, old), new_carry, carry)
    state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    metrics = {"nll_sum": jnp.where(finite, nll_sum, 0.0), "tokens": jnp.where(finite, count, 0.0),
               "grad_norm": jnp.where(finite, grad_norm, 0.0), "steps": jnp.int32(1),
               "nonfinite": (~finite).astype(jnp.int32),
               "first_nonfinite_step": jnp.where(finite, NO_STEP, state.step)}
    return state, new_carry, metrics


@functools.partial(jax.jit, donate_argnums=(0,))
def _accumulate(total, metrics):
    return {k: jnp.minimum(total[k], v) if k == "first_nonfinite_step" else total[k] + v
            for k, v in metrics.items()}


def accumulate(total, metrics):
    """Running sums of step metrics, on device (one dispatch); the first non-finite step is a minimum."""
    return metrics if total is None else _accumulate(total, metrics)


def jit_train_step(model, tx, loss: str, mesh, skip_nonfinite: bool = False):
    """`train_step` bound to its configuration and compiled with explicit shardings.

    State in and out replicated, carry and batch split on the batch axis, metrics
    replicated; state and carry are donated (updated in place).
    """
    replicated, split = sharding.replicated(mesh), sharding.batch_sharded(mesh)
    return jax.jit(functools.partial(train_step, model=model, tx=tx, loss=loss, skip_nonfinite=skip_nonfinite),
                   in_shardings=(replicated, split, split), out_shardings=(replicated, split, replicated),
                   donate_argnums=(0, 1))


def eval_step(params, carry, batch, *, model):
    """(carry, summed NLL, token count) of one [B, T] window (decoder and loss in chunks: rnnlm/decoder_loss.py)."""
    features, carry = model.apply({"params": params}, batch["tokens"], carry, method=model.features)
    weights = batch["weights"]
    return carry, decoder_loss.window_nll(model, params, features, batch["targets"], weights, train=False), weights.sum()


def summarize(nll_sum: float, tokens: float, char_level: bool) -> dict:
    loss = float(nll_sum) / max(float(tokens), 1.0)
    out = {"loss": loss, "perplexity": math.exp(min(loss, 700.0))}
    out["bits_per_char" if char_level else "bits_per_token"] = loss / LN2
    return out


class Evaluator:
    """Stateful scoring of a whole split: the carry flows from window to window."""

    def __init__(self, model, mesh, batch_size: int, bptt: int):
        sharding.check_batch_size(batch_size, mesh, "eval.batch_size")
        self.model, self.mesh, self.batch_size, self.bptt = model, mesh, batch_size, bptt
        self.step = jax.jit(functools.partial(eval_step, model=model), donate_argnums=(1,))

    def __call__(self, params, ids: np.ndarray, char_level: bool) -> dict:
        streams = make_streams(ids, self.batch_size, self.bptt).rows(sharding.local_rows(self.batch_size, self.mesh))
        carry = sharding.zeros_carry(self.model.initial_carry, self.batch_size, self.mesh)
        nll_sum, tokens = jnp.zeros(()), jnp.zeros(())
        for index in range(streams.num_windows):
            carry, window_nll, window_tokens = self.step(params, carry, sharding.shard_batch(streams.window(index), self.mesh))
            nll_sum, tokens = nll_sum + window_nll, tokens + window_tokens
        return summarize(float(nll_sum), float(tokens), char_level)


def _stop_reason(config, step: int, seconds: float, check_clock: bool = True) -> str | None:
    """Why training should stop now, if it should. Every process must reach the same answer."""
    if config.train.max_steps and step >= config.train.max_steps:
        return f"reached train.max_steps={config.train.max_steps}"
    if config.train.time_budget_minutes and check_clock:
        over = seconds >= 60 * config.train.time_budget_minutes
        if jax.process_count() > 1:  # clocks differ between hosts: process 0 decides for all
            over = bool(multihost_utils.broadcast_one_to_all(np.array(over)))
        if over:
            return f"reached train.time_budget_minutes={config.train.time_budget_minutes}"
    return None


def report_stop(stop: str | None, step: int, checkpoints, log, say) -> bool:
    """Say why training stopped; on preemption also close the checkpoints and the log and return True."""
    if stop and stop.startswith("preempted"):
        say(f"preempted: checkpoint of step {step} written to {checkpoints.directory}; rerun the same command to resume")
        checkpoints.close()
        log.close()
        return True
    if stop:
        say(f"stopped: {stop}")
    return False


class _Pending:
    """Step metrics summed on device since the last log record, fetched only when needed.

    A checkpoint between two log steps stores the sums, so a resumed run writes
    the same records as an uninterrupted one.
    """

    def __init__(self, saved: dict | None = None):
        self.sums = None if not saved else {k: jnp.asarray(v, jnp.int32 if k in _INT_METRICS else jnp.float32)
                                             for k, v in saved.items()}
        self.started = time.perf_counter()

    def add(self, metrics) -> None:
        self.sums = accumulate(self.sums, metrics)

    def fetch(self) -> dict | None:
        return None if self.sums is None else {k: v.item() for k, v in jax.device_get(self.sums).items()}


_INT_METRICS = ("steps", "nonfinite", "first_nonfinite_step")


def _train_record(step: int, epoch: float, totals: dict, char_level: bool, opt_state, started: float) -> dict:
    return {"step": step, "epoch": epoch, "split": "train",
            **summarize(totals["nll_sum"], totals["tokens"], char_level),
            "grad_norm": totals["grad_norm"] / max(totals["steps"] - totals["nonfinite"], 1),
            "learning_rate": optim.current_learning_rate(opt_state),
            "tokens_per_sec": totals["tokens"] / max(time.perf_counter() - started, 1e-9)}


def train_and_evaluate(config, workdir) -> dict:
    """Train (or resume) the run in `workdir`, then report validation and test metrics.

    Returns {"step", "valid", "test", "sample"}; {"step", "preempted": True} when
    a SIGTERM stopped it (a checkpoint of that step is written first).
    """
    if config.task == "classify":  # the text classifier has its own loop (rnnlm/classify.py)
        from rnnlm.classify import train_and_evaluate_classifier
        return train_and_evaluate_classifier(config, workdir)
    workdir = pathlib.Path(workdir)
    c = config.train
    validate(config)
    writer = jax.process_index() == 0  # the one process that writes files and prints
    say = print if writer else (lambda *args, **kwargs: None)
    mesh = sharding.make_mesh(c.num_devices)
    sharding.check_batch_size(c.batch_size, mesh)
    sharding.check_batch_size(config.eval.batch_size, mesh, "eval.batch_size")
    if (workdir / "config.json").exists():
        reconcile_config(config, workdir, write=False)  # refuse a mismatched run before reading data
    tokenizer, ids, cached = load_data(config, workdir)
    if config.sample.length and config.sample.prompt:  # a bad prompt fails now, not after training
        tokenizer.encode(config.sample.prompt, strict=True)
    workdir.mkdir(parents=True, exist_ok=True)  # everything is checked: only now is anything written
    reconcile_config(config, workdir, write=writer)
    if writer and not cached:
        save_data(workdir, tokenizer, ids)
    char_level = tokenizer.kind == "char"
    units = split_units(config, workdir, write=writer)  # words and characters per split, for per-word metrics

    model = language_model_from_config(config.model, tokenizer.vocab_size)
    train_streams = make_streams(ids["train"], c.batch_size, c.bptt).rows(sharding.local_rows(c.batch_size, mesh))
    steps_per_epoch = train_streams.num_windows
    tx = optim.make_optimizer(c, c.max_steps or c.epochs * steps_per_epoch)
    state = create_train_state(model, tx, config.seed, mesh)
    carry = sharding.zeros_carry(model.initial_carry, c.batch_size, mesh)
    controller = optim.LearningRateController.from_config(c)
    log = MetricLog(workdir / "metrics.jsonl", enabled=writer)
    checkpoints = Checkpoints(workdir, keep=c.keep_checkpoints)

    epoch, window, seconds, pending = 0, 0, 0.0, _Pending()
    restored = checkpoints.restore_latest_good(state, carry)
    if restored is not None:
        step, state, carry, meta = restored
        epoch, window, seconds = meta["epoch"], meta["window"], meta["train_seconds"]
        controller = optim.LearningRateController.from_config(c, meta["lr"])
        pending = _Pending(meta.get("pending"))
        log.truncate_after(step)
        say(f"resumed from step {step} (epoch {epoch + 1}, window {window})")
    say(f"rnnlm: {config.name}: {tokenizer.kind} tokens, vocab {tokenizer.vocab_size:,}, "
        f"train {len(ids['train']):,} tokens, {steps_per_epoch} steps/epoch, "
        f"{count_params(state.params):,} parameters, {mesh.devices.size} device(s); workdir {workdir}")

    p_train_step = jit_train_step(model, tx, c.loss, mesh, c.skip_nonfinite)
    evaluator = Evaluator(model, mesh, config.eval.batch_size, config.eval.bptt or c.bptt)

    def scored(split):
        """Evaluate a split: per-token metrics plus per-word perplexity and bits per character."""
        return with_per_unit_metrics(evaluator(state.params, ids[split], char_level), len(ids[split]) - 1,
                                     units[split])
    skipped = 0

    def save(totals, valid_loss=None):
        meta = {"epoch": epoch, "window": window, "train_seconds": seconds, "lr": controller.to_dict(),
                "pending": totals}
        checkpoints.save(step, state, carry, meta, valid_loss=valid_loss)

    def check_finite(totals):
        nonlocal skipped
        if totals and totals["nonfinite"]:
            if not c.skip_nonfinite:
                checkpoints.wait()
                raise UserError(f"non-finite loss or gradient at step {totals['first_nonfinite_step']}; "
                                f"the last good checkpoint is step {checkpoints.latest_step()} in "
                                f"{checkpoints.directory} (set train.skip_nonfinite=True to skip such steps)")
            skipped += totals["nonfinite"]

    step = int(state.step)
    stop = _stop_reason(config, step, seconds)
    valid = None
    with PreemptionWatch() as preemption:
        while epoch < c.epochs and stop is None:
            rate = controller.start_epoch(epoch)
            if rate is not None:
                state = state.replace(opt_state=optim.set_learning_rate(state.opt_state, rate))
            if window == 0:
                carry = sharding.zeros_carry(model.initial_carry, c.batch_size, mesh)
            bar = tqdm.tqdm(total=steps_per_epoch, initial=window, desc=f"epoch {epoch + 1}/{c.epochs}",
                            disable=not writer, leave=False, dynamic_ncols=True)
            tick = pending.started = time.perf_counter()
            while window < steps_per_epoch:
                batch = sharding.shard_batch(train_streams.window(window), mesh)
                state, carry, metrics = p_train_step(state, carry, batch)
                pending.add(metrics)
                step, window = step + 1, window + 1
                bar.update(1)
                logged = step % c.log_every == 0 or window == steps_per_epoch
                preempted = preemption.requested(step)
                stop = "preempted (SIGTERM)" if preempted else _stop_reason(
                    config, step, seconds + time.perf_counter() - tick, check_clock=logged)
                due = window < steps_per_epoch and (stop or (c.checkpoint_every and step % c.checkpoint_every == 0))
                if not (logged or due):
                    continue
                totals = pending.fetch()  # the only host sync: log steps and checkpoints
                check_finite(totals)
                now = time.perf_counter()
                seconds, tick = seconds + now - tick, now
                if logged:
                    record = _train_record(step, epoch + window / steps_per_epoch, totals, char_level,
                                           state.opt_state, pending.started)
                    pending = _Pending()
                    log.write(record)
                    bar.set_postfix(loss=f"{record['loss']:.3f}", tok_s=f"{record['tokens_per_sec']:,.0f}")
                if due:  # mid-epoch; epoch ends are saved below with the validation loss
                    save(None if logged else totals)
                if stop:
                    break
            bar.close()
            if window == steps_per_epoch:
                epoch, window = epoch + 1, 0
                valid = scored("valid")
                controller.end_epoch(valid["loss"])
                log.write({"step": step, "epoch": epoch, "split": "valid", **valid})
                say(f"epoch {epoch}: valid loss {valid['loss']:.4f}, perplexity {valid['perplexity']:.2f}, "
                    f"{'bits/char' if char_level else 'bits/token'} {valid['loss'] / LN2:.4f}")
                save(None, valid_loss=valid["loss"])
        checkpoints.wait()
        if skipped:
            say(f"skipped {skipped} step(s) with a non-finite loss or gradient")
        if report_stop(stop, step, checkpoints, log, say):
            return {"step": step, "preempted": True}
        preemption.training_done()

        fresh = valid is not None and window == 0  # else the last validation is older than the parameters
        if not fresh:
            valid = scored("valid")
            log.write({"step": step, "epoch": epoch + window / steps_per_epoch, "split": "valid", **valid})
        results = {"step": step, "valid": valid, "test": scored("test")}
        log.write({"step": step, "epoch": epoch, "split": "test", **results["test"]})
        for split in ("valid", "test"):
            m = results[split]
            say(f"{split}: loss {m['loss']:.4f}, perplexity {m['perplexity']:.2f}; per word: perplexity "
                f"{m['word_perplexity']:.2f}, bits/char {m['bits_per_char']:.4f}")
        if config.sample.length > 0:
            s = config.sample
            results["sample"] = sample_text(model, state.params, tokenizer, s.prompt, length=s.length,
                                            temperature=s.temperature, top_k=s.top_k, top_p=s.top_p,
                                            seed=config.seed)[0]
            say("sample:\n" + results["sample"])
        checkpoints.close()
        log.close()
        return results
