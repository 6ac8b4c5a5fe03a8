"""Cells against independent references: numpy equations and Flax's own cells."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from rnnlm.cells import CELLS, get_cell, project_inputs
from rnnlm.errors import UserError
from rnnlm.recurrence import input_table, run_wavefront, scan_layer, scan_plain

B, D, H, T = 3, 5, 4, 6


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def numpy_step(name, p, carry, x):
    """The cell equations written out gate by gate in numpy, from the docstrings' formulas."""
    p = {k: np.asarray(v, np.float64) for k, v in p.items()}
    x = np.asarray(x, np.float64)
    blocks = lambda w: np.split(w, w.shape[-1] // H, axis=-1)
    wx, wh, b = blocks(p["w_x"]), blocks(p["w_h"]), blocks(p["b"])
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


@pytest.fixture(scope="module")
def inputs():
    key = jax.random.PRNGKey(0)
    xs = jax.random.normal(key, (T, B, D))
    return xs


def random_params(name, seed=1):
    # A wide init scale makes every gate matter (saturated or not), so a swapped gate shows.
    return get_cell(name).init_params(jax.random.PRNGKey(seed), D, H, init_scale=0.8)


def random_carry(name, seed=2):
    keys = jax.random.split(jax.random.PRNGKey(seed), 2)
    return tuple(jax.random.normal(k, (B, H)) for k in keys[:get_cell(name).carry_arity])


@pytest.mark.parametrize("name", sorted(CELLS))
def test_step_shapes_and_carry(name):
    cell = get_cell(name)
    params = random_params(name)
    assert params["w_x"].shape == (D, cell.gates * H)
    assert params["w_h"].shape == (H, cell.gates * H)
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


@pytest.mark.parametrize("name", sorted(CELLS))
def test_scan_equals_python_loop_over_step(name, inputs):
    cell = get_cell(name)
    params, carry = random_params(name), random_carry(name)
    loop_carry, loop_ys = carry, []
    for x in inputs:
        loop_carry, y = cell.step(params, loop_carry, x)
        loop_ys.append(y)
    scan_carry, scan_ys = jax.jit(functools.partial(scan_layer, cell))(params, carry, inputs)
    np.testing.assert_allclose(scan_ys, jnp.stack(loop_ys), rtol=1e-5, atol=1e-6)
    for a, b in zip(scan_carry, loop_carry):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(CELLS))
def test_mask_freezes_the_carry_on_padding(name, inputs):
    cell = get_cell(name)
    params, carry = random_params(name), random_carry(name)
    lengths = np.array([T, 2, 4])
    mask = jnp.asarray(np.arange(T)[:, None] < lengths[None, :])
    final, ys = jax.jit(functools.partial(scan_layer, cell))(params, carry, inputs, mask)
    for b, length in enumerate(lengths):
        row_carry = tuple(c[b:b + 1] for c in carry)
        want_final, want_ys = scan_layer(cell, params, row_carry, inputs[:length, b:b + 1])
        np.testing.assert_allclose(ys[:length, b], want_ys[:, 0], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(ys[length:, b], 0.0)
        for got, want in zip(final, want_final):
            np.testing.assert_allclose(got[b], want[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(CELLS))
def test_gradients_match_finite_differences(name, inputs):
    cell = get_cell(name)
    carry = random_carry(name)

    def loss(params, xs):
        final, ys = scan_layer(cell, params, carry, xs)
        return jnp.sum(ys ** 2) + jnp.sum(final[0] * 0.5)

    check_grads(loss, (random_params(name), inputs[:3]), order=1, modes=["rev"], eps=1e-2, atol=2e-2, rtol=2e-2)


def test_project_inputs_is_one_affine_map():
    params = random_params("lstm")
    x = jnp.ones((2, 7, D))
    np.testing.assert_allclose(project_inputs(params, x), x @ params["w_x"] + params["b"], rtol=1e-6)


def test_unknown_cell_names_the_choices():
    with pytest.raises(UserError, match="unknown cell 'lsmt'.*lstm"):
        get_cell("lsmt")


@pytest.mark.parametrize("in_loop,masked", [(True, True), (False, True), (True, False)],
                         ids=["projected-in-loop", "projected-before", "unmasked"])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("name", sorted(CELLS))
def test_hand_written_backward_through_time_equals_autodiff(name, reverse, in_loop, masked, inputs):
    """scan_layer's custom VJP (weight gradients as matmuls after the loop) == JAX's transpose of the scan,
    with the input projection inside the loop (CPUs) and before it (accelerators)."""
    cell = get_cell(name)
    params, carry = random_params(name), random_carry(name)
    mask = jnp.asarray(np.arange(T)[:, None] < np.array([T, 2, 4])[None, :]) if masked else None

    def loss(layer, params, carry, xs):
        final, ys = layer(params, carry, xs)
        return jnp.sum(ys * jnp.arange(1.0, H + 1.0)) + sum(jnp.sum(c ** 2) for c in final)

    fused = lambda p, c, xs: scan_layer(cell, p, c, xs, mask, reverse=reverse, in_loop=in_loop)
    plain = lambda p, c, xs: scan_plain(cell, p, c, project_inputs(p, xs), mask, reverse=reverse)
    got = jax.grad(functools.partial(loss, fused), argnums=(0, 1, 2))(params, carry, inputs)
    want = jax.grad(functools.partial(loss, plain), argnums=(0, 1, 2))(params, carry, inputs)
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("masked", [True, False], ids=["masked", "unmasked"])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("name", sorted(CELLS))
def test_a_layer_reading_an_input_table_by_id_equals_embedding_then_projection(name, reverse, masked):
    """scan_layer over token ids into input_table(embedding, params): the same outputs (forward-only, one-hot
    rows) and the same gradients for the embedding and every weight (gathered rows, scatter-added
    backward) as the layer over embedding[ids], differentiated by JAX."""
    cell, vocab = get_cell(name), 7
    params, carry = random_params(name), random_carry(name)
    embedding = jax.random.normal(jax.random.PRNGKey(5), (vocab, D))
    ids = jax.random.randint(jax.random.PRNGKey(6), (T, B), 0, vocab).at[0].set(vocab - 1)
    mask = jnp.asarray(np.arange(T)[:, None] < np.array([T, 2, 4])[None, :]) if masked else None

    def by_table(params, embedding, carry):
        table_params = {**params, "w_x": input_table(embedding, params)}
        return scan_layer(cell, table_params, carry, ids, mask, reverse=reverse)

    def by_embedding(params, embedding, carry):
        xs = embedding[ids]
        return scan_plain(cell, params, carry, project_inputs(params, xs), mask, reverse=reverse)

    def loss(layer, *args):
        final, ys = layer(*args)
        return jnp.sum(ys * jnp.arange(1.0, H + 1.0)) + sum(jnp.sum(c ** 2) for c in final)

    for a, b in zip(jax.tree_util.tree_leaves(jax.jit(by_table)(params, embedding, carry)),
                    jax.tree_util.tree_leaves(by_embedding(params, embedding, carry))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    got = jax.grad(functools.partial(loss, by_table), argnums=(0, 1, 2))(params, embedding, carry)
    want = jax.grad(functools.partial(loss, by_embedding), argnums=(0, 1, 2))(params, embedding, carry)
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("depth,steps,unroll", [(2, 2, 1), (3, 7, 2)])
@pytest.mark.parametrize("name", [n for n in sorted(CELLS) if CELLS[n].core is not None])
def test_a_wavefront_over_the_layers_equals_the_numpy_stack(name, depth, steps, unroll):
    """run_wavefront (layer l a step behind layer l-1, all layers' products batched) against the cell
    equations in numpy, layer after layer: top outputs and every layer's final carry. Covers the
    shortest sequence it takes (one step per layer), where the loop itself has a single step."""
    cell = get_cell(name)
    layers = [cell.init_params(jax.random.PRNGKey(10 + layer), H, H, init_scale=0.8) for layer in range(depth)]
    carries = tuple(random_carry(name, seed=20 + layer) for layer in range(depth))
    xs = jax.random.normal(jax.random.PRNGKey(3), (steps, B, H))
    finals, ys = jax.jit(functools.partial(run_wavefront, cell, unroll=unroll))(layers, carries, xs)

    want = np.asarray(xs, np.float64)
    for layer, (params, carry) in enumerate(zip(layers, carries)):
        carry = tuple(np.asarray(c, np.float64) for c in carry)
        outputs = []
        for x in want:
            carry, y = numpy_step(name, params, carry, x)
            outputs.append(y)
        want = np.stack(outputs)
        for got_c, want_c in zip(finals[layer], carry):
            np.testing.assert_allclose(got_c, want_c, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ys, want, rtol=1e-5, atol=1e-5)


def test_a_wavefront_refuses_fewer_steps_than_layers():
    """With T < L the fill would read past the sequence, where indexing clamps instead of failing."""
    cell = get_cell("lstm")
    layers = [cell.init_params(jax.random.PRNGKey(layer), H, H) for layer in range(3)]
    carries = tuple(random_carry("lstm") for _ in range(3))
    with pytest.raises(ValueError, match="one step per layer: 2 steps, 3 layers"):
        run_wavefront(cell, layers, carries, jnp.zeros((2, B, H)))


@pytest.mark.parametrize("name", [n for n in sorted(CELLS) if CELLS[n].core is not None])
def test_summed_gates_is_exactly_what_the_core_sees_only_as_a_sum(name):
    """`Cell.summed_gates` lets the backward pass keep gx + gh alone for those gate blocks; it
    must cover exactly the blocks where that is lossless (one more block must change the output)."""
    cell = get_cell(name)
    params, carry = random_params(name), random_carry(name)
    keys = jax.random.split(jax.random.PRNGKey(3), 2)
    gx, gh = (jax.random.normal(k, (B, cell.gates * H)) for k in keys)
    split = cell.core(params, carry, gx, gh)[1]

    def moved(blocks):  # the recurrent part of the first `blocks` gate blocks moved into gx
        k = blocks * H
        return cell.core(params, carry, gx.at[:, :k].add(gh[:, :k]), gh.at[:, :k].set(0.0))[1]
    np.testing.assert_allclose(moved(cell.summed_gates), split, atol=1e-6)
    if cell.summed_gates < cell.gates:
        assert not np.allclose(moved(cell.summed_gates + 1), split, atol=1e-6)
