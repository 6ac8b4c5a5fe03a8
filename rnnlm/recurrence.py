"""Run a cell over time with `lax.scan`; stack layers; dropout between them.

Layout: these functions are time-major, xs [T, B, D]. The public model API is
batch-major [B, T]; the model transposes the token ids (free) once on the way
in, so no [T, B, D] activation is ever transposed inside a layer.

On CPUs each step computes its input projection x_t @ w_x + b inside the scan,
next to the recurrent product h @ w_h: on XLA's CPU backend that measured faster
than one [T*B, D] @ [D, G*H] matmul before the loop (README, Design), which is
kept on accelerators (`project_in_loop`). The backward pass makes the weight
gradients and the input gradient after its loop either way, as matmuls over all
T*B rows.

The first layer of a model over a small vocabulary can instead read a table of
every vocabulary entry's projection, embedding @ w_x + b ([V, G*H], `input_table`),
and read each step's rows from it by token id (`_table_rows`): no [B, D] @ [D, G*H]
input product in either pass, and the backward pass scatter-adds the gate
gradients into the table's V rows instead of two matmuls over all T*B rows.

A forward-only pass of a narrow stack can run all its layers in one loop, each a
step behind the one below (`run_wavefront`): two batched products a step instead
of two per layer.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from rnnlm.cells import Cell, matmul, project_inputs, weight_gradient


def scan_layer(cell: Cell, params, carry, xs, mask=None, *, reverse=False, unroll=1, in_loop=None):
    """One recurrent layer over a sequence.

    Args:
      xs: [T, B, D] inputs, or [T, B] integer ids into params["w_x"] when that is an
        `input_table` (the bias inside it, params["b"] unused). The ids must be in range:
        nothing checks them here (a gather clamps, a one-hot row of an unknown id is zero).
      carry: the cell's carry, a tuple of [B, H].
      mask: optional [T, B] bool; where False the step is padding: the carry is
        kept unchanged and the output is zero, so padding never reaches the state.
      reverse: run from t = T-1 down to 0 (for the backward half of a bidirectional layer).
      in_loop: project the inputs inside the loop (True) or before it (False);
        None chooses by backend (`project_in_loop`). Same results either way.
    Returns:
      (final carry, ys [T, B, H]).

    Cells with a separable recurrent matmul (all but gru_cho) differentiate through
    `_scan_fused`, whose hand-written backward pass computes the weight gradients
    as [D or H, T*B] @ [T*B, G*H] matmuls after the loop (split by gate blocks,
    summed or not: one for the LSTM, two for the GRU) instead of T small ones
    inside it; gru_cho projects its inputs before the loop and uses JAX's own scan
    transpose (`scan_plain`).
    """
    ids = _are_ids(xs)
    if cell.core is None:
        gx = jnp.take(params["w_x"], xs, axis=0) if ids else project_inputs(params, xs)
        return scan_plain(cell, params, carry, gx, mask, reverse=reverse, unroll=unroll)
    small = _small_params(params)
    in_loop = project_in_loop() if in_loop is None else in_loop
    b = None if ids else params["b"]
    return _scan_fused(cell, reverse, unroll, in_loop, small, params["w_x"], b, params["w_h"], carry, xs, mask)


def _small_params(params):
    """A cell's parameters other than its matrices and input bias (a GRU's b_hn): what its core reads."""
    return {k: v for k, v in params.items() if k not in ("w_x", "w_h", "b")}


def _are_ids(xs) -> bool:
    """Integer xs are token ids into an `input_table`, not inputs to project."""
    return jnp.issubdtype(xs.dtype, jnp.integer)


def input_table(embedding, params):
    """Every vocabulary entry's input projection, embedding @ w_x + b: [V, G*H] in float32.

    Row v is what the layer's step would compute for x_t = embedding[v], so reading rows by
    token id replaces the per-step input matmul; worth it for a small vocabulary and a call with
    many more tokens than it has entries (`LanguageModel.fold_embedding`).
    """
    return matmul(embedding, params["w_x"]).astype(jnp.float32) + params["b"]


def scan_plain(cell: Cell, params, carry, gx, mask=None, *, reverse=False, unroll=1):
    """The recurrence over precomputed input projections gx [T, B, G*H], differentiated by JAX."""
    if mask is None:
        def body(c, g):
            return cell.recurrent_step(params, c, g)
        return jax.lax.scan(body, carry, gx, reverse=reverse, unroll=unroll)

    def masked_body(c, inputs):
        g, m = inputs
        return _masked(c, *cell.recurrent_step(params, c, g), m)

    return jax.lax.scan(masked_body, carry, (gx, mask), reverse=reverse, unroll=unroll)


def _masked(old_carry, new_carry, y, m):
    """Padding steps keep the old carry and output zeros."""
    if m is None:
        return new_carry, y
    m = m[:, None]
    return tuple(jnp.where(m, n, o) for n, o in zip(new_carry, old_carry)), jnp.where(m, y, jnp.zeros_like(y))


def _core_step(cell, small, carry, g, gh, m):
    return _masked(carry, *cell.core(small, carry, g, gh), m)


def project_in_loop() -> bool:
    """Where `_scan_fused` makes x_t @ w_x + b: inside the loop on CPUs (measured faster there,
    README, Design), one matmul over all steps before it on GPUs and TPUs, where one large
    matmul is the accelerator's strength and the per-step form is not measured."""
    return jax.default_backend() == "cpu"


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2, 3))
def _scan_fused(cell, reverse, unroll, in_loop, small, w_x, b, w_h, carry, xs, mask):
    # Forward only (evaluation, scoring, sampling): a table is read through one-hot rows where a
    # gather would land in the gate arithmetic (`_table_rows`).
    return _forward(cell, reverse, unroll, in_loop, not cell.additive, small, w_x, b, w_h, carry, xs, mask)[0]


def _scan_fused_fwd(cell, reverse, unroll, in_loop, small, w_x, b, w_h, carry, xs, mask):
    return _forward(cell, reverse, unroll, in_loop, False, small, w_x, b, w_h, carry, xs, mask)


def _forward(cell, reverse, unroll, in_loop, one_hot, small, w_x, b, w_h, carry, xs, mask):
    ids = _are_ids(xs)
    in_loop = in_loop or ids
    gx = None if in_loop else matmul(xs, w_x) + b

    def body(c, inputs):
        x, m = inputs
        g = (_table_rows(w_x, x, one_hot) if ids else matmul(x, w_x) + b) if in_loop else x
        gh = matmul(c[-1], w_h)
        new_c, y = _core_step(cell, small, c, g, gh, m)
        # Keep each step's incoming carry and what the backward pass needs of the pre-activations.
        return new_c, (y, c, _pre_activations(cell, g, gh))

    final, (ys, carries_in, pre) = jax.lax.scan(body, carry, (xs if in_loop else gx, mask),
                                                reverse=reverse, unroll=unroll)
    return (final, ys), (small, w_x, w_h, carries_in, xs, pre, mask)


def _table_rows(table, ids, one_hot):
    """table[ids], each step's rows of an `input_table`.

    Where every gate block sees x_t's part only summed with h's (`Cell.additive`: LSTM), XLA adds the
    gathered rows to the recurrent matmul's result inside its fusion, for free. A GRU's candidate takes
    the input's n block apart, and in a forward-only loop XLA fuses the gather into that gate
    arithmetic, which then ran ~5x slower (char GRU evaluation, XLA's profile: 6.5 -> 38 ms a window);
    there the rows come from a one-hot matmul instead (exact: one product by 1, the rest by 0).
    Under differentiation the gather measured faster for both (README, levers)."""
    if one_hot:
        # HIGHEST: accelerators' default float32 matmul (bf16 passes on TPUs, TF32 on GPUs) would round the rows.
        return jnp.dot(jax.nn.one_hot(ids, table.shape[0], dtype=table.dtype), table,
                       precision=jax.lax.Precision.HIGHEST)
    return table[ids]


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
    small, w_x, w_h, carries_in, xs, pre, mask = residuals
    d_final, d_ys = cotangents
    k = pre[0].shape[-1]  # width of the summed blocks

    # Transposed once, outside the loop: inside it, a dot that reads its weight transposed
    # measured 12-31% slower at batch 20, H = 200 (README, levers).
    w_h_t = w_h.T

    def body(carry, inputs):
        d_carry, buf = carry
        t, c, (g_rest, gh_rest), d_y, m = inputs
        summed = buf[t]
        # Rebuild pre-activations that give the core the same inputs: the summed blocks
        # wholly in g, and the per-part blocks as they were (zero in gh where summed).
        g = jnp.concatenate([summed, g_rest], axis=-1)
        gh = jnp.concatenate([jnp.zeros_like(summed), gh_rest], axis=-1)
        _, vjp = jax.vjp(functools.partial(_core_step, cell, m=m), small, c, g, gh)
        # A summed block's gradient is the same for its input and recurrent parts, so d_gh
        # is the whole [B, G*H] gradient of h @ w_h.
        d_small, d_c, d_g, d_gh = vjp((d_carry, d_y))
        d_summed, d_g_rest, d_gh_rest = d_g[..., :k], d_g[..., k:], d_gh[..., k:]
        d_h = d_c[-1] + matmul(d_gh, w_h_t)
        # Each step's gradients overwrite the pre-activations they were made from, which
        # the loop has just read for the last time: no second [T, B, G*H] array (README, levers).
        return (d_c[:-1] + (d_h,), buf.at[t].set(d_summed)), (d_g_rest, d_gh_rest, d_small)

    steps = jnp.arange(d_ys.shape[0])
    (d_carry, d_summed), (d_g_rest, d_gh_rest, d_smalls) = jax.lax.scan(
        body, (d_final, pre[0]), (steps, carries_in, pre[1:], d_ys, mask), reverse=not reverse, unroll=unroll)
    # Every step's products with the weights at once, as [D or H, T*B] @ [T*B, G*H] matmuls,
    # block by block so that the summed blocks' one gradient serves both weights.
    h_in = carries_in[-1]
    d_w_h = _blocks(weight_gradient(h_in, d_summed, w_h), weight_gradient(h_in, d_gh_rest, w_h))
    d_small = jax.tree_util.tree_map(lambda d: d.sum(0), d_smalls)
    if _are_ids(xs):
        # A table's row gets the gradients of every step that read it: a scatter-add, no matmul.
        rows = xs.reshape(-1)
        scatter = lambda d: jnp.zeros((w_x.shape[0], d.shape[-1]), w_x.dtype).at[rows].add(d.reshape(rows.size, -1))
        d_w_x = _blocks(scatter(d_summed), scatter(d_g_rest))
        return d_small, d_w_x, None, d_w_h, d_carry, None, None
    d_w_x = _blocks(weight_gradient(xs, d_summed, w_x), weight_gradient(xs, d_g_rest, w_x))
    d_b = _blocks(d_summed.sum((0, 1)), d_g_rest.sum((0, 1)))
    d_xs = matmul(d_summed, w_x[:, :k].T)
    if d_g_rest.shape[-1]:
        d_xs = d_xs + matmul(d_g_rest, w_x[:, k:].T)
    return d_small, d_w_x, d_b, d_w_h, d_carry, d_xs, None


def _blocks(summed, rest):
    """The gradient of all G*H columns from the summed blocks' and the rest's (empty for additive cells)."""
    return jnp.concatenate([summed, rest], axis=-1) if rest.shape[-1] else summed


_scan_fused.defvjp(_scan_fused_fwd, _scan_fused_bwd)


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


def run_wavefront(cell: Cell, layers, carries, xs, *, unroll=1):
    """`run_stack` for a forward-only pass, every layer a step behind the one below it.

    At loop step s layer l computes its time s - l from layer l-1's output at that time,
    which is l-1's carry before the step, so all L layers advance together: one batched
    [L, B, H] @ [L, H, G*H] product for their inputs and one for their recurrences per step
    instead of 2L small ones, in T - L + 1 loop steps plus L - 1 partial steps at each end.
    Same values as `run_stack` without dropout or mask. Needs a cell with a core, every
    layer's input H wide (embed_size == hidden_size, float inputs) and T >= L. Used where
    it measured faster (`LanguageModel._runs_wavefront`); not differentiated by the model.
    """
    num_layers = len(layers)
    if xs.shape[0] < num_layers:
        raise ValueError(f"run_wavefront needs at least one step per layer: {xs.shape[0]} steps, {num_layers} layers")
    stack = lambda trees: jax.tree_util.tree_map(lambda *a: jnp.stack(a), *trees)  # a leading layer axis
    stacked = stack(layers)
    small = _small_params(stacked)
    products, core = jax.vmap(matmul), jax.vmap(cell.core)

    def advance(carry, x, lo, hi):
        """Layers lo..hi-1 take one step (layer 0 reads x); returns the top one's output."""
        part = lambda a: a[lo:hi]
        inputs = carry[-1][max(lo - 1, 0):hi - 1]
        if lo == 0:
            inputs = jnp.concatenate([x[None], inputs])
        g = products(inputs, stacked["w_x"][lo:hi]) + stacked["b"][lo:hi, None]
        gh = products(part(carry[-1]), stacked["w_h"][lo:hi])
        new, ys = core(jax.tree_util.tree_map(part, small), jax.tree_util.tree_map(part, carry), g, gh)
        return jax.tree_util.tree_map(lambda whole, p: whole.at[lo:hi].set(p), carry, new), ys[-1]

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


def initial_carry(cell: Cell, num_layers: int, batch_size: int, hidden_size: int, dtype=jnp.float32):
    """Zero state for a stack: one carry per layer."""
    return tuple(cell.init_carry(batch_size, hidden_size, dtype) for _ in range(num_layers))
