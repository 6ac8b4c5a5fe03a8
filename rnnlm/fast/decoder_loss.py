"""The decoder and the softmax cross-entropy of a [B, T] window, a few time steps at a time.

`rnnlm.loss.window_nll`, faster. At a 10,000-word vocabulary the [B*T, V]
logits are the biggest array of a step (ptb_small: 700 x 10,000 floats, 28 MB),
and on a CPU the passes over them (bias, max, exp, sum, the softmax gradient)
cost more than the decoder's matmuls. Made and reduced in chunks of about
`chunk_logits` values, each chunk's logits stay in cache:

* evaluation (train=False): `lax.map` over the chunks, nothing kept; each token's
  NLL as log(sum_j exp(logit_j - logit_target)), which needs no max pass, so that
  XLA fuses the matmul, bias, exp and sum into one loop that never writes the
  logits (`_shifted_chunk_nll`);
* training (train=True, float32 decoder weights): one custom VJP whose forward
  pass also computes the gradients (for a summed cross-entropy the logits'
  gradient is `weight * (softmax - onehot)`, known as soon as the softmax is), so
  the backward pass only scales them: no [B*T, V] array is kept or made again,
  and within a chunk only the product and exp(logits - shift) are written, never
  the softmax or its gradient (`_nll_and_gradients`). bfloat16 weights
  (`model.matmul_dtype`) take the plain chunked path.

Chunks split time, not the batch, so a batch sharded across devices stays so.
Equal to the reference's loss and gradients, also for logits in the thousands
(tests/test_fast.py); the measurements behind each choice are in docs/levers.md.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from rnnlm.cells import add_bias
from rnnlm.loss import token_nll
from rnnlm.loss import window_nll as reference_window_nll

EVAL_CHUNK_LOGITS = 256 * 10_000  # 10 MB of float32 logits a chunk
_MAX_SHIFT = 80.0  # evaluation: no exp above exp(80) ~ 5.5e34, finite in float32 (`_shifted_chunk_nll`)
_BIAS_SPAN_IN_SHIFT = 40.0  # training: at most this much of the bias's span in the shift (`_nll_and_gradients`)
TRAIN_CHUNK_LOGITS = 350 * 10_000  # 350 rows at ptb_small shapes: the fastest measured


def time_chunks(x, chunks: int):
    """[B, T, ...] -> [chunks, c, B, ...]: time cut in `chunks` equal parts, the last padded with zeros."""
    steps = x.shape[1]
    per_chunk = -(-steps // chunks)
    x = jnp.swapaxes(x, 0, 1)
    x = jnp.pad(x, [(0, chunks * per_chunk - steps)] + [(0, 0)] * (x.ndim - 1))
    return x.reshape((chunks, per_chunk) + x.shape[1:])


def planned_window_nll(model, params, features, targets, weights, *, train: bool):
    """The summed NLL of a [B, T] window: in time chunks where `rnnlm.fast.choose` takes that path
    (`window_nll`), else the reference's logits of the whole window (`rnnlm.loss.window_nll`)."""
    if model.plan(train=train).chunked_loss:
        return window_nll(model, params, features, targets, weights, train=train)
    return reference_window_nll(model, params, features, targets, weights)


def window_nll(model, params, features, targets, weights, *, train: bool, chunk_logits: int | None = None):
    """sum(weights * -log softmax(decode(features))[targets]) over a [B, T] window; features [B, T, F]."""
    budget = chunk_logits or (TRAIN_CHUNK_LOGITS if train else EVAL_CHUNK_LOGITS)
    batch, steps = targets.shape
    components = max(getattr(model, "mos_components", 0), 1)
    chunks = min(steps, max(1, math.ceil(batch * steps * model.vocab_size * components / budget)))
    parts = tuple(time_chunks(x, chunks) for x in (features, targets, weights))  # padding: weight 0
    if components > 1 or getattr(model, "mos_components", 0):
        # A mixture of softmaxes: each chunk's [c, B, K, V] made by the model's own decode and, under
        # jax.checkpoint, made again in the backward pass instead of kept, so one chunk's lives at a time.
        def mixture_nll(chunk):
            f, t, w = chunk
            return (token_nll(model.apply({"params": params}, f, method=model.decode), t) * w).sum()
        return jax.lax.map(jax.checkpoint(mixture_nll), parts).sum()
    weight, bias = model.apply({"params": params}, method=model.decoder_weights)
    if weight.dtype != jnp.float32:
        def chunk_nll(chunk):
            f, t, w = chunk
            return (token_nll(model.apply({"params": params}, f, method=model.decode), t) * w).sum()
        return jax.lax.map(chunk_nll, parts).sum()
    if train:
        return _fused_nll(*parts, weight, bias)
    return jax.lax.map(lambda part: _shifted_chunk_nll(*part, weight, bias), parts).sum()


def _target_columns(weight, t):
    """weight[:, t] with the feature axis last: [..., F], each row's target column."""
    return jnp.moveaxis(jnp.take(weight, t, axis=1), 0, -1)


def _target_logits(f, t, weight, bias):
    """logits[..., t] alone: each row's feature vector against its target's weight column."""
    return (f * _target_columns(weight, t)).sum(axis=-1) + bias[t]


def _shifted_chunk_nll(f, t, w, weight, bias):
    """One chunk's summed NLL as log(sum_j exp(logit_j - logit_target)), the target's logit as the shift.

    That sum is the token's NLL with no max pass: it is at least 1 (the target's own term), so it cannot
    underflow, and XLA then makes the logits, adds the bias, exponentiates and sums in one fused loop
    without writing the [rows, V] logits anywhere (docs/levers.md). It overflows only where some logit
    exceeds the target's by about 80 (a probability below 1e-34); such a chunk is recomputed with the
    max-shifted loss. The shift is capped at 80 so that no exp is infinite: an infinite one would make
    the gradient NaN (0 * inf) even on the other branch. A capped term is exp(80) give or take the
    backend's rounding of exp, so a sum below half of it proves no cap was hit.
    """
    target = _target_logits(f, t, weight, bias)
    # The fallback makes the logits again on purpose: handing it these ones would make them a
    # `cond` operand, written to memory for every chunk, and undo the fused loop.
    total = jnp.exp(jnp.minimum(add_bias(f @ weight, bias) - target[..., None], _MAX_SHIFT)).sum(axis=-1)
    return jax.lax.cond((total < 0.5 * math.exp(_MAX_SHIFT)).all(),
                        lambda: (jnp.log(total) * w).sum(),
                        lambda: (token_nll(add_bias(f @ weight, bias), t) * w).sum())


@jax.custom_vjp
def _fused_nll(features, targets, weights, weight, bias):
    return _nll_and_gradients(features, targets, weights, weight, bias)[0]


def _nll_and_gradients(features, targets, weights, weight, bias):
    """The summed NLL and its gradients with respect to features, weight and bias, chunk by chunk.

    The logits' gradient is w * (softmax - onehot), but neither term is written out as a [rows, V]
    array: with e = exp(logits - shift) and s its row sums, softmax = e / s, so the row scale w / s
    goes onto the small operands of the two gradient matmuls (the features for the weight's, the
    [rows, F] product for the features'), and the one-hot term is a [rows, F] correction: the
    target columns for the features, and for the weight and bias one scatter-add after the loop.

    The shift is each row's max of features @ weight plus c = min(max(bias), min(bias) + 40), so
    the max pass reads the product before the bias, which XLA then adds inside the exp pass
    instead of writing biased logits for the max alone. With span = max(bias) - min(bias): no
    exponent exceeds max(0, span - 40), and the row's largest logit sits at most 40 below the
    shift (the column where the product peaks has a bias of at least min(bias)). So up to a span
    of ~120 no row sum of 10,000 terms overflows, and nothing within ~47 of a row's largest logit meets float32's
    smallest normal number, exp(-87.3), below which XLA's CPU backend flushes to zero: the
    dropped terms weigh at most V * exp(-47) against the largest. Without the 40, a span near 87
    would put the shift near 87 above the largest logit and flush the whole row. Per chunk: the
    matmul writes the product, a max pass reads it, one exp pass writes e, and the two gradient
    matmuls read e (docs/levers.md).
    """
    num_features, vocab = weight.shape
    bias_shift = jnp.minimum(bias.max(), bias.min() + _BIAS_SPAN_IN_SHIFT)  # c above

    def chunk(grads, part):
        d_weight, d_bias, total = grads
        f, t, w, f_t = part
        columns = _target_columns(weight, t)  # [c, B, F]
        raw = f @ weight
        top = raw.max(axis=-1) + bias_shift
        e = jnp.exp(add_bias(raw, bias) - top[..., None])
        total_e = e.sum(axis=-1)
        scale = w / total_e
        rows = e.reshape(-1, vocab)
        d_weight = d_weight + (f_t.reshape(num_features, -1) * scale.reshape(1, -1)) @ rows
        d_bias = d_bias + scale.reshape(-1) @ rows
        d_f = (e @ weight.T) * scale[..., None] - w[..., None] * columns
        target = _target_logits(f, t, weight, bias)  # its gather of the columns is the one above (XLA CSE)
        return (d_weight, d_bias, total + ((jnp.log(total_e) + top - target) * w).sum()), d_f

    zeros = (jnp.zeros_like(weight), jnp.zeros_like(bias), jnp.zeros((), jnp.float32))
    # Each chunk's features also as [F, c, B], transposed once here: XLA hands a plain [F, rows] @
    # [rows, V] to YNNPACK, but a dot that transposes its left operand to Eigen (docs/levers.md).
    f_t = jnp.moveaxis(features, -1, 1)
    (d_weight, d_bias, total), d_features = jax.lax.scan(chunk, zeros, (features, targets, weights, f_t))
    # The one-hot term of every chunk's gradient at once: -w * f into each target's column.
    rows_t, rows_w = targets.reshape(-1), weights.reshape(-1)
    d_weight = d_weight.at[:, rows_t].add(-(features.reshape(-1, num_features) * rows_w[:, None]).T)
    d_bias = d_bias.at[rows_t].add(-rows_w)
    return total, (d_features, d_weight, d_bias)


def _fused_backward(residuals, cotangent):
    d_features, d_weight, d_bias = residuals
    return cotangent * d_features, None, None, cotangent * d_weight, cotangent * d_bias


_fused_nll.defvjp(_nll_and_gradients, _fused_backward)
