"""rnnlm/cells.py: every cell against independent references, numpy equations and Flax's own cells."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from conftest import B, D, H
from rnnlm.cells import CELLS, get_cell, project_inputs
from rnnlm.errors import UserError
from rnnlm.recurrence import scan_layer



def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def numpy_step(name, p, carry, x):
    """The cell equations written out gate by gate in numpy, from the docstrings' formulas."""
    p = {k: np.asarray(v, np.float64) for k, v in p.items()}
    x = np.asarray(x, np.float64)
    blocks = lambda w: np.split(w, w.shape[-1] // H, axis=-1)
    wx, b = blocks(p["w_x"]), blocks(p["b"])
    if name == "mingru":  # Feng et al. 2024, eq. for minGRU: gates of x_t only
        (h,) = carry
        z = sigmoid(x @ wx[0] + b[0])
        h = (1 - z) * h + z * (x @ wx[1] + b[1])
        return (h,), h
    if name == "minlstm":
        (h,) = carry
        f = sigmoid(x @ wx[0] + b[0])
        i = sigmoid(x @ wx[1] + b[1])
        h = f / (f + i) * h + i / (f + i) * (x @ wx[2] + b[2])
        return (h,), h
    if name == "mogrifier":  # Melis et al. 2020, eq. 1-2: x and h gate each other, then the LSTM
        c, h_prev = carry
        h = h_prev
        for i in range(1, 6):
            q = p.get(f"{'qr'[1 - i % 2]}_{i}")
            if q is None:
                q = p[f"{'qr'[1 - i % 2]}_{i}_left"] @ p[f"{'qr'[1 - i % 2]}_{i}_right"]
            if i % 2:
                x = 2 * sigmoid(h @ q) * x
            else:
                h = 2 * sigmoid(x @ q) * h
        name = "lstm"
        carry = (c, h)
    wh = blocks(p["w_h"])
    if name == "rnn":
        (h,) = carry
        h = np.tanh(x @ wx[0] + h @ wh[0] + b[0])
        return (h,), h
    if name == "lstm":
        c, h = carry
        i = sigmoid(x @ wx[0] + h @ wh[0] + b[0])
        f = sigmoid(x @ wx[1] + h @ wh[1] + b[1])
        g = np.tanh(x @ wx[2] + h @ wh[2] + b[2])
        o = sigmoid(x @ wx[3] + h @ wh[3] + b[3])
        c = f * c + i * g
        h = o * np.tanh(c)
        return (c, h), h
    (h,) = carry
    r = sigmoid(x @ wx[0] + h @ wh[0] + b[0])
    z = sigmoid(x @ wx[1] + h @ wh[1] + b[1])
    if name == "gru":
        n = np.tanh(x @ wx[2] + b[2] + r * (h @ wh[2] + p["b_hn"]))
        h = (1 - z) * n + z * h
    elif name == "gru_cho":
        n = np.tanh(x @ wx[2] + b[2] + (r * h) @ wh[2])
        h = (1 - z) * n + z * h
    elif name == "gru_seed":
        candidate = np.tanh(x @ wx[2] + b[2] + h @ wh[2])
        h = (1 - z) * r * h + z * candidate
    return (h,), h


def random_params(name, seed=1, input_size=D):
    # A wide init scale makes every gate matter (saturated or not), so a swapped gate shows.
    return get_cell(name).init_params(jax.random.PRNGKey(seed), input_size, H, init_scale=0.8)


def random_carry(name, seed=2):
    keys = jax.random.split(jax.random.PRNGKey(seed), 2)
    return tuple(jax.random.normal(k, (B, H)) for k in keys[:get_cell(name).carry_arity])


@pytest.mark.parametrize("name", sorted(CELLS))
def test_step_shapes_and_carry(name):
    cell = get_cell(name)
    params = random_params(name)
    assert params["w_x"].shape == (D, cell.gates * H)
    if cell.linear is None:
        assert params["w_h"].shape == (H, cell.gates * H)
    else:  # gates of x_t alone: no recurrent matrix at all
        assert "w_h" not in params
    carry = cell.init_carry(B, H)
    assert len(carry) == cell.carry_arity and all(c.shape == (B, H) for c in carry)
    new_carry, y = cell.step(params, carry, jnp.ones((B, D)))
    assert y.shape == (B, H)
    assert jax.tree_util.tree_map(jnp.shape, new_carry) == jax.tree_util.tree_map(jnp.shape, carry)


@pytest.mark.parametrize("name", sorted(CELLS))
def test_step_matches_numpy_equations(name, inputs):
    params = random_params(name)
    carry = random_carry(name)
    want_carry, want_y = numpy_step(name, params, [np.asarray(c, np.float64) for c in carry], inputs[0])
    got_carry, got_y = jax.jit(get_cell(name).step)(params, carry, inputs[0])
    np.testing.assert_allclose(got_y, want_y, rtol=1e-5, atol=1e-5)
    for got, want in zip(got_carry, want_carry):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_lstm_forget_bias_starts_at_one():
    params = get_cell("lstm").init_params(jax.random.PRNGKey(0), D, H)
    np.testing.assert_array_equal(params["b"][H:2 * H], np.ones(H))
    assert np.all(np.abs(params["b"][:H]) <= H ** -0.5)


def _flax_variables_from(name, params):
    """Our fused parameters rewritten under Flax's per-gate Dense names."""
    split = lambda w: jnp.split(w, w.shape[-1] // H, axis=-1)
    wx, wh, b = split(params["w_x"]), split(params["w_h"]), split(params["b"])
    if name == "lstm":
        out = {}
        for k, gate in enumerate("ifgo"):
            out[f"i{gate}"] = {"kernel": wx[k]}
            out[f"h{gate}"] = {"kernel": wh[k], "bias": b[k]}
        return out
    if name == "gru":
        return {"ir": {"kernel": wx[0], "bias": b[0]}, "iz": {"kernel": wx[1], "bias": b[1]},
                "in": {"kernel": wx[2], "bias": b[2]}, "hr": {"kernel": wh[0]}, "hz": {"kernel": wh[1]},
                "hn": {"kernel": wh[2], "bias": params["b_hn"]}}
    return {"i": {"kernel": wx[0], "bias": b[0]}, "h": {"kernel": wh[0]}}


@pytest.mark.parametrize("name,flax_cell", [
    ("lstm", nn.LSTMCell), ("lstm", nn.OptimizedLSTMCell), ("gru", nn.GRUCell), ("rnn", nn.SimpleCell)])
def test_sequence_matches_flax_cell(name, flax_cell, inputs):
    params = random_params(name)
    carry = random_carry(name)
    module = flax_cell(features=H)
    variables = {"params": _flax_variables_from(name, params)}
    flax_carry = carry if name == "lstm" else carry[0]
    flax_ys = []
    for x in inputs:
        flax_carry, y = module.apply(variables, flax_carry, x)
        flax_ys.append(y)
    got_carry, got_ys = jax.jit(functools.partial(scan_layer, get_cell(name)))(params, carry, inputs)
    np.testing.assert_allclose(got_ys, jnp.stack(flax_ys), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got_carry[-1], flax_ys[-1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", [n if n == "gru" else pytest.param(n, marks=pytest.mark.slow) for n in sorted(CELLS)])
def test_gradients_match_finite_differences(name, inputs):
    cell = get_cell(name)
    carry = random_carry(name)

    def loss(params, xs):
        final, ys = scan_layer(cell, params, carry, xs)
        return jnp.sum(ys ** 2) + jnp.sum(final[0] * 0.5)

    # minGRU's candidate is linear in x (no tanh), so its loss curves more: a smaller step for the differences.
    eps = 3e-3 if cell.linear is not None else 1e-2
    check_grads(loss, (random_params(name), inputs[:3]), order=1, modes=["rev"], eps=eps, atol=2e-2, rtol=2e-2)


def test_project_inputs_is_one_affine_map():
    params = random_params("lstm")
    x = jnp.ones((2, 7, D))
    np.testing.assert_allclose(project_inputs(params, x), x @ params["w_x"] + params["b"][None, None], rtol=1e-6)


def test_unknown_cell_names_the_choices():
    with pytest.raises(UserError, match="unknown cell 'lsmt'.*lstm"):
        get_cell("lsmt")


@pytest.mark.parametrize("name", sorted(CELLS))
def test_update_names_its_gates_and_its_carry(name, inputs):
    """`update` returns the new carry (h last, as `carry_names` says) and the gate activations in (0, 1),
    the same step `recurrent_step` and `step` take."""
    cell = get_cell(name)
    params, carry = random_params(name), random_carry(name)
    gx = cell.project(params, inputs[0])
    new_carry, gates = cell.update(params, carry, gx)
    step_carry, y = cell.step(params, carry, inputs[0])
    assert len(new_carry) == len(cell.carry_names) and cell.carry_names[-1] == "h"
    np.testing.assert_array_equal(y, new_carry[-1])
    for a, b in zip(step_carry, new_carry):
        np.testing.assert_array_equal(a, b)
    lstm_gates = {"input_gate", "forget_gate", "output_gate"}
    expected = {"lstm": lstm_gates, "mogrifier": lstm_gates, "rnn": set(), "mingru": {"update_gate"},
                "minlstm": {"forget_gate"}}.get(name, {"reset_gate", "update_gate"})
    assert set(gates) == expected
    for value in gates.values():
        assert value.shape == (B, H) and bool(((value > 0) & (value < 1)).all())


def test_low_rank_mogrifier_matches_numpy_equations(inputs):
    """Rank k: each Q^i, R^i is the product of an [H, k] and a [k, D] factor (Melis et al. 2020, sec. 2)."""
    cell = get_cell("mogrifier", rounds=5, rank=3)
    params = cell.init_params(jax.random.PRNGKey(4), D, H, init_scale=0.8)
    assert params["q_1_left"].shape == (H, 3) and params["q_1_right"].shape == (3, D) and "q_1" not in params
    assert params["r_2_left"].shape == (D, 3) and params["r_2_right"].shape == (3, H)
    carry = random_carry("mogrifier")
    want_carry, want_y = numpy_step("mogrifier", params, [np.asarray(c, np.float64) for c in carry], inputs[0])
    got_carry, got_y = jax.jit(cell.step)(params, carry, inputs[0])
    np.testing.assert_allclose(got_y, want_y, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got_carry[0], want_carry[0], rtol=1e-5, atol=1e-5)


def test_mogrifier_rounds_change_the_step_and_zero_rounds_is_the_lstm(inputs):
    lstm_params = random_params("lstm")
    carry = random_carry("lstm")
    zero = get_cell("mogrifier", rounds=0)
    assert set(zero.init_params(jax.random.PRNGKey(0), D, H)) == set(lstm_params) and zero.core is not None
    want = get_cell("lstm").step(lstm_params, carry, inputs[0])
    np.testing.assert_array_equal(zero.step(lstm_params, carry, inputs[0])[1], want[1])
    # Rounds whose gates are all 2 * sigmoid(0) = 1 leave x and h alone: the LSTM's step again.
    cell = get_cell("mogrifier", rounds=4)
    params = cell.init_params(jax.random.PRNGKey(0), D, H)
    params = {k: (jnp.zeros_like(v) if k[0] in "qr" else lstm_params[k]) for k, v in params.items()}
    np.testing.assert_allclose(cell.step(params, carry, inputs[0])[1], want[1], rtol=1e-6, atol=1e-6)
    # One round more (odd: x gated by h) changes it.
    params5 = get_cell("mogrifier", rounds=5).init_params(jax.random.PRNGKey(0), D, H, init_scale=0.8)
    params5.update(lstm_params)
    assert not np.allclose(get_cell("mogrifier", rounds=5).step(params5, carry, inputs[0])[1], want[1], atol=1e-3)
