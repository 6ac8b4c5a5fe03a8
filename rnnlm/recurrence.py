"""Run a cell over time with `lax.scan`; stack layers; dropout between them.

Layout: these functions are time-major, xs [T, B, D]. The public model API is
batch-major [B, T]; the model transposes the token ids (free) once on the way
in, so no [T, B, D] activation is ever transposed inside a layer.

The input projection of all T steps is one [T*B, D] @ [D, G*H] matmul before
the scan; only the [B, H] @ [H, G*H] recurrent product runs inside it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rnnlm.cells import Cell, project_inputs


def scan_layer(cell: Cell, params, carry, xs, mask=None, *, reverse=False, unroll=1):
    """One recurrent layer over a sequence.

    Args:
      xs: [T, B, D] inputs.
      carry: the cell's carry, a tuple of [B, H].
      mask: optional [T, B] bool; where False the step is padding: the carry is
        kept unchanged and the output is zero, so padding never reaches the state.
      reverse: run from t = T-1 down to 0 (for the backward half of a bidirectional layer).
    Returns:
      (final carry, ys [T, B, H]).
    """
    gx = project_inputs(params, xs)

    if mask is None:
        def body(c, g):
            return cell.recurrent_step(params, c, g)
        return jax.lax.scan(body, carry, gx, reverse=reverse, unroll=unroll)

    def masked_body(c, inputs):
        g, m = inputs
        new_c, y = cell.recurrent_step(params, c, g)
        m = m[:, None]
        new_c = tuple(jnp.where(m, n, o) for n, o in zip(new_c, c))
        return new_c, jnp.where(m, y, jnp.zeros_like(y))

    return jax.lax.scan(masked_body, carry, (gx, mask), reverse=reverse, unroll=unroll)


def dropout(rng, rate: float, x):
    """Inverted dropout; a no-op when rng is None or rate is 0 (evaluation)."""
    if rng is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(rng, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


def run_stack(cell: Cell, layers, carries, xs, mask=None, *, dropout_rate=0.0, rng=None, unroll=1):
    """Stacked layers, dropout on the input of every layer above the first (Zaremba et al. 2014).

    Args:
      layers: a sequence of per-layer parameter dicts.
      carries: a tuple with one carry per layer.
    Returns:
      (tuple of final carries, ys [T, B, H] of the top layer).
    """
    new_carries = []
    for depth, (params, carry) in enumerate(zip(layers, carries)):
        if depth > 0 and rng is not None:
            xs = dropout(jax.random.fold_in(rng, depth), dropout_rate, xs)
        carry, xs = scan_layer(cell, params, carry, xs, mask, unroll=unroll)
        new_carries.append(carry)
    return tuple(new_carries), xs


def initial_carry(cell: Cell, num_layers: int, batch_size: int, hidden_size: int, dtype=jnp.float32):
    """Zero state for a stack: one carry per layer."""
    return tuple(cell.init_carry(batch_size, hidden_size, dtype) for _ in range(num_layers))
