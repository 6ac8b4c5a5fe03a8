"""A layer's scan with a hand-written backward pass through time: `rnnlm.recurrence.scan_layer`, faster.

For cells whose step is "one recurrent matmul gh = h @ w_h, then elementwise
gates" (`Cell.core`), JAX's transpose of `lax.scan` makes the weight gradients
as T small [B, H]^T @ [B, G*H] products inside its loop. Here the backward loop
only carries the gate gradients; the weight and input gradients are then
[D or H, T*B] @ [T*B, G*H] matmuls over all steps at once (split by gate blocks,
summed or not: one for the LSTM, two for the GRU). The forward pass keeps, per
step, the incoming carry and the pre-activations the core needs (`_pre_activations`),
and the backward pass writes each step's gradients over the pre-activations it
has just read for the last time, so no second [T, B, G*H] array is made.

On CPUs each step also computes its own input projection x_t @ w_x + b next to
h @ w_h (`in_loop`): on XLA's CPU backend that measured faster than one
[T*B, D] @ [D, G*H] matmul before the loop, whose [T, B, G*H] result goes to
memory and back (docs/levers.md). Accelerators keep the single matmul.

The inputs can also be token ids into an input table (`rnnlm.fast.table`). Same
values and gradients as the reference in float32 (tests/test_fast.py); a cell
without a core runs the reference loop.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from rnnlm.cells import Cell, add_bias, matmul
from rnnlm.fast import table
from rnnlm.fast.precision import weight_gradient
from rnnlm.recurrence import scan_projected


def scan_layer(cell: Cell, params, carry, xs, mask=None, *, in_loop: bool, reverse=False, unroll=1, parallel=True):
    """`rnnlm.recurrence.scan_layer` with the backward pass written out (cells with a core).

    Args (beyond the reference's):
      xs: [T, B, D] inputs, or [T, B] integer ids into params["w_x"] when that is an input table
        (`rnnlm.fast.table.input_table`; its rows include the bias, params["b"] is unused). The ids
        must be in range: nothing checks them (a gather clamps, a one-hot row of an unknown id is zero).
      in_loop: project the inputs inside the loop (True: CPUs, `rnnlm.fast.choose`) or before it (False).
        Same results either way.
    """
    ids = table.are_ids(xs)
    if cell.core is None:
        gx = jnp.take(params["w_x"], xs, axis=0) if ids else cell.project(params, xs)
        return scan_projected(cell, params, carry, gx, mask, reverse=reverse, unroll=unroll, parallel=parallel)
    core_params = _core_params(params)
    bias = None if ids else params["b"]
    return _scan_fused(cell, reverse, unroll, in_loop, core_params, params["w_x"], bias, params["w_h"], carry, xs, mask)


def _core_params(params):
    """A cell's parameters other than its matrices and input bias (a GRU's b_hn): what its core reads."""
    return {k: v for k, v in params.items() if k not in ("w_x", "w_h", "b")}


def _core_step(cell, core_params, carry, g, gh, m):
    """One step of the core, padding steps (m False) keeping the old carry and giving zeros."""
    new_carry, _ = cell.core(core_params, carry, g, gh)
    y = new_carry[-1]
    if m is None:
        return new_carry, y
    m = m[:, None]
    return tuple(jnp.where(m, n, o) for n, o in zip(new_carry, carry)), jnp.where(m, y, jnp.zeros_like(y))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2, 3))
def _scan_fused(cell, reverse, unroll, in_loop, core_params, w_x, bias, w_h, carry, xs, mask):
    # Forward only (evaluation, scoring, sampling): a table is read through one-hot rows where a
    # gather would land in the gate arithmetic (`table.rows`).
    return _forward(cell, reverse, unroll, in_loop, cell.summed_gates != cell.gates, core_params, w_x, bias,
                    w_h, carry, xs, mask)[0]


def _scan_fused_fwd(cell, reverse, unroll, in_loop, core_params, w_x, bias, w_h, carry, xs, mask):
    return _forward(cell, reverse, unroll, in_loop, False, core_params, w_x, bias, w_h, carry, xs, mask)


def _forward(cell, reverse, unroll, in_loop, rows_by_one_hot, core_params, w_x, bias, w_h, carry, xs, mask):
    ids = table.are_ids(xs)
    in_loop = in_loop or ids
    gx = None if in_loop else add_bias(matmul(xs, w_x), bias)

    def body(c, inputs):
        x, m = inputs
        if in_loop:
            g = table.rows(w_x, x, rows_by_one_hot) if ids else add_bias(matmul(x, w_x), bias)
        else:
            g = x
        gh = matmul(c[-1], w_h)
        new_c, y = _core_step(cell, core_params, c, g, gh, m)
        # Keep each step's incoming carry and what the backward pass needs of the pre-activations.
        return new_c, (y, c, _pre_activations(cell, g, gh))

    final, (ys, carries_in, pre) = jax.lax.scan(body, carry, (xs if in_loop else gx, mask),
                                                reverse=reverse, unroll=unroll)
    return (final, ys), (core_params, w_x, w_h, carries_in, xs, pre, mask)


def _pre_activations(cell, g, gh):
    """(the sum g + gh of the gate blocks the core sees only summed, the rest of g, the rest of gh).

    All of an LSTM's blocks are summed (one [B, 4H] array kept per step); a GRU's reset
    gate multiplies the recurrent part of its candidate only, so it keeps r and z summed
    and both parts of n: 4H per step instead of 6H.
    """
    k = g.shape[-1] // cell.gates * cell.summed_gates
    return g[..., :k] + gh[..., :k], g[..., k:], gh[..., k:]


def _scan_fused_bwd(cell, reverse, unroll, in_loop, residuals, cotangents):
    # The same for both places of the input projection: the residuals do not depend on it.
    core_params, w_x, w_h, carries_in, xs, pre, mask = residuals
    d_final, d_ys = cotangents
    k = pre[0].shape[-1]  # width of the summed blocks
    # Transposed once, outside the loop: inside it, a dot that reads its weight transposed measured slower.
    w_h_t = w_h.T

    def body(carry, inputs):
        d_carry, pre_summed = carry
        t, c, (g_rest, gh_rest), d_y, m = inputs
        summed = pre_summed[t]
        # Rebuild pre-activations that give the core the same inputs: the summed blocks
        # wholly in g, and the per-part blocks as they were (zero in gh where summed).
        g = jnp.concatenate([summed, g_rest], axis=-1)
        gh = jnp.concatenate([jnp.zeros_like(summed), gh_rest], axis=-1)
        _, vjp = jax.vjp(functools.partial(_core_step, cell, m=m), core_params, c, g, gh)
        # A summed block's gradient is the same for its input and recurrent parts, so d_gh
        # is the whole [B, G*H] gradient of h @ w_h.
        d_core, d_c, d_g, d_gh = vjp((d_carry, d_y))
        d_summed, d_g_rest, d_gh_rest = d_g[..., :k], d_g[..., k:], d_gh[..., k:]
        d_h = d_c[-1] + matmul(d_gh, w_h_t)
        # Step t's gradients overwrite its pre-activations, read here for the last time.
        return (d_c[:-1] + (d_h,), pre_summed.at[t].set(d_summed)), (d_g_rest, d_gh_rest, d_core)

    steps = jnp.arange(d_ys.shape[0])
    (d_carry, d_summed), (d_g_rest, d_gh_rest, d_cores) = jax.lax.scan(
        body, (d_final, pre[0]), (steps, carries_in, pre[1:], d_ys, mask), reverse=not reverse, unroll=unroll)
    # Every step's products with the weights at once, as [D or H, T*B] @ [T*B, G*H] matmuls,
    # block by block so that the summed blocks' one gradient serves both weights.
    h_in = carries_in[-1]
    d_w_h = _blocks(weight_gradient(h_in, d_summed, w_h), weight_gradient(h_in, d_gh_rest, w_h))
    d_core = jax.tree_util.tree_map(lambda d: d.sum(0), d_cores)
    if table.are_ids(xs):
        # A table's row gets the gradients of every step that read it: a scatter-add, no matmul.
        rows = xs.reshape(-1)
        scatter = lambda d: jnp.zeros((w_x.shape[0], d.shape[-1]), w_x.dtype).at[rows].add(d.reshape(rows.size, -1))
        d_w_x = _blocks(scatter(d_summed), scatter(d_g_rest))
        return d_core, d_w_x, None, d_w_h, d_carry, None, None
    d_w_x = _blocks(weight_gradient(xs, d_summed, w_x), weight_gradient(xs, d_g_rest, w_x))
    d_b = _blocks(d_summed.sum((0, 1)), d_g_rest.sum((0, 1)))
    d_xs = matmul(d_summed, w_x[:, :k].T)
    if d_g_rest.shape[-1]:
        d_xs = d_xs + matmul(d_g_rest, w_x[:, k:].T)
    return d_core, d_w_x, d_b, d_w_h, d_carry, d_xs, None


def _blocks(summed, rest):
    """The gradient of all G*H columns from the summed blocks' and the rest's (empty for additive cells)."""
    return jnp.concatenate([summed, rest], axis=-1) if rest.shape[-1] else summed


_scan_fused.defvjp(_scan_fused_fwd, _scan_fused_bwd)
