"""Run a cell over time with `lax.scan`; stack layers; dropout between them. The reference path.

Layout: these functions are time-major, xs [T, B, D]. The public model API is
batch-major [B, T]; the model transposes the token ids (free) once on the way
in, so no [T, B, D] activation is ever transposed inside a layer.

The input projection of all T steps is one [T*B, D] @ [D, G*H] matmul before
the scan; only the recurrent step runs inside it. Everything here is
differentiated by JAX. `rnnlm.fast` holds the faster forms of these functions
(`rnnlm.fast.choose` says which run where).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from rnnlm.cells import Cell, add_bias


@dataclasses.dataclass(frozen=True)
class Probe:
    """A study's hook into a stack: the studies read the model's own stack through it, not a copy.

    record: every layer also returns each step's carry parts and gate activations
      (`rnnlm.studies.activations`).
    perturbation: [T, B, H] added to layer `layer`'s h_t after each step, in the carry and in the
      output, so that the gradient with respect to it is the gradient with respect to h_t
      (`rnnlm.studies.gradients`).
    """

    record: bool = False
    layer: int = 0
    perturbation: jax.Array | None = None


def scan_layer(cell: Cell, params, carry, xs, mask=None, *, reverse=False, unroll=1, perturbation=None,
               record=False, parallel=True):
    """One recurrent layer over a sequence.

    Args:
      xs: [T, B, D] inputs.
      carry: the cell's carry, a tuple of [B, H].
      mask: optional [T, B] bool; where False the step is padding: the carry is
        kept unchanged and the output is zero, so padding never reaches the state.
      reverse: run from t = T-1 down to 0 (for the backward half of a bidirectional layer).
      perturbation, record: see `Probe`; with `record` the outputs are a dict of [T, B, H]
        arrays: "h", every carry part by name, and the cell's gate activations.
      parallel: a linear cell's window by `scan_linear` (False: the loop; `speed.linear_scan`).
    Returns:
      (final carry, ys [T, B, H]).
    """
    return scan_projected(cell, params, carry, cell.project(params, xs), mask, reverse=reverse, unroll=unroll,
                          perturbation=perturbation, record=record, parallel=parallel)


def scan_projected(cell: Cell, params, carry, gx, mask=None, *, reverse=False, unroll=1, perturbation=None,
                   record=False, parallel=True):
    """`scan_layer` over inputs already projected, gx [T, B, G*H]. A linear cell (`Cell.linear`) is solved
    by `scan_linear` over more than one step unless `parallel` is False or its gates are recorded."""
    if cell.linear is not None and parallel and not record and gx.shape[0] > 1:
        return scan_linear(cell, params, carry, gx, mask, reverse=reverse, perturbation=perturbation)

    def body(old_carry, inputs):
        g, m, delta = inputs
        new_carry, gates = cell.update(params, old_carry, g)
        if delta is not None:
            new_carry = new_carry[:-1] + (new_carry[-1] + delta,)
        y = new_carry[-1]
        if record:
            y = {"h": y, **dict(zip(cell.carry_names, new_carry)), **gates}
        if m is None:
            return new_carry, y
        m = m[:, None]
        kept = tuple(jnp.where(m, n, o) for n, o in zip(new_carry, old_carry))
        return kept, jax.tree_util.tree_map(lambda v: jnp.where(m, v, jnp.zeros_like(v)), y)

    return jax.lax.scan(body, carry, (gx, mask, perturbation), reverse=reverse, unroll=unroll)


def _compose(earlier, later):
    """Two affine maps h -> a h + b, applied in turn: (a2 a1, a2 b1 + b2)."""
    a1, b1 = earlier
    a2, b2 = later
    return a2 * a1, a2 * b1 + b2


def scan_linear(cell: Cell, params, carry, gx, mask=None, *, reverse=False, perturbation=None):
    """A linear cell's layer, h_t = a_t * h_{t-1} + b_t, in O(log T) depth with `lax.associative_scan`.

    The prefix compositions (A_t, B_t) of the steps' affine maps give h_t = A_t * h_0 + B_t for the
    carried-in h_0, so a window continues its predecessor exactly as the loop does. Everything stays in
    linear space: composing needs only products and sums (no division, no logarithm), and a product of
    many a_t in (0, 1) underflows to 0, which is the true weight of a state that far back. A padding step
    is the identity map (a = 1, b = 0) with output 0; a perturbation adds to b (`Probe`).
    """
    (h0,) = carry
    a, b = cell.linear(params, gx)
    if perturbation is not None:
        b = b + perturbation
    if mask is not None:
        m = mask[:, :, None]
        a, b = jnp.where(m, a, jnp.ones_like(a)), jnp.where(m, b, jnp.zeros_like(b))
    prefix_a, prefix_b = jax.lax.associative_scan(_compose, (a, b), reverse=reverse, axis=0)
    hs = prefix_a * h0[None] + prefix_b
    final = hs[0] if reverse else hs[-1]
    ys = hs if mask is None else jnp.where(mask[:, :, None], hs, jnp.zeros_like(hs))
    return (final,), ys


def dropout(rng, rate: float, x, locked: bool = False):
    """Inverted dropout; a no-op when rng is None or rate is 0 (evaluation).

    locked: x is time-major [T, B, D] and one mask per stream, [1, B, D], serves every time step
    (variational dropout, Gal & Ghahramani 2016; AWD-LSTM's LockedDropout).
    """
    if rng is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(rng, 1.0 - rate, (1,) + x.shape[1:] if locked else x.shape)
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


def layer_norm(params, x, eps: float = 1e-5):
    """(x - mean) / sqrt(var + eps) * scale + bias over the last axis (Ba et al. 2016); params {"scale", "bias"}."""
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    return add_bias((x - mean) * jax.lax.rsqrt(var + eps) * params["scale"].reshape((1,) * (x.ndim - 1) + (-1,)),
                    params["bias"])


def run_stack(cell: Cell, layers, carries, xs, mask=None, *, reverse_layers=(), reverse_carries=(), dropout_rate=0.0,
              rng=None, unroll=1, probe: Probe | None = None, scan=scan_layer, norms=(), residual=False,
              locked=False):
    """Stacked layers, dropout on the input of every layer above the first (Zaremba et al. 2014).

    Args:
      layers: a sequence of per-layer parameter dicts; carries: one carry per layer.
      reverse_layers, reverse_carries: a bidirectional stack's backward direction. Each layer then also
        runs over the sequence from its end (the same mask), and the layer above reads both outputs
        concatenated [forward, backward], as PyTorch's `bidirectional=True`.
      probe: a study's hook into the forward layers (`Probe`).
      scan: the layer scan, `scan_layer` or a fast path's drop-in (`rnnlm.fast.bptt.scan_layer`).
      norms: per layer {"scale", "bias"}: the layer reads `layer_norm` of its input (pre-norm).
      residual: a layer whose output is as wide as its input adds its input (on real steps: padding
        outputs stay zero), y = x + layer(x), as the minGRU paper's language model.
      locked: the dropout between layers keeps one mask per stream across the window (`dropout`).
    Returns:
      (final carries, ys [T, B, H] of the top layer, or [T, B, 2H] bidirectional); with reverse layers the
      first item is (forward carries, backward carries); with a recording probe a third item lists
      every layer's recorded states.
    """
    finals, reverse_finals, recorded = [], [], []
    for depth, (params, carry) in enumerate(zip(layers, carries)):
        if depth > 0 and rng is not None:
            xs = dropout(jax.random.fold_in(rng, depth), dropout_rate, xs, locked)
        hooks = {}
        if probe is not None:
            hooks = {"record": probe.record, "perturbation": probe.perturbation if probe.layer == depth else None}
        inputs = layer_norm(norms[depth], xs) if norms else xs
        carry, ys = scan(cell, params, carry, inputs, mask, unroll=unroll, **hooks)
        if hooks.get("record"):
            recorded.append(ys)
            ys = ys["h"]
        finals.append(carry)
        if reverse_layers:
            carry, reverse_ys = scan(cell, reverse_layers[depth], reverse_carries[depth], inputs, mask, reverse=True,
                                     unroll=unroll)
            reverse_finals.append(carry)
            ys = jnp.concatenate([ys, reverse_ys], axis=-1)
        if residual and ys.shape[-1] == xs.shape[-1]:
            ys = ys + (xs if mask is None else jnp.where(mask[:, :, None], xs, jnp.zeros_like(xs)))
        xs = ys
    carries = (tuple(finals), tuple(reverse_finals)) if reverse_layers else tuple(finals)
    return (carries, xs, recorded) if probe is not None and probe.record else (carries, xs)


def initial_carry(cell: Cell, num_layers: int, batch_size: int, hidden_size, dtype=jnp.float32):
    """Zero state for a stack: one carry per layer; `hidden_size` one width for all, or one per layer."""
    sizes = (hidden_size,) * num_layers if isinstance(hidden_size, int) else tuple(hidden_size)
    return tuple(cell.init_carry(batch_size, size, dtype) for size in sizes)
