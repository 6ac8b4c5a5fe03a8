"""rnnlm/recurrence.py: the reference scan of a layer, stacks, dropout and the studies' probe."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnlm.cells import CELLS, get_cell
from rnnlm.recurrence import Probe, dropout, initial_carry, run_stack, scan_layer, scan_projected
from conftest import B, H, T
from test_cells import random_carry, random_params


def python_loop(cell, params, carry, xs):
    ys = []
    for x in xs:
        carry, y = cell.step(params, carry, x)
        ys.append(y)
    return carry, jnp.stack(ys)


@pytest.mark.parametrize("name", sorted(CELLS))
def test_scan_equals_a_python_loop_over_the_step(name, inputs):
    cell = get_cell(name)
    params, carry = random_params(name), random_carry(name)
    loop_carry, loop_ys = python_loop(cell, params, carry, inputs)
    scan_carry, scan_ys = jax.jit(functools.partial(scan_layer, cell))(params, carry, inputs)
    np.testing.assert_allclose(scan_ys, loop_ys, rtol=1e-5, atol=1e-6)
    for a, b in zip(scan_carry, loop_carry):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # reverse: the same loop over the reversed sequence, its outputs in the original order
    reverse_carry, reverse_ys = scan_layer(cell, params, carry, inputs, reverse=True)
    loop_carry, loop_ys = python_loop(cell, params, carry, inputs[::-1])
    np.testing.assert_allclose(reverse_ys, loop_ys[::-1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(reverse_carry[-1], loop_carry[-1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("reverse", [False, pytest.param(True, marks=pytest.mark.slow)])
@pytest.mark.parametrize("name", [n if n in ("lstm", "gru_cho") else pytest.param(n, marks=pytest.mark.slow)
                                  for n in sorted(CELLS)])
def test_mask_freezes_the_carry_on_padding(name, reverse, inputs):
    """Post-padded rows (forward) or pre-padded ones (reverse): the same as each row's real steps alone."""
    cell = get_cell(name)
    params, carry = random_params(name), random_carry(name)
    lengths = np.array([T, 2, 4])
    valid = np.arange(T)[:, None] < lengths[None, :]
    mask = jnp.asarray(valid[::-1] if reverse else valid)
    final, ys = jax.jit(functools.partial(scan_layer, cell, reverse=reverse))(params, carry, inputs, mask)
    for b, length in enumerate(lengths):
        steps = slice(T - length, T) if reverse else slice(0, length)
        row_carry = tuple(c[b:b + 1] for c in carry)
        want_final, want_ys = scan_layer(cell, params, row_carry, inputs[steps, b:b + 1], reverse=reverse)
        np.testing.assert_allclose(ys[steps, b], want_ys[:, 0], rtol=1e-5, atol=1e-6)
        padded = np.ones(T, bool)
        padded[steps] = False
        assert (np.asarray(ys)[padded, b] == 0).all()  # padding outputs zeros
        for got, want in zip(final, want_final):
            np.testing.assert_allclose(got[b], want[0], rtol=1e-5, atol=1e-6)


def test_a_stack_is_its_layers_one_after_the_other(inputs):
    """Two layers, dropout between them with the key folded by depth; bidirectional: each layer reads
    [forward, backward] of the one below, the backward half run with reverse=True."""
    cell = get_cell("gru")
    layers = [random_params("gru", 1), random_params("gru", 3, input_size=H)]
    carries = initial_carry(cell, 2, B, H)
    rng = jax.random.PRNGKey(7)
    finals, ys = run_stack(cell, layers, carries, inputs, dropout_rate=0.5, rng=rng)
    first_carry, first = scan_layer(cell, layers[0], carries[0], inputs)
    second_carry, second = scan_layer(cell, layers[1], carries[1], dropout(jax.random.fold_in(rng, 1), 0.5, first))
    np.testing.assert_allclose(ys, second, rtol=1e-6)
    np.testing.assert_allclose(finals[0][0], first_carry[0], rtol=1e-6)
    np.testing.assert_allclose(finals[1][0], second_carry[0], rtol=1e-6)

    upper = random_params("gru", 4, input_size=2 * H)
    backward = [random_params("gru", 5), random_params("gru", 6, input_size=2 * H)]
    (forward_finals, backward_finals), ys = run_stack(cell, [layers[0], upper], carries, inputs,
                                                      reverse_layers=backward, reverse_carries=carries)
    below = jnp.concatenate([first, scan_layer(cell, backward[0], carries[0], inputs, reverse=True)[1]], axis=-1)
    top_backward_carry, top_backward = scan_layer(cell, backward[1], carries[1], below, reverse=True)
    np.testing.assert_allclose(ys[..., H:], top_backward, rtol=1e-6)
    np.testing.assert_allclose(ys[..., :H], scan_layer(cell, upper, carries[1], below)[1], rtol=1e-6)
    np.testing.assert_allclose(backward_finals[1][0], top_backward_carry[0], rtol=1e-6)
    assert len(forward_finals) == len(backward_finals) == 2


def test_dropout_is_inverted_and_off_without_a_key():
    x = jnp.ones((1000, 10))
    np.testing.assert_array_equal(dropout(None, 0.5, x), x)
    np.testing.assert_array_equal(dropout(jax.random.PRNGKey(0), 0.0, x), x)
    dropped = np.asarray(dropout(jax.random.PRNGKey(0), 0.25, x))
    np.testing.assert_allclose(np.unique(dropped), [0.0, 1 / 0.75], rtol=1e-6)
    assert abs((dropped == 0).mean() - 0.25) < 0.02


@pytest.mark.parametrize("name", ["lstm", "gru_cho"])
def test_a_recording_probe_returns_every_steps_carry_and_gates(name, inputs):
    cell = get_cell(name)
    params, carry = random_params(name), random_carry(name)
    final, recorded = scan_layer(cell, params, carry, inputs, record=True)
    c = carry
    for t, x in enumerate(inputs):
        c, gates = cell.update(params, c, cell.project(params, x))
        for part, value in zip(cell.carry_names, c):
            np.testing.assert_allclose(recorded[part][t], value, rtol=1e-5, atol=1e-6)
        for gate, value in gates.items():
            np.testing.assert_allclose(recorded[gate][t], value, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(recorded["h"][-1], final[-1], rtol=1e-6)


def test_a_perturbation_probe_differentiates_with_respect_to_h(inputs):
    """d loss / d perturbation_t is d loss / d h_t: checked against a finite difference of h_t itself."""
    cell = get_cell("rnn")
    params, carry = random_params("rnn"), random_carry("rnn")
    weights = jax.random.normal(jax.random.PRNGKey(9), (B, H))

    def loss(perturbation):
        _, ys = scan_layer(cell, params, carry, inputs, perturbation=perturbation)
        return jnp.sum(ys[-1] * weights)

    grads = jax.grad(loss)(jnp.zeros((T, B, H)))
    t, eps = 2, 1e-3

    def loss_with_h_moved(delta):  # the loop by hand, h_2 moved by delta in unit (0, 1) of row 0
        c = carry
        for step, x in enumerate(inputs):
            c, _ = cell.step(params, c, x)
            if step == t:
                c = (c[0].at[0, 1].add(delta),)
        return float(jnp.sum(c[0] * weights))
    finite = (loss_with_h_moved(eps) - loss_with_h_moved(-eps)) / (2 * eps)
    np.testing.assert_allclose(float(grads[t, 0, 1]), finite, rtol=2e-3)
    assert float(jnp.abs(grads[T - 1] - weights).max()) < 1e-6  # the last step's h is the output itself
    probe_ys = run_stack(cell, [params], (carry,), inputs, probe=Probe(layer=0, perturbation=jnp.ones((T, B, H))))[1]
    assert not np.allclose(probe_ys, scan_layer(cell, params, carry, inputs)[1])  # the probe reaches the stack


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mingru", "minlstm"])
def test_parallel_scan_of_a_linear_cell_equals_its_loop(name):
    """`scan_linear` (associative scan over affine maps) against the sequential scan of the same update:
    two chained windows from a random state, a ragged mask both ways, and the gradients of both."""
    cell = get_cell(name)
    params, carry = random_params(name), random_carry(name)
    xs = jax.random.normal(jax.random.PRNGKey(5), (2 * T + 1, B, params["w_x"].shape[0]))
    gx = cell.project(params, xs)
    lengths = np.array([2 * T + 1, 3, 7])
    valid = np.arange(2 * T + 1)[:, None] < lengths[None, :]
    for reverse in (False, True):
        mask = jnp.asarray(valid[::-1] if reverse else valid)
        for m in (None, mask):
            windows = [slice(0, T), slice(T, 2 * T + 1)]
            c_par = c_seq = carry
            for w in (windows[::-1] if reverse else windows):
                mw = None if m is None else m[w]
                c_par, y_par = scan_projected(cell, params, c_par, gx[w], mw, reverse=reverse)
                c_seq, y_seq = scan_projected(cell, params, c_seq, gx[w], mw, reverse=reverse, parallel=False)
                np.testing.assert_allclose(y_par, y_seq, rtol=1e-5, atol=1e-6)
                np.testing.assert_allclose(c_par[0], c_seq[0], rtol=1e-5, atol=1e-6)

    def loss(params, parallel):
        final, ys = scan_projected(cell, params, carry, cell.project(params, xs), mask, parallel=parallel)
        return jnp.sum(ys ** 2) + jnp.sum(jnp.sin(final[0]))

    mask = jnp.asarray(valid)
    g_par, g_seq = jax.grad(loss)(params, True), jax.grad(loss)(params, False)
    for k in params:
        np.testing.assert_allclose(g_par[k], g_seq[k], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_parallel_scan_forgets_a_state_whose_weight_underflows():
    """Many steps with a ~ 1e-3: the prefix product underflows to 0 in float32, h_0's true weight."""
    cell = get_cell("mingru")
    params = {"w_x": jnp.zeros((1, 2 * H)), "b": jnp.concatenate([jnp.full((H,), 7.0), jnp.ones(H)])}
    gx = cell.project(params, jnp.zeros((64, 1, 1)))
    h0 = (jnp.full((1, H), 1e30),)
    (final,), ys = scan_projected(cell, params, h0, gx)
    (want,), want_ys = scan_projected(cell, params, h0, gx, parallel=False)
    assert np.isfinite(np.asarray(ys)).all()
    np.testing.assert_allclose(final, want, rtol=1e-5)
    np.testing.assert_allclose(ys, want_ys, rtol=1e-5)


def test_a_stack_with_layer_norm_and_residuals_is_its_layers_in_numpy_terms(inputs):
    """Pre-norm residual layers: layer l reads LN(x_l) (numpy: (x - mean) / sqrt(var + 1e-5) * scale + bias)
    and adds x_l where widths agree (not the first layer: D != H); padding outputs stay zero."""
    cell = get_cell("mingru")
    layers = [random_params("mingru", 1), random_params("mingru", 3, input_size=H)]
    norms = [{"scale": jnp.linspace(0.5, 1.5, n), "bias": jnp.linspace(-0.2, 0.2, n)} for n in (inputs.shape[-1], H)]
    carries = initial_carry(cell, 2, B, H)
    mask = jnp.asarray(np.arange(T)[:, None] < np.array([T, 2, 4])[None, :])
    _, ys = run_stack(cell, layers, carries, inputs, mask, norms=norms, residual=True)

    def ln(x, p):
        x = np.asarray(x, np.float64)
        mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + 1e-5) * np.asarray(p["scale"]) + np.asarray(p["bias"])

    _, first = scan_layer(cell, layers[0], carries[0], jnp.asarray(ln(inputs, norms[0]), jnp.float32), mask)
    _, second = scan_layer(cell, layers[1], carries[1], jnp.asarray(ln(first, norms[1]), jnp.float32), mask)
    want = np.asarray(second) + np.where(np.asarray(mask)[:, :, None], np.asarray(first), 0.0)
    np.testing.assert_allclose(ys, want, rtol=1e-5, atol=1e-5)
    assert (np.asarray(ys)[~np.asarray(mask)] == 0).all()
