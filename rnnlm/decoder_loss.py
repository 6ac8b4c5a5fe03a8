"""The decoder and the softmax cross-entropy of a [B, T] window, a few time steps at a time.

At a 10,000-word vocabulary the [B*T, V] logits are the biggest array of a step
(ptb_small: 700 x 10,000 floats, 28 MB), and on a CPU the passes over them (bias,
max, exp, sum, the softmax gradient) cost more than the decoder's matmuls. Made
and reduced in chunks of about `chunk_logits` values, each chunk's logits stay in
cache:

* evaluation (`window_nll`, train=False): `lax.map` over the chunks, nothing kept;
* training (train=True, float32 decoder weights): one custom VJP whose forward
  pass also computes the gradients — for a summed cross-entropy the logits'
  gradient is `weight * (softmax - onehot)`, known as soon as the softmax is — so
  the backward pass only scales them: no [B*T, V] array is kept or made again.
  bfloat16 weights (`model.matmul_dtype`) take the plain path.

Chunks split time, not the batch, so a batch sharded across devices stays so.
Measured on ptb_small shapes, 2 cores: eval window 135 -> 104 ms; decoder + loss
forward and backward 75 -> 58 ms; later, on a slower day for the machine, one
exp pass over each chunk's logits instead of two: 68 -> 55 ms.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax

EVAL_CHUNK_LOGITS = 256 * 10_000  # 10 MB of float32 logits a chunk
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
    if train and weight.dtype == jnp.float32:
        return _fused_nll(*parts, weight, bias)

    def chunk_nll(chunk):
        f, t, w = chunk
        return (token_nll(model.apply({"params": params}, f, method=model.decode), t) * w).sum()
    return jax.lax.map(chunk_nll, parts).sum()


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
