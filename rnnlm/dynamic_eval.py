"""Dynamic evaluation (Krause, Kahembwe, Murray & Renals 2018, arXiv 1709.07432): the model adapts to the
text it scores, one gradient step after each window is scored.

For each window of every stream, in order: the window's tokens are scored with the current parameters
(the NLL of the same forward pass whose gradient is then taken), and only then does the step update them,
so no token is ever scored by parameters that saw it. The carry flows from window to window as in static
evaluation; every stream reads the same parameters (one update per window of all streams). The run's
checkpoints are never written: the adapted parameters live only in this process.

Update rules (`Settings.rule`), g the gradient of the window's mean NLL, theta_0 the trained parameters:
  sgd: theta <- theta - lr * g + decay * (theta_0 - theta)
  rms: theta <- theta - lr * g / (ms + eps) + decay * r * (theta_0 - theta)   (Krause et al.'s RMS rule)
where ms = sqrt(mean of g^2 over training windows), per parameter (`gradient_statistics`), and
r = ms / (the mean over parameter arrays of mean(ms)), capped at 1 / decay so that the decay never
overshoots theta_0 (benkrause/dynamic-evaluation's dynamiceval.py).

`tune` picks (lr, decay) on a prefix of the validation split from a small grid and returns the table;
`rnnlm eval --dynamic --tune` writes the choice beside the run (SETTINGS_FILE), which later
`rnnlm eval --dynamic` calls read.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from rnnlm import sharding
from rnnlm.data.batching import make_streams
from rnnlm.errors import UserError
from rnnlm.metrics import summarize

SETTINGS_NAME = "dynamic_eval"  # the tuned choice beside the run: dynamic_eval.json
SETTINGS_FILE = f"{SETTINGS_NAME}.json"
RULES = ("sgd", "rms")


@dataclasses.dataclass(frozen=True)
class Settings:
    rule: str = "rms"
    lr: float = 5e-5  # Krause et al.'s defaults for windows of 5 tokens and one stream
    decay: float = 2e-3
    eps: float = 2e-5
    bptt: int = 5
    batch_size: int = 1  # streams scored side by side, sharing the adapted parameters
    stat_tokens: int = 100_000  # rms: training tokens whose gradients give ms; 0 = the whole train split
    stat_batch_size: int = 20

    def check(self) -> "Settings":
        if self.rule not in RULES:
            raise UserError(f"unknown dynamic evaluation rule {self.rule!r}; choose sgd or rms")
        if not self.lr >= 0:
            raise UserError(f"dynamic evaluation: the learning rate must not be negative, got {self.lr}")
        if not 0 <= self.decay < 1:
            raise UserError(f"dynamic evaluation: the decay must be in [0, 1), got {self.decay}")
        if not self.eps > 0:
            raise UserError(f"dynamic evaluation: eps must be positive, got {self.eps}")
        for name in ("bptt", "batch_size", "stat_batch_size"):
            if getattr(self, name) < 1:
                raise UserError(f"dynamic evaluation: {name} must be positive, got {getattr(self, name)}")
        if self.stat_tokens < 0:
            raise UserError(f"dynamic evaluation: stat_tokens must not be negative, got {self.stat_tokens}")
        return self

    @classmethod
    def from_config(cls, eval_config, workdir=None, **overrides) -> "Settings":
        """The run's eval.dynamic_* fields, then a tuned choice saved beside the run, then `overrides`
        (the command line's flags; None = not given)."""
        from rnnlm.workdir import read_tuned
        fields = {f.name: eval_config[f"dynamic_{f.name}"] for f in dataclasses.fields(cls)}
        fields.update({k: v for k, v in read_tuned(workdir, SETTINGS_NAME).items() if k in fields})
        fields.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**fields).check()


def _plain(model):
    """The model without any dropout: training's fast paths (it is differentiated), no masks."""
    return model.clone(dropout=0.0, embed_dropout=0.0, hidden_dropout=-1.0, embed_row_dropout=0.0, weight_drop=0.0)


def _window_loss(model, params, carry, batch):
    from rnnlm.fast.decoder_loss import planned_window_nll as window_nll
    features, carry = model.apply({"params": params}, batch["tokens"], carry, train=True, method=model.features)
    nll = window_nll(model, params, features, batch["targets"], batch["weights"], train=True)
    count = batch["weights"].sum()
    return nll / jnp.maximum(count, 1.0), (carry, nll, count)


@functools.partial(jax.jit, static_argnames="model", donate_argnums=(2,))
def _gradient_square(model, params, carry, batch, total):
    grads, (carry, _, _) = jax.grad(functools.partial(_window_loss, model), has_aux=True)(params, carry, batch)
    return carry, jax.tree_util.tree_map(lambda t, g: t + jnp.square(g), total, grads)


def gradient_statistics(model, params, ids, settings: Settings, mesh):
    """ms: per parameter, the root mean square of the gradient of a window's mean NLL over the first
    `stat_tokens` training tokens, in windows of `bptt` and `stat_batch_size` streams (the state carried)."""
    model = _plain(model)
    if settings.stat_tokens:
        ids = ids[:settings.stat_tokens + 1]
    streams = make_streams(ids, settings.stat_batch_size, settings.bptt).rows(
        sharding.local_rows(settings.stat_batch_size, mesh))
    carry = sharding.zeros_carry(model.initial_carry, settings.stat_batch_size, mesh)
    total = jax.tree_util.tree_map(jnp.zeros_like, params)
    for index in range(streams.num_windows):
        carry, total = _gradient_square(model, params, carry, sharding.shard_batch(streams.window(index), mesh), total)
    return jax.tree_util.tree_map(lambda t: jnp.sqrt(t / streams.num_windows), total)


def decay_rates(ms, decay: float):
    """r = ms / mean over arrays of mean(ms), capped at 1 / decay."""
    leaves = jax.tree_util.tree_leaves(ms)
    mean = sum(jnp.mean(leaf) for leaf in leaves) / len(leaves)
    cap = 1.0 / decay if decay > 0 else jnp.inf
    return jax.tree_util.tree_map(lambda m: jnp.minimum(m / jnp.maximum(mean, 1e-30), cap), ms)


@functools.partial(jax.jit, static_argnames=("model", "rule"), donate_argnums=(1, 3))
def _adapt_step(model, params, initial, carry, batch, ms, rates, lr, decay, eps, *, rule: str):
    """Score a window with `params`, then take the update rule's step on it: (params, carry, nll, count)."""
    grads, (carry, nll, count) = jax.grad(functools.partial(_window_loss, model), has_aux=True)(params, carry, batch)
    if rule == "rms":
        update = lambda p, p0, g, m, r: p - lr * g / (m + eps) + decay * r * (p0 - p)
        params = jax.tree_util.tree_map(update, params, initial, grads, ms, rates)
    else:
        params = jax.tree_util.tree_map(lambda p, p0, g: p - lr * g + decay * (p0 - p), params, initial, grads)
    return params, carry, nll, count


@functools.partial(jax.jit, static_argnames=("model", "rule"), donate_argnums=(1, 3, 9))
def _adapt_cache_step(model, params, initial, carry, batch, ms, rates, lr, decay, cache, eps, theta, lam, *, rule):
    """`_adapt_step` with the continuous cache: the window is scored by the mixture (`rnnlm.cache.mix`)
    of the current parameters' model and the cache; the step follows the model's own NLL."""
    from rnnlm.cache import mix

    def loss(params, carry):
        features, carry, (top, _) = model.apply({"params": params}, batch["tokens"], carry, train=True,
                                                method=model.features, with_top=True)
        logits = model.apply({"params": params}, features, method=model.decode)
        logp = jnp.take_along_axis(jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1),
                                   batch["targets"][..., None], axis=-1)[..., 0]
        count = batch["weights"].sum()
        return -jnp.sum(logp * batch["weights"]) / jnp.maximum(count, 1.0), (carry, jnp.swapaxes(top, 0, 1), logp, count)

    grads, (carry, top, logp, count) = jax.grad(loss, has_aux=True)(params, carry)
    cache, mixed = mix(cache, jax.lax.stop_gradient(top), logp, batch["targets"], batch["weights"], theta, lam)
    if rule == "rms":
        update = lambda p, p0, g, m, r: p - lr * g / (m + eps) + decay * r * (p0 - p)
        params = jax.tree_util.tree_map(update, params, initial, grads, ms, rates)
    else:
        params = jax.tree_util.tree_map(lambda p, p0, g: p - lr * g + decay * (p0 - p), params, initial, grads)
    return params, carry, cache, -jnp.sum(mixed * batch["weights"]), count


def dynamic_evaluate(model, params, ids, settings: Settings, mesh, char_level: bool, ms=None,
                     max_tokens: int = 0, per_window: bool = False, cache=None) -> dict:
    """The split `ids` scored with dynamic evaluation: summarize()'s metrics (per token), the settings,
    and "tokens". `ms`: `gradient_statistics` (needed by the rms rule); max_tokens: score only a prefix;
    per_window: also "window_nll", each window's summed NLL in order; cache: `rnnlm.cache.Settings`, the
    windows scored by the model mixed with the continuous cache (the steps follow the model's own NLL)."""
    sharding.check_batch_size(settings.batch_size, mesh, "the dynamic evaluation batch size")
    if settings.rule == "rms" and ms is None:
        raise ValueError("the rms rule needs the gradient statistics ms")
    model = _plain(model)
    if max_tokens:
        ids = ids[:max_tokens + 1]
    streams = make_streams(ids, settings.batch_size, settings.bptt).rows(sharding.local_rows(settings.batch_size, mesh))
    carry = sharding.zeros_carry(model.initial_carry, settings.batch_size, mesh)
    copy = jax.tree_util.tree_map(jnp.copy, params)  # the update steps donate their parameters
    ms = ms if ms is not None else jax.tree_util.tree_map(jnp.ones_like, params)
    rates = decay_rates(ms, settings.decay) if settings.rule == "rms" else ms
    lr, decay, eps = (jnp.float32(v) for v in (settings.lr, settings.decay, settings.eps))
    nll_sum, tokens, windows = jnp.zeros(()), jnp.zeros(()), []
    if cache is not None:
        from rnnlm.cache import empty
        held = empty(settings.batch_size, cache.window, model.layer_sizes[-1])
        theta, lam = jnp.float32(cache.theta), jnp.float32(cache.lam)
    for index in range(streams.num_windows):
        batch = sharding.shard_batch(streams.window(index), mesh)
        if cache is None:
            copy, carry, nll, count = _adapt_step(model, copy, params, carry, batch, ms, rates, lr, decay, eps,
                                                  rule=settings.rule)
        else:
            copy, carry, held, nll, count = _adapt_cache_step(model, copy, params, carry, batch, ms, rates, lr,
                                                              decay, held, eps, theta, lam, rule=settings.rule)
        nll_sum, tokens = nll_sum + nll, tokens + count
        if per_window:
            windows.append(nll)
    out = {**summarize(float(nll_sum), float(tokens), char_level), "tokens": float(tokens),
           "settings": dataclasses.asdict(settings)}
    if cache is not None:
        out["cache"] = dataclasses.asdict(cache)
    if per_window:
        out["window_nll"] = [float(x) for x in windows]
    return out


def tune(model, params, valid_ids, base: Settings, mesh, char_level: bool, ms, lrs, decays,
         tokens: int, say=print) -> tuple[Settings, list[dict]]:
    """The (lr, decay) of the grid with the lowest loss on the first `tokens` of valid, and the grid's rows."""
    rows = []
    for decay in decays:
        for lr in lrs:
            settings = dataclasses.replace(base, lr=float(lr), decay=float(decay)).check()
            result = dynamic_evaluate(model, params, valid_ids, settings, mesh, char_level, ms, max_tokens=tokens)
            rows.append({"lr": float(lr), "decay": float(decay), "loss": result["loss"],
                         "perplexity": result["perplexity"]})
            say(f"dynamic evaluation on valid[:{tokens}]: lr {lr:g}, decay {decay:g}: loss {result['loss']:.4f}, "
                f"perplexity {result['perplexity']:.2f}")
    best = min(rows, key=lambda row: row["loss"])
    return dataclasses.replace(base, lr=best["lr"], decay=best["decay"]), rows


def save_choice(workdir, settings: Settings, rows: list[dict], tokens: int):
    """Write the tuned settings beside the run (never into its checkpoints)."""
    from rnnlm.workdir import write_tuned
    return write_tuned(workdir, SETTINGS_NAME, dataclasses.asdict(settings), rows, f"valid[:{tokens}]")
