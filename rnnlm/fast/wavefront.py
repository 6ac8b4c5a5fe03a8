"""A forward-only pass of a stack with all its layers in one loop, each a step behind the one below.

In a forward-only pass (evaluation, scoring, prompts) layer l can compute time t as
soon as layer l-1 has, so at loop step s layer l computes its time s - l from layer
l-1's output at that time, which is l-1's carry before the step. All L layers then
advance together: one batched [L, B, H] @ [L, H, G*H] product for their inputs and
one for their recurrences per step instead of 2L small ones, in T - L + 1 loop
steps plus L - 1 partial steps at each end. Small matmuls on a CPU are bound by
per-operation overhead, which this halves for two layers (docs/levers.md).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rnnlm.cells import Cell, matmul
from rnnlm.fast.bptt import _core_params

def run_wavefront(cell: Cell, layers, carries, xs, *, unroll=1):
    """`rnnlm.recurrence.run_stack` without dropout or mask, every layer a step behind the one below.

    Needs a cell with a core, every layer's input H wide (embed_size == hidden_size, float inputs)
    and T >= L. Returns (tuple of final carries, ys [T, B, H] of the top layer).
    """
    num_layers = len(layers)
    if xs.shape[0] < num_layers:
        raise ValueError(f"run_wavefront needs at least one step per layer: {xs.shape[0]} steps, {num_layers} layers")
    stack = lambda trees: jax.tree_util.tree_map(lambda *a: jnp.stack(a), *trees)  # a leading layer axis
    stacked = stack(layers)
    core_params = _core_params(stacked)
    products, core = jax.vmap(matmul), jax.vmap(lambda p, c, g, gh: cell.core(p, c, g, gh)[0])

    def advance(carry, x, lo, hi):
        """Layers lo..hi-1 take one step (layer 0 reads x); returns the top one's output."""
        part = lambda a: a[lo:hi]
        inputs = carry[-1][max(lo - 1, 0):hi - 1]
        if lo == 0:
            inputs = jnp.concatenate([x[None], inputs])
        g = products(inputs, stacked["w_x"][lo:hi]) + stacked["b"][lo:hi, None]
        gh = products(part(carry[-1]), stacked["w_h"][lo:hi])
        new = core(jax.tree_util.tree_map(part, core_params), jax.tree_util.tree_map(part, carry), g, gh)
        return jax.tree_util.tree_map(lambda whole, p: whole.at[lo:hi].set(p), carry, new), new[-1][-1]

    carry = stack(carries)  # the cell's carry, each [L, B, H]
    for s in range(num_layers - 1):  # fill: layers 0..s
        carry, _ = advance(carry, xs[s], 0, s + 1)
    carry, ys = jax.lax.scan(lambda c, x: advance(c, x, 0, num_layers), carry, xs[num_layers - 1:], unroll=unroll)
    tail = []
    for s in range(1, num_layers):  # drain: layers s..L-1
        carry, y = advance(carry, None, s, num_layers)
        tail.append(y)
    if tail:
        ys = jnp.concatenate([ys, jnp.stack(tail)])
    return tuple(jax.tree_util.tree_map(lambda a: a[layer], carry) for layer in range(num_layers)), ys
