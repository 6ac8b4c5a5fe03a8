"""Studies: the gradient-norm probe against a hand computation, the adding problem's labels, traces."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnlm import cli
from rnnlm.models import LanguageModel
from rnnlm.studies import activations, gradients, synthetic


def _init(model, seed=0):
    return model.init({"params": jax.random.PRNGKey(seed)}, jnp.zeros((1, 1), jnp.int32), model.initial_carry(1))["params"]


def test_gradient_norms_match_a_hand_computed_two_step_rnn():
    """h1 = tanh(x1 Wx + b), h2 = tanh(x2 Wx + b + h1 Wh), loss = -log softmax(h2 D + d)[y]."""
    model = LanguageModel(vocab_size=3, embed_size=2, hidden_size=2, num_layers=1, cell="rnn", init_scale=0.9)
    params = jax.tree_util.tree_map(np.asarray, _init(model))
    tokens, target = [2, 1], 0
    e, layer, d, bias = params["embedding"], params["layer_0"], params["decoder"], params["decoder_bias"]
    h1 = np.tanh(e[tokens[0]] @ layer["w_x"] + layer["b"])
    h2 = np.tanh(e[tokens[1]] @ layer["w_x"] + layer["b"] + h1 @ layer["w_h"])
    logits = h2 @ d + bias
    p = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    dlogits = p - np.eye(3)[target]          # d loss / d logits
    dh2 = d @ dlogits                         # d loss / d h2
    dh1 = layer["w_h"] @ (dh2 * (1 - h2 ** 2))  # back through tanh and Wh
    norms = gradients.lag_gradient_norms(model, params, np.array([tokens]), np.array([[1, target]]))
    np.testing.assert_allclose(norms[0], [np.linalg.norm(dh2), np.linalg.norm(dh1)], rtol=1e-5)


def test_top_layer_lag_zero_is_the_softmax_gradient_and_lags_are_per_sequence():
    model = LanguageModel(vocab_size=5, embed_size=3, hidden_size=4, num_layers=2, cell="lstm")
    params = _init(model, 1)
    inputs = np.array([[1, 2, 3, 4], [4, 3, 2, 1]])
    targets = np.array([[2, 3, 4, 0], [3, 2, 1, 2]])
    norms = gradients.lag_gradient_norms(model, params, inputs, targets, layer=1)
    logits, _ = model.apply({"params": params}, jnp.asarray(inputs), model.initial_carry(2))
    p = jax.nn.softmax(logits[:, -1])
    expected = np.linalg.norm((p - jax.nn.one_hot(targets[:, -1], 5)) @ params["decoder"].T, axis=-1)
    np.testing.assert_allclose(norms[:, 0], expected, rtol=1e-5)
    other = gradients.lag_gradient_norms(model, params, np.array([[0, 0, 1, 1], inputs[1]]), targets, layer=1)
    np.testing.assert_allclose(other[1], norms[1], rtol=1e-5)  # each sequence's gradient is its own
    assert not np.allclose(other[0], norms[0])


def test_windows_cut_inputs_and_shifted_targets():
    ids = np.arange(50)
    inputs, targets = gradients.windows(ids, 4, 10)
    assert inputs.shape == targets.shape == (4, 10)
    np.testing.assert_array_equal(targets, inputs + 1)
    assert inputs[0, 0] == 0 and targets[-1, -1] == 49
    np.testing.assert_allclose(gradients.geometric_mean(np.array([[1.0, 100.0], [100.0, 1.0]])), [10.0, 10.0])
    # A norm that underflowed float32 in every window is shown as a bound, not as a value.
    floor = gradients.geometric_mean(np.zeros((3, 1)))[0]
    assert gradients._format_norm(floor).startswith("≤") and gradients._format_norm(3e-5) == "3.00e-05"


@pytest.mark.parametrize("distance", [1, 7, 30])
def test_adding_problem_labels(distance):
    inputs, targets, first = map(np.asarray, synthetic.adding_batch(jax.random.PRNGKey(distance), 200, distance, pad=5))
    assert inputs.shape == (200, distance + 5, 2) and targets.shape == (200,)
    values, markers = inputs[..., 0], inputs[..., 1]
    assert ((values >= 0) & (values < 1)).all()
    assert set(np.unique(markers)) == {0.0, 1.0} and (markers.sum(axis=1) == 2).all()
    for row in range(200):
        marked = np.flatnonzero(markers[row])
        assert marked[0] == first[row] < 5 and marked[1] - marked[0] == distance
        assert targets[row] == pytest.approx(values[row, marked].sum())
    assert len(np.unique(first)) == 5  # the first mark moves


def test_adding_problem_training_and_study_files(tmp_path):
    out = tmp_path / "synthetic"
    assert cli.main(["study", "synthetic", "--cells", "gru", "--distances", "2", "--steps", "3", "--seeds", "2",
                     "--hidden", "4", "--out", str(out)]) == 0
    assert (out / "synthetic.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| gru |" in (out / "synthetic.md").read_text()
    runs = json.loads((out / "synthetic.json").read_text())["runs"]
    assert len(runs) == 1 and len(runs[0]["success"]) == 2 and all(0 <= s <= 1 for s in runs[0]["success"])
    assert cli.main(["study", "synthetic", "--cells", "tree", "--out", str(out)]) == 2


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
