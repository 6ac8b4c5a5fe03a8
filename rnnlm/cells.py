"""Recurrent cells as pure functions over parameter pytrees.

Every cell has the same parameter layout, so that `rnnlm.recurrence` can run the
input projection and the recurrent product as two separate matmuls (and
differentiate each by hand):

    params = {"w_x": [D, G*H], "w_h": [H, G*H], "b": [G*H], ...}

where D is the input size, H the hidden size and G the number of gate blocks
(1 for `rnn`, 4 for `lstm`, 3 for the GRUs). A step is split in two:

    gx = project_inputs(params, x)            # x @ w_x + b, any leading shape
    carry, y = recurrent_step(params, carry, gx)

and `step(params, carry, x)` composes them, in `lax.scan` order, so
`lax.scan(partial(cell.step, params), carry0, xs)` needs no adapter.

Shapes: x [B, D], carry a tuple of [B, H] arrays (`(h,)` or, for the LSTM,
`(c, h)`), y = h [B, H]. Gate blocks are ordered as in PyTorch (LSTM: i, f, g, o;
GRU: r, z, n), which makes weight transfer from `torch.nn.LSTM`/`GRU` a
transpose.

GRU convention: for `gru` and `gru_cho` the update gate z weights the *old*
state, h_t = (1 - z) * n + z * h_{t-1}, as in PyTorch, Flax, Keras and Cho et
al. 2014. `gru_seed` follows the article's printed equation, where z weights
the candidate instead.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

Carry = tuple


def _uniform(key, shape, scale, dtype):
    return jax.random.uniform(key, shape, dtype, -scale, scale)


def _init_common(key, input_size, hidden_size, gates, init_scale, dtype):
    """U(-s, s) for every weight and bias; s = 1/sqrt(H) (PyTorch's default) unless given."""
    scale = init_scale if init_scale else hidden_size ** -0.5
    kx, kh, kb = jax.random.split(key, 3)
    return {
        "w_x": _uniform(kx, (input_size, gates * hidden_size), scale, dtype),
        "w_h": _uniform(kh, (hidden_size, gates * hidden_size), scale, dtype),
        "b": _uniform(kb, (gates * hidden_size,), scale, dtype),
    }


@jax.custom_vjp
def _low_precision_matmul(x, w):
    return jnp.matmul(x.astype(w.dtype), w, preferred_element_type=jnp.float32)


def _low_precision_fwd(x, w):
    x = x.astype(w.dtype)
    return jnp.matmul(x, w, preferred_element_type=jnp.float32), (x, w)


def _low_precision_bwd(residuals, g):
    # Both backward products in the weights' dtype too, accumulated in float32.
    x, w = residuals
    dx = jnp.matmul(g.astype(w.dtype), w.T, preferred_element_type=jnp.float32)
    return dx, weight_gradient(x, g, w)


def weight_gradient(x, d_out, w):
    """The gradient of x @ w with respect to w, summed over every leading axis of x and d_out:
    in w's dtype, accumulated in float32."""
    return jnp.einsum("...i,...o->io", x.astype(w.dtype), d_out.astype(w.dtype),
                      preferred_element_type=jnp.float32).astype(w.dtype)


_low_precision_matmul.defvjp(_low_precision_fwd, _low_precision_bwd)


def matmul(x, w):
    """x @ w. Float32 weights: a plain float32 matmul. Bfloat16 weights (`model.matmul_dtype`):
    bfloat16 products with float32 accumulation, forward and backward — about twice the float32
    rate on CPUs with AVX512-BF16 — while activations, gates and the carry stay float32."""
    if w.dtype == jnp.float32:
        return x @ w
    return _low_precision_matmul(x, w)


def project_inputs(params, x):
    """x [..., D] -> x @ w_x + b [..., G*H]: the part of every gate that needs no state."""
    return matmul(x, params["w_x"]) + params["b"]


# Every cell but gru_cho is "one recurrent matmul, then elementwise gates": its
# `*_core(params, carry, gx, gh)` takes gh = h_{t-1} @ w_h already computed. That split
# lets `rnnlm.recurrence` hand-write the backward pass through time (the weight
# gradient as one big matmul after the loop). `recurrent_step` = core + the matmul.

def _step_from_core(core):
    def recurrent_step(params, carry, gx):
        return core(params, carry, gx, matmul(carry[-1], params["w_h"]))
    recurrent_step.__doc__ = core.__doc__
    return recurrent_step


# --- vanilla RNN -----------------------------------------------------------

def rnn_core(params, carry, gx, gh):
    """h_t = tanh(W_xh x_t + b + W_hh h_{t-1});  gx = W_xh x_t + b, gh = W_hh h_{t-1}."""
    h = jnp.tanh(gx + gh)
    return (h,), h


# --- LSTM ------------------------------------------------------------------

def lstm_init_params(key, input_size, hidden_size, init_scale=None, dtype=jnp.float32):
    """Forget-gate bias starts at 1 so that early gradients flow through c (Gers et al. 2000)."""
    params = _init_common(key, input_size, hidden_size, 4, init_scale, dtype)
    params["b"] = params["b"].at[hidden_size:2 * hidden_size].set(1.0)
    return params


def lstm_core(params, carry, gx, gh):
    """One LSTM step, the four gate matmuls fused into one [H, 4H] product.

        i, f, g, o = split(W_x x_t + b + W_h h_{t-1})      (gx = W_x x_t + b, gh = W_h h_{t-1})
        c_t = sigmoid(f) * c_{t-1} + sigmoid(i) * tanh(g)
        h_t = sigmoid(o) * tanh(c_t)
    carry = (c, h), each [B, H].
    """
    c, _ = carry
    i, f, g, o = jnp.split(gx + gh, 4, axis=-1)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    return (c, h), h


# --- GRU, reset after the matmul (cuDNN, PyTorch, Keras reset_after=True, Flax) ---

def gru_init_params(key, input_size, hidden_size, init_scale=None, dtype=jnp.float32):
    params = _init_common(key, input_size, hidden_size, 3, init_scale, dtype)
    scale = init_scale if init_scale else hidden_size ** -0.5
    params["b_hn"] = _uniform(jax.random.fold_in(key, 1), (hidden_size,), scale, dtype)
    return params


def gru_core(params, carry, gx, gh):
    """GRU with the reset gate applied after the recurrent matmul: one [H, 3H] product per step.

        r = sigmoid(W_ir x + b_r + W_hr h)
        z = sigmoid(W_iz x + b_z + W_hz h)
        n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
        h_t = (1 - z) * n + z * h_{t-1}
    b_r and b_z stand for PyTorch's b_i* + b_h* (only their sum matters).
    """
    (h,) = carry
    xr, xz, xn = jnp.split(gx, 3, axis=-1)
    hr, hz, hn = jnp.split(gh, 3, axis=-1)
    r = jax.nn.sigmoid(xr + hr)
    z = jax.nn.sigmoid(xz + hz)
    n = jnp.tanh(xn + r * (hn + params["b_hn"]))
    h = (1.0 - z) * n + z * h
    return (h,), h


def gru_cho_recurrent_step(params, carry, gx):
    """Cho et al. (2014) GRU: the reset gate scales h_{t-1} *before* its matmul.

        r, z as in `gru`;  n = tanh(W_in x + b_in + W_hn (r * h_{t-1}))
        h_t = (1 - z) * n + z * h_{t-1}
    Needs two dependent recurrent matmuls per step ([H, 2H] then [H, H]).
    """
    (h,) = carry
    hidden = h.shape[-1]
    xr, xz, xn = jnp.split(gx, 3, axis=-1)
    hr, hz = jnp.split(matmul(h, params["w_h"][:, :2 * hidden]), 2, axis=-1)
    r = jax.nn.sigmoid(xr + hr)
    z = jax.nn.sigmoid(xz + hz)
    n = jnp.tanh(xn + matmul(r * h, params["w_h"][:, 2 * hidden:]))
    h = (1.0 - z) * n + z * h
    return (h,), h


def gru_seed_core(params, carry, gx, gh):
    """The article's printed update. Not a standard GRU; kept as a named ablation variant.

        z = sigmoid(W_z x + b_z + U_z h),  r = sigmoid(W_r x + b_r + U_r h)
        c' = tanh(W_c x + b_c + U_c h)            (no reset gate in the candidate)
        h_t = (1 - z) * r * h_{t-1} + z * c'      (z weights the candidate here)
    Blocks are ordered r, z, c like the other GRUs.
    """
    (h,) = carry
    xr, xz, xc = jnp.split(gx, 3, axis=-1)
    hr, hz, hc = jnp.split(gh, 3, axis=-1)
    r = jax.nn.sigmoid(xr + hr)
    z = jax.nn.sigmoid(xz + hz)
    candidate = jnp.tanh(xc + hc)
    h = (1.0 - z) * r * h + z * candidate
    return (h,), h


rnn_recurrent_step = _step_from_core(rnn_core)
lstm_recurrent_step = _step_from_core(lstm_core)
gru_recurrent_step = _step_from_core(gru_core)
gru_seed_recurrent_step = _step_from_core(gru_seed_core)


# --- registry ----------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Cell:
    """A named cell: its pure functions and the size of its carry."""

    name: str
    gates: int
    carry_arity: int  # number of [B, H] arrays in the carry
    init_params: Callable
    recurrent_step: Callable
    core: Callable | None = None  # (params, carry, gx, gh) -> (carry, y) when gh = h @ w_h is separable
    summed_gates: int = 0  # the core sees the first this-many gate blocks of gx and gh only through gx + gh

    @property
    def additive(self) -> bool:
        """The core sees gx and gh only through gx + gh (its backward pass can keep just the sum)."""
        return self.summed_gates == self.gates

    def init_carry(self, batch_size, hidden_size, dtype=jnp.float32) -> Carry:
        return tuple(jnp.zeros((batch_size, hidden_size), dtype) for _ in range(self.carry_arity))

    def step(self, params, carry, x):
        return self.recurrent_step(params, carry, project_inputs(params, x))


def _plain_init(gates):
    """Initialiser for a cell whose parameters are just w_x, w_h and b."""
    def init_params(key, input_size, hidden_size, init_scale=None, dtype=jnp.float32):
        return _init_common(key, input_size, hidden_size, gates, init_scale, dtype)
    return init_params


CELLS = {
    cell.name: cell
    for cell in (
        Cell("rnn", 1, 1, _plain_init(1), rnn_recurrent_step, rnn_core, summed_gates=1),
        Cell("lstm", 4, 2, lstm_init_params, lstm_recurrent_step, lstm_core, summed_gates=4),
        Cell("gru", 3, 1, gru_init_params, gru_recurrent_step, gru_core, summed_gates=2),
        Cell("gru_cho", 3, 1, _plain_init(3), gru_cho_recurrent_step),
        Cell("gru_seed", 3, 1, _plain_init(3), gru_seed_recurrent_step, gru_seed_core, summed_gates=3),
    )
}


def get_cell(name: str) -> Cell:
    try:
        return CELLS[name]
    except KeyError:
        from rnnlm.errors import UserError
        raise UserError(f"unknown cell {name!r}; choose one of {', '.join(CELLS)}") from None
