"""The mixture of softmaxes (`model.mos_components`, Yang et al. 2018): K = 1 against a plain softmax over
tanh latents computed independently, probabilities that sum to 1, the chunked loss against the reference,
gradients against finite differences, sampling and scoring through it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnlm import loss as reference_loss
from rnnlm.fast import decoder_loss
from rnnlm.models import LanguageModel, init_params
from rnnlm.sampling import generate

V, E, H = 19, 6, 10


def model_of(k, tied, **kw):
    return LanguageModel(vocab_size=V, embed_size=E, hidden_size=H, num_layers=2, tie_weights=tied, mos_components=k, **kw)


@pytest.fixture(scope="module")
def tokens():
    return jnp.asarray(np.random.default_rng(0).integers(0, V, (3, 7)), jnp.int32)


def features_of(model, params, tokens):
    return model.apply({"params": params}, tokens, model.initial_carry(tokens.shape[0]), method=model.features)[0]


@pytest.mark.slow
@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_one_component_is_a_softmax_over_its_tanh_latent(tokens, tied):
    model = model_of(1, tied)
    params = init_params(model, jax.random.PRNGKey(0))
    h = np.asarray(features_of(model, params, tokens), np.float64)  # the top layer's outputs: no projection
    assert h.shape[-1] == H and "projection" not in params
    latent = np.tanh(h @ np.asarray(params["mos_latent"]) + np.asarray(params["mos_latent_bias"]))
    weight = np.asarray(params["embedding"]).T if tied else np.asarray(params["decoder"])
    logits = latent @ weight + np.asarray(params["decoder_bias"])
    expected = logits - logits.max(-1, keepdims=True)
    expected -= np.log(np.exp(expected).sum(-1, keepdims=True))
    ours = np.asarray(model.apply({"params": params}, tokens, model.initial_carry(3))[0])
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("k", [1, 3, 7])
def test_the_mixture_is_a_distribution_for_every_k(tokens, k):
    model = model_of(k, True)
    params = init_params(model, jax.random.PRNGKey(k))
    log_p = model.apply({"params": params}, tokens, model.initial_carry(3))[0]
    np.testing.assert_allclose(np.exp(np.asarray(log_p, np.float64)).sum(-1), 1.0, rtol=1e-5)
    # The mixture against its definition: sum_k prior_k softmax_k.
    h = np.asarray(features_of(model, params, tokens), np.float64)
    prior = np.exp(h @ np.asarray(params["mos_prior"]))
    prior /= prior.sum(-1, keepdims=True)
    latent = np.tanh(h @ np.asarray(params["mos_latent"]) + np.asarray(params["mos_latent_bias"])).reshape(3, 7, k, E)
    logits = latent @ np.asarray(params["embedding"]).T + np.asarray(params["decoder_bias"])
    soft = np.exp(logits - logits.max(-1, keepdims=True))
    soft /= soft.sum(-1, keepdims=True)
    np.testing.assert_allclose(np.exp(np.asarray(log_p, np.float64)), (prior[..., None] * soft).sum(-2), rtol=1e-4,
                               atol=1e-7)


@pytest.mark.slow
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_the_chunked_loss_equals_the_reference_and_its_gradients(tokens, train):
    model = model_of(3, False)
    params = init_params(model, jax.random.PRNGKey(2))
    targets = jnp.roll(tokens, -1, axis=1)
    weights = jnp.ones(tokens.shape).at[2, 5:].set(0.0)

    def chunked(p):
        return decoder_loss.window_nll(model, p, features_of(model, p, tokens), targets, weights, train=train,
                                       chunk_logits=3 * V * 3)  # several chunks

    def reference(p):
        return reference_loss.window_nll(model, p, features_of(model, p, tokens), targets, weights)

    np.testing.assert_allclose(chunked(params), reference(params), rtol=1e-5)
    ours, theirs = jax.grad(chunked)(params), jax.grad(reference)(params)
    for a, b in zip(jax.tree_util.tree_leaves(ours), jax.tree_util.tree_leaves(theirs)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_gradients_against_finite_differences(tokens):
    """Directional derivatives along random directions of the mixture's parameters: autodiff's against
    central differences (float32, so along whole directions, not single tiny entries)."""
    model = model_of(3, True)
    params = init_params(model, jax.random.PRNGKey(4))
    targets = jnp.roll(tokens, -1, axis=1)

    def loss(p):
        return reference_loss.window_nll(model, p, features_of(model, p, tokens), targets, jnp.ones(tokens.shape))

    grads = jax.grad(loss)(params)
    rng = np.random.default_rng(0)
    for name in ("mos_prior", "mos_latent", "mos_latent_bias", "embedding"):
        for _ in range(2):
            direction = jnp.asarray(rng.normal(size=params[name].shape), jnp.float32)
            step = 1e-2
            numeric = (float(loss({**params, name: params[name] + step * direction}))
                       - float(loss({**params, name: params[name] - step * direction}))) / (2 * step)
            analytic = float(jnp.sum(grads[name] * direction))
            np.testing.assert_allclose(analytic, numeric, rtol=1e-2, atol=1e-3)


@pytest.mark.slow
def test_sampling_and_scoring_read_the_mixture(tokens):
    from rnnlm.scoring import stream_log_probs
    model = model_of(4, True)
    params = init_params(model, jax.random.PRNGKey(5))
    out = generate(model, params, tokens[:, :2], jax.random.PRNGKey(0), 1.0, 1.0, length=5)
    assert out.shape == (3, 5) and (np.asarray(out) < V).all()
    logp = stream_log_probs(model, params, np.asarray(tokens), np.asarray(jnp.roll(tokens, -1, axis=1)))
    log_p = model.apply({"params": params}, tokens, model.initial_carry(3))[0]
    expected = np.take_along_axis(np.asarray(log_p), np.asarray(jnp.roll(tokens, -1, axis=1))[..., None], -1)[..., 0]
    np.testing.assert_allclose(logp, expected, rtol=1e-5, atol=1e-6)
