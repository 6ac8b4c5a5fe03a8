"""rnnlm/studies/gradients.py: the gradient-norm probe against a hand computation, and the study's files."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import assert_png
from rnnlm import cli
from rnnlm.models import LanguageModel, init_params
from rnnlm.studies import gradients


def _init(model, seed=0):
    return init_params(model, jax.random.PRNGKey(seed))


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


def test_gradient_norms_far_below_float32s_square_range_are_exact():
    """Entries of 1e-20 to 1e-30 are normal float32 numbers whose squares XLA's CPU backend flushes to zero;
    the norms must still match a float64 hand computation (h_t = tanh(x_t Wx + b + h_{t-1} Wh), Wh tiny)."""
    model = LanguageModel(vocab_size=3, embed_size=2, hidden_size=2, num_layers=1, cell="rnn", init_scale=0.9)
    params = jax.tree_util.tree_map(np.asarray, _init(model))
    params["layer_0"]["w_h"] = params["layer_0"]["w_h"] * np.float32(1e-5)  # each lag costs ~5 decades
    tokens, target = [2, 1, 0, 2, 1, 1, 0], 1
    e, d, bias = (np.asarray(params[k], np.float64) for k in ("embedding", "decoder", "decoder_bias"))
    w_x, w_h, b = (np.asarray(params["layer_0"][k], np.float64) for k in ("w_x", "w_h", "b"))
    hs, h = [], np.zeros(2)
    for token in tokens:
        h = np.tanh(e[token] @ w_x + b + h @ w_h)
        hs.append(h)
    logits = hs[-1] @ d + bias
    p = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    grad = d @ (p - np.eye(3)[target])  # d loss / d h_T
    expected = []
    for k in range(len(tokens)):
        expected.append(np.linalg.norm(grad))
        grad = w_h @ (grad * (1 - hs[-1 - k] ** 2))
    assert 1e-37 < expected[-1] < 1e-20  # the test reaches the range where the old norm returned 0
    norms = gradients.lag_gradient_norms(model, params, np.array([tokens]), np.array([tokens[1:] + [target]]))
    np.testing.assert_allclose(norms[0], expected, rtol=1e-4)


def test_scaled_norm_keeps_tiny_and_huge_vectors():
    x = jnp.array([[3e-25, 4e-25], [3e30, 4e30], [0.0, 0.0]], jnp.float32)
    np.testing.assert_allclose(jax.jit(gradients.scaled_norm)(x), [5e-25, 5e30, 0.0], rtol=1e-6)


@pytest.mark.slow
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


@pytest.mark.slow
def test_gradient_study_files(char_run, tmp_path):
    assert cli.main(["study", "gradients", "--workdir", str(char_run), "--lags", "12", "--windows", "3",
                     "--out", str(tmp_path)]) == 0
    curves = json.loads((tmp_path / "gradients.json").read_text())["curves"]
    assert [c["state"] for c in curves] == ["trained", "initial"]
    assert all(len(c["norms"]) == 12 and c["norms"][0] > 0 for c in curves)
    assert "| lstm H=12 | trained |" in (tmp_path / "gradients.md").read_text()
    assert_png(tmp_path / "gradients.png")
