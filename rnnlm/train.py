"""Training and evaluation of a language model: `train_and_evaluate(config, workdir)`.

One pure `train_step(state, carry, batch) -> (state, carry, metrics)`, jitted
once with the state and carry donated; configuration is bound with
`functools.partial` before `jit`. Metrics stay on device and are summed and
fetched only on log steps.
"""

from __future__ import annotations

import functools
import logging
import math
import pathlib
import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm
from jax.experimental import multihost_utils

from rnnlm import optim, sharding
from rnnlm.checkpoint import Checkpoints
from rnnlm.config import validate
from rnnlm.data.batching import Streams, make_streams
from rnnlm.errors import UserError
from rnnlm.models import count_params, language_model_from_config
from rnnlm.sampling import sample_text
from rnnlm.workdir import MetricLog, prepare_data, reconcile_config

LN2 = math.log(2.0)


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


def token_nll(logits, targets):
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)


def train_step(state: TrainState, carry, batch, *, model, tx, loss: str):
    """One optimizer step on a [B, T] window; returns the carry for the next window."""
    dropout_rng = jax.random.fold_in(state.rng, state.step)
    weights = batch["weights"]

    def loss_fn(params):
        logits, new_carry = model.apply({"params": params}, batch["tokens"], carry, train=True,
                                        rngs={"dropout": dropout_rng})
        nll_sum = (token_nll(logits, batch["targets"]) * weights).sum()
        count = weights.sum()
        # time_sum: sum over time, mean over streams, the scale Zaremba et al.'s lr = 1 expects.
        denominator = weights.shape[0] if loss == "time_sum" else jnp.maximum(count, 1.0)
        return nll_sum / denominator, (new_carry, nll_sum, count)

    (_, (new_carry, nll_sum, count)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                          opt_state=opt_state)
    metrics = {"nll_sum": nll_sum, "tokens": count, "grad_norm": optax.tree.norm(grads)}
    return state, new_carry, metrics


def jit_train_step(model, tx, loss: str, mesh):
    """`train_step` bound to its configuration and compiled with explicit shardings.

    State in and out replicated, carry and batch split on the batch axis, metrics
    replicated; state and carry are donated (updated in place).
    """
    replicated, split = sharding.replicated(mesh), sharding.batch_sharded(mesh)
    return jax.jit(functools.partial(train_step, model=model, tx=tx, loss=loss),
                   in_shardings=(replicated, split, split), out_shardings=(replicated, split, replicated),
                   donate_argnums=(0, 1))


def eval_step(params, carry, batch, *, model):
    logits, carry = model.apply({"params": params}, batch["tokens"], carry)
    weights = batch["weights"]
    return carry, (token_nll(logits, batch["targets"]) * weights).sum(), weights.sum()


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


def train_and_evaluate(config, workdir) -> dict:
    """Train (or resume) the run in `workdir`, then report validation and test metrics."""
    workdir = pathlib.Path(workdir)
    c = config.train
    validate(config)
    writer = jax.process_index() == 0  # the one process that writes files and prints
    say = print if writer else (lambda *args, **kwargs: None)
    mesh = sharding.make_mesh(c.num_devices)
    sharding.check_batch_size(c.batch_size, mesh)
    sharding.check_batch_size(config.eval.batch_size, mesh, "eval.batch_size")
    workdir.mkdir(parents=True, exist_ok=True)
    reconcile_config(config, workdir, write=writer)
    tokenizer, ids = prepare_data(config, workdir, write=writer)
    char_level = tokenizer.kind == "char"
    if config.sample.length and config.sample.prompt:  # a bad prompt fails now, not after training
        tokenizer.encode(config.sample.prompt, strict=True)

    model = language_model_from_config(config.model, tokenizer.vocab_size)
    train_streams = make_streams(ids["train"], c.batch_size, c.bptt).rows(sharding.local_rows(c.batch_size, mesh))
    steps_per_epoch = train_streams.num_windows
    total_steps = c.max_steps or c.epochs * steps_per_epoch
    tx = optim.make_optimizer(c, total_steps)
    state = create_train_state(model, tx, config.seed, mesh)
    carry = sharding.zeros_carry(model.initial_carry, c.batch_size, mesh)
    controller = optim.LearningRateController.from_config(c)
    log = MetricLog(workdir / "metrics.jsonl", enabled=writer)
    checkpoints = Checkpoints(workdir, keep=c.keep_checkpoints)

    epoch, window, seconds = 0, 0, 0.0
    if checkpoints.latest_step() is not None:
        step = checkpoints.latest_step()
        state, carry, meta = checkpoints.restore(step, state, carry)
        epoch, window, seconds = meta["epoch"], meta["window"], meta["train_seconds"]
        controller = optim.LearningRateController.from_config(c, meta["lr"])
        log.truncate_after(step)
        logging.info("resumed %s at step %d (epoch %d, window %d)", workdir, step, epoch, window)
    say(f"rnnlm: {config.name}: {tokenizer.kind} tokens, vocab {tokenizer.vocab_size:,}, "
          f"train {len(ids['train']):,} tokens, {steps_per_epoch} steps/epoch, "
          f"{count_params(state.params):,} parameters, {mesh.devices.size} device(s); workdir {workdir}")

    p_train_step = jit_train_step(model, tx, c.loss, mesh)
    evaluator = Evaluator(model, mesh, config.eval.batch_size, config.eval.bptt or c.bptt)

    def meta(next_epoch, next_window):
        return {"epoch": next_epoch, "window": next_window, "train_seconds": seconds, "lr": controller.to_dict()}

    step = int(state.step)
    stop = _stop_reason(config, step, seconds)
    pending: list[dict] = []
    valid = None
    while epoch < c.epochs and stop is None:
        rate = controller.start_epoch(epoch)
        if rate is not None:
            state = state.replace(opt_state=optim.set_learning_rate(state.opt_state, rate))
        if window == 0:
            carry = sharding.zeros_carry(model.initial_carry, c.batch_size, mesh)
        bar = tqdm.tqdm(total=steps_per_epoch, initial=window, desc=f"epoch {epoch + 1}/{c.epochs}",
                        disable=not writer, leave=False, dynamic_ncols=True)
        tick = time.perf_counter()
        while window < steps_per_epoch:
            batch = sharding.shard_batch(train_streams.window(window), mesh)
            state, carry, metrics = p_train_step(state, carry, batch)
            pending.append(metrics)
            step, window = step + 1, window + 1
            bar.update(1)
            logged = step % c.log_every == 0 or window == steps_per_epoch
            if logged:
                totals = jax.device_get(jax.tree_util.tree_map(lambda *xs: sum(xs), *pending))
                now = time.perf_counter()
                seconds += now - tick
                record = {"step": step, "epoch": epoch + window / steps_per_epoch, "split": "train",
                          **summarize(totals["nll_sum"], totals["tokens"], char_level),
                          "grad_norm": float(totals["grad_norm"]) / len(pending),
                          "learning_rate": optim.current_learning_rate(state.opt_state),
                          "tokens_per_sec": float(totals["tokens"]) / max(now - tick, 1e-9)}
                tick, pending = now, []
                log.write(record)
                bar.set_postfix(loss=f"{record['loss']:.3f}", tok_s=f"{record['tokens_per_sec']:,.0f}")
                if not math.isfinite(record["loss"]):
                    checkpoints.wait()
                    raise UserError(f"non-finite training loss at step {step}; last checkpoint: "
                                    f"{checkpoints.latest_step()}")
            stop = _stop_reason(config, step, seconds + time.perf_counter() - tick, check_clock=logged)
            due = stop or (c.checkpoint_every and step % c.checkpoint_every == 0)
            if due and window < steps_per_epoch:  # epoch ends are saved below, with the valid loss
                checkpoints.save(step, state, carry, meta(epoch, window))
            if stop:
                break
        bar.close()
        if window == steps_per_epoch:
            epoch, window = epoch + 1, 0
            valid = evaluator(state.params, ids["valid"], char_level)
            controller.end_epoch(valid["loss"])
            log.write({"step": step, "epoch": epoch, "split": "valid", **valid})
            say(f"epoch {epoch}: valid loss {valid['loss']:.4f}, perplexity {valid['perplexity']:.2f}, "
                  f"{'bits/char' if char_level else 'bits/token'} {valid['loss'] / LN2:.4f}")
            checkpoints.save(step, state, carry, meta(epoch, 0), valid_loss=valid["loss"])
    checkpoints.wait()
    if stop:
        say(f"stopped: {stop}")

    results = {"step": step, "valid": valid or evaluator(state.params, ids["valid"], char_level),
               "test": evaluator(state.params, ids["test"], char_level)}
    log.write({"step": step, "epoch": epoch, "split": "test", **results["test"]})
    say(f"test: loss {results['test']['loss']:.4f}, perplexity {results['test']['perplexity']:.2f}")
    if config.sample.length > 0:
        s = config.sample
        results["sample"] = sample_text(model, state.params, tokenizer, s.prompt, length=s.length,
                                        temperature=s.temperature, top_k=s.top_k, top_p=s.top_p,
                                        seed=config.seed)[0]
        say("sample:\n" + results["sample"])
    checkpoints.close()
    return results
