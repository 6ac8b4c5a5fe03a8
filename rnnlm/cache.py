"""The continuous cache (Grave, Joulin & Usunier 2017, "Improving Neural Language Models with a Continuous
Cache", arXiv 1612.04426): evaluation mixes the model's next-token distribution with one over the words
that followed the recent states most like the present one.

For position t of a stream, with h_t the top recurrent layer's output and the last `window` positions
i < t of the same stream held as (h_i, y_i), y_i the token that followed position i:

    p_cache(w) = sum over those i with y_i = w of softmax_i(theta * h_t . h_i)
    p(w)       = (1 - lambda) * p_model(w) + lambda * p_cache(w)

Only the target's probability is needed, so nothing of size V is made beyond the model's own logits.
The cache flows across windows with the carry, one per stream; a position with no earlier positions yet
uses p_model alone. Padding (weight 0) never enters the cache. lambda = 0 is the model's own score.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp

from rnnlm import sharding
from rnnlm.data.batching import make_streams
from rnnlm.errors import UserError
from rnnlm.metrics import summarize


@dataclasses.dataclass(frozen=True)
class Settings:
    window: int = 500  # positions held per stream (Grave et al.: 100-2000; awd-lstm-lm's PTB pointer: 500)
    theta: float = 0.6  # the flatness of the attention over the cache
    lam: float = 0.1  # the cache's share of the mixture

    def check(self) -> "Settings":
        if not 0 <= self.lam <= 1:
            raise UserError(f"cache: lambda must be in [0, 1], got {self.lam}")
        if not self.theta >= 0:
            raise UserError(f"cache: theta must not be negative, got {self.theta}")
        if self.window < 1:
            raise UserError(f"cache: the window must be at least 1 position, got {self.window}")
        return self

    @classmethod
    def from_config(cls, eval_config, workdir=None, **overrides) -> "Settings":
        """The run's eval.cache_* fields, then a tuned choice beside the run (cache.json), then `overrides`."""
        from rnnlm.workdir import read_tuned
        fields = {"window": eval_config.cache_window, "theta": eval_config.cache_theta, "lam": eval_config.cache_lambda}
        fields.update({k: v for k, v in read_tuned(workdir, SETTINGS_NAME).items() if k in fields})
        fields.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**fields).check()


SETTINGS_NAME = "cache"


def save_choice(workdir, settings: Settings, rows: list[dict], tokens: int):
    from rnnlm.workdir import write_tuned
    return write_tuned(workdir, SETTINGS_NAME, dataclasses.asdict(settings), rows, f"valid[:{tokens}]")


def empty(batch: int, window: int, width: int):
    """A cache holding nothing: (states [B, W, H], next tokens [B, W], filled [B, W])."""
    return jnp.zeros((batch, window, width)), jnp.zeros((batch, window), jnp.int32), jnp.zeros((batch, window), bool)


def mix(cache, top, logp_model, targets, weights, theta, lam):
    """One window through the cache: (cache after it, log p(target) [B, T] of the mixture).

    top [B, T, H] the top layer's outputs, logp_model [B, T] the model's log p(target), weights [B, T]."""
    states, tokens, filled = cache
    window, steps = states.shape[1], top.shape[1]
    keys = jnp.concatenate([states, top.astype(states.dtype)], axis=1)  # [B, W + T, H]
    values = jnp.concatenate([tokens, targets], axis=1)
    present = jnp.concatenate([filled, weights > 0], axis=1)
    # Query t (at W + t of the concatenation) reads keys W + t - window .. W + t - 1: the window before it.
    query = jnp.arange(steps)[:, None] + window
    key = jnp.arange(window + steps)[None, :]
    allowed = (key < query) & (key >= query - window)  # [T, W + T]
    scores = theta * jnp.einsum("bth,bkh->btk", top.astype(jnp.float32), keys.astype(jnp.float32))
    usable = allowed[None] & present[:, None, :]
    scores = jnp.where(usable, scores, -jnp.inf)
    attention = jax.nn.softmax(jnp.where(usable.any(-1, keepdims=True), scores, 0.0), axis=-1)
    match = (values[:, None, :] == targets[:, :, None]) & usable
    p_cache = jnp.sum(jnp.where(match, attention, 0.0), axis=-1)
    has_cache = usable.any(-1)
    # log((1 - lam) p_model + lam p_cache), exactly logp_model where lam = 0 or nothing is cached yet.
    share = jnp.where(has_cache, lam, 0.0)
    mixed = jnp.logaddexp(jnp.log1p(-share) + logp_model, jnp.where(share > 0, jnp.log(share) + jnp.log(p_cache), -jnp.inf))
    cache = (keys[:, -window:], values[:, -window:], present[:, -window:])
    return cache, mixed


@functools.partial(jax.jit, static_argnames="model", donate_argnums=(2, 4))
def cache_step(model, params, carry, batch, cache, theta, lam):
    """Static evaluation of one window with the cache: (carry, cache, summed NLL, model's summed NLL)."""
    features, carry, (top, _) = model.apply({"params": params}, batch["tokens"], carry, method=model.features,
                                            with_top=True)
    logits = model.apply({"params": params}, features, method=model.decode)
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    logp_model = jnp.take_along_axis(logp, batch["targets"][..., None], axis=-1)[..., 0]
    cache, mixed = mix(cache, jnp.swapaxes(top, 0, 1), logp_model, batch["targets"], batch["weights"], theta, lam)
    weights = batch["weights"]
    return carry, cache, -jnp.sum(mixed * weights), -jnp.sum(logp_model * weights)


def cache_evaluate(model, params, ids, settings: Settings, mesh, batch_size: int, bptt: int, char_level: bool,
                   max_tokens: int = 0) -> dict:
    """A split scored with the cache: summarize()'s metrics, "model_loss" (the same pass without the
    cache), "tokens" and the settings."""
    sharding.check_batch_size(batch_size, mesh, "eval.batch_size")
    if max_tokens:
        ids = ids[:max_tokens + 1]
    streams = make_streams(ids, batch_size, bptt).rows(sharding.local_rows(batch_size, mesh))
    carry = sharding.zeros_carry(model.initial_carry, batch_size, mesh)
    cache = empty(batch_size, settings.window, model.layer_sizes[-1])
    theta, lam = jnp.float32(settings.theta), jnp.float32(settings.lam)
    nll, plain, tokens = 0.0, 0.0, 0.0
    for index in range(streams.num_windows):
        batch = sharding.shard_batch(streams.window(index), mesh)
        carry, cache, window_nll, window_plain = cache_step(model, params, carry, batch, cache, theta, lam)
        nll, plain, tokens = nll + window_nll, plain + window_plain, tokens + float(batch["weights"].sum())
    out = summarize(float(nll), tokens, char_level)
    return {**out, "model_loss": float(plain) / max(tokens, 1.0), "tokens": tokens,
            "settings": dataclasses.asdict(settings)}


def tune(model, params, valid_ids, base: Settings, mesh, batch_size, bptt, char_level, thetas, lams, tokens,
         say=print):
    """The (theta, lambda) of the grid with the lowest loss on the first `tokens` of valid, and the rows."""
    rows = []
    for theta in thetas:
        for lam in lams:
            settings = dataclasses.replace(base, theta=float(theta), lam=float(lam)).check()
            result = cache_evaluate(model, params, valid_ids, settings, mesh, batch_size, bptt, char_level, tokens)
            rows.append({"theta": float(theta), "lam": float(lam), "loss": result["loss"],
                         "perplexity": math.exp(min(result["loss"], 700.0))})
            say(f"cache on valid[:{tokens}]: theta {theta:g}, lambda {lam:g}: perplexity {rows[-1]['perplexity']:.2f}")
    best = min(rows, key=lambda row: row["loss"])
    return dataclasses.replace(base, theta=best["theta"], lam=best["lam"]), rows
