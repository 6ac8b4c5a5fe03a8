"""The decoder and the softmax cross-entropy of a [B, T] window, a few time steps at a time.

At a 10,000-word vocabulary the [B*T, V] logits are the biggest array of a step
(ptb_small: 700 x 10,000 floats, 28 MB), and on a CPU the passes over them (bias,
max, exp, sum, the softmax gradient) cost more than the decoder's matmuls. Made
and reduced in chunks of about `chunk_logits` values, each chunk's logits stay in
cache:

* evaluation (`window_nll`, train=False): `lax.map` over the chunks, nothing kept;
  each token's NLL as log(sum_j exp(logit_j - logit_target)), which needs no max
  pass, so that XLA fuses the matmul, bias, exp and sum into one loop that never
  writes the logits (`_shifted_chunk_nll`);
* training (train=True, float32 decoder weights): one custom VJP whose forward
  pass also computes the gradients — for a summed cross-entropy the logits'
  gradient is `weight * (softmax - onehot)`, known as soon as the softmax is — so
  the backward pass only scales them: no [B*T, V] array is kept or made again.
  bfloat16 weights (`model.matmul_dtype`) take the plain path.

Chunks split time, not the batch, so a batch sharded across devices stays so.
Measured on ptb_small shapes, 2 cores: eval window 135 -> 104 ms; decoder + loss
forward and backward 75 -> 58 ms; later, on a slower day for the machine, one
exp pass over each chunk's logits instead of two: 68 -> 55 ms; evaluation
shifted by the target's logit instead of the max: 81.0 -> 79.8 ms (LSTM), 87.4 ->
82.7 ms (GRU) per ptb_small window.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax

EVAL_CHUNK_LOGITS = 256 * 10_000  # 10 MB of float32 logits a chunk
_MAX_SHIFT = 80.0  # evaluation: no exp above exp(80) ~ 5.5e34, finite in float32 (`_shifted_chunk_nll`)
TRAIN_CHUNK_LOGITS = 350 * 10_000  # the fastest of 140 / 350 / 700 rows at ptb_small shapes


def token_nll(logits, targets):
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)


def time_chunks(x, chunks: int):
    """[B, T, ...] -> [chunks, c, B, ...]: time cut in `chunks` equal parts, the last padded with zeros."""
    steps = x.shape[1]
    per_chunk = -(-steps // chunks)
    x = jnp.swapaxes(x, 0, 1)
    x = jnp.pad(x, [(0, chunks * per_chunk - steps)] + [(0, 0)] * (x.ndim - 1))
    return x.reshape((chunks, per_chunk) + x.shape[1:])


def window_nll(model, params, features, targets, weights, *, train: bool, chunk_logits: int | None = None):
    """sum(weights * -log softmax(decode(features))[targets]) over a [B, T] window; features [B, T, F]."""
    budget = chunk_logits or (TRAIN_CHUNK_LOGITS if train else EVAL_CHUNK_LOGITS)
    batch, steps = targets.shape
    chunks = min(steps, max(1, math.ceil(batch * steps * model.vocab_size / budget)))
    parts = tuple(time_chunks(x, chunks) for x in (features, targets, weights))  # padding: weight 0
    weight, bias = model.apply({"params": params}, method=model.decoder_weights)
    if weight.dtype != jnp.float32:
        def chunk_nll(chunk):
            f, t, w = chunk
            return (token_nll(model.apply({"params": params}, f, method=model.decode), t) * w).sum()
        return jax.lax.map(chunk_nll, parts).sum()
    if train:
        return _fused_nll(*parts, weight, bias)
    return jax.lax.map(lambda part: _shifted_chunk_nll(*part, weight, bias), parts).sum()


def _target_logits(f, t, weight, bias):
    """logits[..., t] alone: each row's feature vector against its target's weight column."""
    columns = jnp.moveaxis(jnp.take(weight, t, axis=1), 0, -1)  # [..., F]
    return (f * columns).sum(axis=-1) + bias[t]


def _shifted_chunk_nll(f, t, w, weight, bias):
    """One chunk's summed NLL as log(sum_j exp(logit_j - logit_target)), the target's logit as the shift.

    That sum is the token's NLL with no max pass: it is at least 1 (the target's own term), so it cannot
    underflow, and XLA then makes the logits, adds the bias, exponentiates and sums in one fused loop
    without writing the [rows, V] logits anywhere (README, levers). It overflows only where some logit
    exceeds the target's by about 80 (a probability below 1e-34); such a chunk is recomputed with the
    max-shifted loss. The shift is capped at 80 so that no exp is infinite: an infinite one would make
    the gradient NaN (0 * inf) even on the other branch. A capped term is exp(80) give or take the
    backend's rounding of exp, so a sum below half of it proves no cap was hit.
    """
    target = _target_logits(f, t, weight, bias)
    # The fallback makes the logits again on purpose: handing it these ones would make them a
    # `cond` operand, written to memory for every chunk, and undo the fused loop.
    total = jnp.exp(jnp.minimum(f @ weight + bias - target[..., None], _MAX_SHIFT)).sum(axis=-1)
    return jax.lax.cond((total < 0.5 * math.exp(_MAX_SHIFT)).all(),
                        lambda: (jnp.log(total) * w).sum(),
                        lambda: (token_nll(f @ weight + bias, t) * w).sum())


@jax.custom_vjp
def _fused_nll(features, targets, weights, weight, bias):
    return _fused_forward(features, targets, weights, weight, bias)[0]


def _fused_forward(features, targets, weights, weight, bias):
    """The summed NLL and its gradients with respect to features, weight and bias, chunk by chunk."""
    def chunk(grads, part):
        f, t, w = part
        logits = f @ weight + bias  # [c, B, V]
        # One exp pass over the logits serves both the loss and its gradient (a logsumexp
        # followed by exp(logits - log_z) made two; module docstring).
        top = logits.max(axis=-1, keepdims=True)
        e = jnp.exp(logits - top)
        total_e = e.sum(axis=-1, keepdims=True)
        log_z = (jnp.log(total_e) + top)[..., 0]
        target_logit = jnp.take_along_axis(logits, t[..., None], axis=-1)[..., 0]
        g = e * (w[..., None] / total_e) - jax.nn.one_hot(t, logits.shape[-1], dtype=logits.dtype) * w[..., None]
        d_weight, d_bias, total = grads
        f2, g2 = f.reshape(-1, f.shape[-1]), g.reshape(-1, g.shape[-1])
        grads = (d_weight + f2.T @ g2, d_bias + g2.sum(axis=0), total + ((log_z - target_logit) * w).sum())
        return grads, g @ weight.T
    zeros = (jnp.zeros_like(weight), jnp.zeros_like(bias), jnp.zeros((), jnp.float32))
    (d_weight, d_bias, total), d_features = jax.lax.scan(chunk, zeros, (features, targets, weights))
    return total, (d_features, d_weight, d_bias)


def _fused_backward(residuals, cotangent):
    d_features, d_weight, d_bias = residuals
    return cotangent * d_features, None, None, cotangent * d_weight, cotangent * d_bias


_fused_nll.defvjp(_fused_forward, _fused_backward)
