"""rnnlm/studies/activations.py: text features by hand, correlations against numpy, traces against the equations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnlm.models import LanguageModel, init_params
from rnnlm.studies import activations


def _init(model, seed=0):
    return init_params(model, jax.random.PRNGKey(seed))


def test_text_features_by_hand():
    text = 'a"b(c)"\n(x'
    f = activations.text_features(text)
    np.testing.assert_array_equal(f["inside_quotes"], [0, 1, 1, 1, 1, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(f["line_position"], [1, 2, 3, 4, 5, 6, 7, 0, 1, 2])
    np.testing.assert_array_equal(f["bracket_depth"], [0, 0, 0, 1, 1, 0, 0, 0, 1, 1])


def test_correlations_against_numpy_and_a_planted_unit():
    rng = np.random.default_rng(0)
    states = rng.normal(size=(200, 6))
    feature = rng.normal(size=200)
    states[:, 4] = -2 * feature + 0.1 * rng.normal(size=200)
    states[:, 5] = 3.0  # constant
    r = activations.correlations(states, feature)
    expected = [np.corrcoef(states[:, j], feature)[0, 1] for j in range(5)]
    np.testing.assert_allclose(r[:5], expected, rtol=1e-10)
    assert r[5] == 0.0
    result = activations.Trace([str(i) for i in range(200)], np.zeros(200), [{"h": states}])
    best = activations.unit_correlations(result, feature, 1)[0]
    assert (best["layer"], best["state"], best["unit"]) == (0, "h", 4) and best["r"] < -0.99


@pytest.mark.slow
def test_trace_matches_numpy_lstm_equations():
    model = LanguageModel(vocab_size=7, embed_size=3, hidden_size=4, num_layers=2, cell="lstm")
    params = _init(model, 2)
    ids = np.array([1, 5, 2, 6, 3, 0, 4])
    result = activations.trace(model, params, ids)
    sigmoid = lambda x: 1 / (1 + np.exp(-x))
    xs = np.asarray(params["embedding"])[ids]
    for depth in range(2):
        p = jax.tree_util.tree_map(np.asarray, params[f"layer_{depth}"])
        c, h, hs = np.zeros(4), np.zeros(4), []
        for t, x in enumerate(xs):
            i, f, g, o = np.split(x @ p["w_x"] + p["b"] + h @ p["w_h"], 4)
            c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
            h = sigmoid(o) * np.tanh(c)
            hs.append(h)
            got = result.layers[depth]
            np.testing.assert_allclose([got["input_gate"][t], got["forget_gate"][t], got["output_gate"][t],
                                        got["c"][t], got["h"][t]], [sigmoid(i), sigmoid(f), sigmoid(o), c, h],
                                       rtol=1e-4, atol=1e-6)
        xs = np.array(hs)
    logits, _ = model.apply({"params": params}, jnp.asarray(ids[None]), model.initial_carry(1))
    logp = jax.nn.log_softmax(logits[0])
    assert np.isnan(result.surprisal[0])
    np.testing.assert_allclose(result.surprisal[1:], -logp[np.arange(6), ids[1:]] / np.log(2), rtol=1e-5)


def test_gru_trace_has_reset_and_update_gates():
    model = LanguageModel(vocab_size=5, embed_size=3, hidden_size=4, num_layers=1, cell="gru")
    result = activations.trace(model, _init(model), np.array([1, 2, 3]))
    assert set(result.layers[0]) == {"h", "reset_gate", "update_gate"}
    assert ((result.layers[0]["update_gate"] > 0) & (result.layers[0]["update_gate"] < 1)).all()

