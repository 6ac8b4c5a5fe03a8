"""A small vocabulary's embedding folded into the first layer: read embedding @ w_x + b by token id.

The first layer's input projection embedding[id] @ w_x + b has only V distinct
values, so for a vocabulary no wider than the embedding and a call with at least
2V tokens (character models) the model computes the [V, G*H] table once per call
and each step reads its rows by id: no per-token [B, E] @ [E, G*H] product in
either pass, and the backward pass scatter-adds each step's gate gradients into
the table's V rows, from which JAX takes the embedding's, w_x's and b's
gradients. `rnnlm.fast.bptt.scan_layer` reads the ids. Same numbers in float32
(tests/test_fast.py).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rnnlm.cells import add_bias


def input_table(embedding, params, matmul):
    """Every vocabulary entry's input projection, embedding @ w_x + b: [V, G*H] in float32.

    Row v is what the layer's step would compute for x_t = embedding[v], so reading rows by
    token id replaces the per-step input matmul. `matmul`: the model's (its precision).
    """
    return add_bias(matmul(embedding, params["w_x"]).astype(jnp.float32), params["b"])


def are_ids(xs) -> bool:
    """Integer xs are token ids into an input table, not inputs to project."""
    return jnp.issubdtype(xs.dtype, jnp.integer)


def rows(table, ids, by_one_hot: bool):
    """table[ids], each step's rows of an `input_table`.

    Where every gate block sees x_t's part only summed with h's (the LSTM), XLA adds the gathered
    rows to the recurrent matmul's result inside its fusion, for free. A GRU's candidate takes the
    input's n block apart, and in a forward-only loop XLA fuses the gather into that gate arithmetic,
    which then ran several times slower; there the rows come from a one-hot matmul instead (exact:
    one product by 1, the rest by 0). Under differentiation the gather measured faster for both
    (docs/levers.md).
    """
    if by_one_hot:
        # HIGHEST: accelerators' default float32 matmul (bf16 passes on TPUs, TF32 on GPUs) would round the rows.
        return jnp.dot(jax.nn.one_hot(ids, table.shape[0], dtype=table.dtype), table,
                       precision=jax.lax.Precision.HIGHEST)
    return table[ids]
