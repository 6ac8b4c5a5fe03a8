"""Bfloat16 matmuls whose backward products are bfloat16 too (`model.matmul_dtype="bfloat16"`).

The reference `rnnlm.cells.matmul` casts x to the weights' dtype and accumulates in
float32; JAX's own derivative of that multiplies the float32 cotangent by the
bfloat16 operand, which runs at float32's rate. This custom VJP casts the
cotangent down first, so training's backward products run at bfloat16's rate too
(about twice float32's on CPUs with AVX512-BF16, docs/levers.md). For float32
weights it is the plain matmul.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rnnlm.cells import matmul as reference_matmul


def weight_gradient(x, d_out, w):
    """The gradient of x @ w with respect to w, summed over every leading axis of x and d_out:
    in w's dtype, accumulated in float32."""
    return jnp.einsum("...i,...o->io", x.astype(w.dtype), d_out.astype(w.dtype),
                      preferred_element_type=jnp.float32).astype(w.dtype)


@jax.custom_vjp
def _low_precision_matmul(x, w):
    return reference_matmul(x, w)


def _forward(x, w):
    x = x.astype(w.dtype)
    return jnp.matmul(x, w, preferred_element_type=jnp.float32), (x, w)


def _backward(residuals, g):
    x, w = residuals
    dx = jnp.matmul(g.astype(w.dtype), w.T, preferred_element_type=jnp.float32)
    return dx, weight_gradient(x, g, w)


_low_precision_matmul.defvjp(_forward, _backward)


def matmul(x, w):
    """`rnnlm.cells.matmul` with bfloat16 backward products for bfloat16 weights."""
    if w.dtype == jnp.float32:
        return reference_matmul(x, w)
    return _low_precision_matmul(x, w)
