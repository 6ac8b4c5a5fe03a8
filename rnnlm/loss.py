"""The window loss of a language model: the summed softmax cross-entropy of its next-token predictions.

The reference path: the logits of the whole [B, T] window at once, optax's
cross-entropy, JAX's gradients. `rnnlm.fast.decoder_loss` computes the same
numbers in time chunks without holding the [B*T, V] logits.
"""

from __future__ import annotations

import jax.numpy as jnp
import optax


def token_nll(logits, targets):
    """-log softmax(logits)[target] per position, in float32."""
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)


def window_nll(model, params, features, targets, weights):
    """sum(weights * -log softmax(decode(features))[targets]) over a [B, T] window; features [B, T, F]."""
    logits = model.apply({"params": params}, features, method=model.decode)
    return (token_nll(logits, targets) * weights).sum()
