"""rnnlm/loss.py: the reference window loss against numpy's log-softmax."""

import jax
import jax.numpy as jnp
import numpy as np

from rnnlm.loss import token_nll, window_nll
from rnnlm.models import LanguageModel, init_params


def test_the_window_loss_is_the_weighted_sum_of_each_tokens_surprisal():
    model = LanguageModel(vocab_size=9, embed_size=4, hidden_size=5, num_layers=1)
    params = init_params(model, jax.random.PRNGKey(0))
    rng = np.random.default_rng(1)
    features = rng.normal(size=(2, 3, 5)).astype(np.float32)
    targets = rng.integers(0, 9, (2, 3))
    weights = np.array([[1.0, 0.0, 1.0], [1.0, 1.0, 0.0]], np.float32)
    logits = features.astype(np.float64) @ np.asarray(params["decoder"], np.float64) + np.asarray(params["decoder_bias"])
    log_softmax = logits - logits.max(-1, keepdims=True)
    log_softmax -= np.log(np.exp(log_softmax).sum(-1, keepdims=True))
    surprisal = -np.take_along_axis(log_softmax, targets[..., None], -1)[..., 0]
    np.testing.assert_allclose(token_nll(jnp.asarray(logits, jnp.float32), jnp.asarray(targets)), surprisal, rtol=1e-5)
    got = window_nll(model, params, jnp.asarray(features), jnp.asarray(targets), jnp.asarray(weights))
    np.testing.assert_allclose(float(got), float((surprisal * weights).sum()), rtol=1e-5)
