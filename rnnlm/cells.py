"""Recurrent cells as pure functions over parameter pytrees: the reference equations.

A cell is `init_params(key, input_size, hidden_size, init_scale, dtype)`,
`init_carry(batch_size, hidden_size)` and a step in `lax.scan` order, split in
two so that `rnnlm.recurrence` can project a whole sequence's inputs in one
matmul before its loop:

    gx = cell.project(params, x)                  # the state-free part (x @ w_x + b), any leading shape
    carry, gates = cell.update(params, carry, gx) # one step; gates: the named gate activations
    carry, y = cell.recurrent_step(params, carry, gx)   # the same step, y = h = carry[-1]

`cell.step(params, carry, x)` composes them, so
`lax.scan(partial(cell.step, params), carry0, xs)` needs no adapter.

Parameters: {"w_x": [D, G*H], "w_h": [H, G*H], "b": [G*H], ...}, D the input
size, H the hidden size, G the gate blocks (1 for `rnn`, 4 for `lstm`, 3 for
the GRUs). Shapes: x [B, D], carry a tuple of [B, H] arrays (`(h,)`, or `(c, h)`
for the LSTM: h is always last), y = h [B, H]. Gate blocks are ordered as in
PyTorch (LSTM: i, f, g, o; GRU: r, z, n), so weights from `torch.nn.LSTM`/`GRU`
map by a transpose.

GRU convention: for `gru` and `gru_cho` the update gate z weights the *old*
state, h_t = (1 - z) * n + z * h_{t-1}, as in PyTorch, Flax, Keras and Cho et
al. 2014. `gru_seed` follows the article's printed equation, where z weights
the candidate instead.

Adding a cell: write its `init_params` and `update(params, carry, gx) -> (carry,
gates)` (and `project` if its inputs are not one affine map), register it in
`CELLS`; it runs everywhere on the reference path. The fast paths
(`rnnlm.fast`) take it up only if it also declares a `core` (below).
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


def matmul(x, w):
    """x @ w in w's dtype, accumulated in float32: float32 weights give a plain float32 matmul,
    bfloat16 ones (`model.matmul_dtype`) bfloat16 products while activations and state stay float32."""
    return jnp.matmul(x.astype(w.dtype), w, preferred_element_type=jnp.float32)


def add_bias(y, bias):
    """y [..., N] + bias [N], the broadcast written out (the tests turn implicit rank promotion off)."""
    return y + bias.reshape((1,) * (y.ndim - bias.ndim) + bias.shape)


def project_inputs(params, x):
    """x [..., D] -> x @ w_x + b [..., G*H]: the part of every gate that needs no state."""
    return add_bias(matmul(x, params["w_x"]), params["b"])


# Every cell but gru_cho is "one recurrent matmul, then elementwise gates": its
# `core(params, carry, gx, gh)` takes gh = h_{t-1} @ w_h already computed, and its
# `update` is the core after that matmul. The split is what the fast paths need
# (`rnnlm.fast.bptt` differentiates the loop by hand, `rnnlm.fast.wavefront` batches
# the layers' matmuls); the reference path only ever calls `update`.

def _update_from_core(core):
    def update(params, carry, gx):
        return core(params, carry, gx, matmul(carry[-1], params["w_h"]))
    update.__doc__ = core.__doc__
    return update


# --- vanilla RNN -----------------------------------------------------------

def rnn_core(params, carry, gx, gh):
    """h_t = tanh(W_xh x_t + b + W_hh h_{t-1});  gx = W_xh x_t + b, gh = W_hh h_{t-1}."""
    h = jnp.tanh(gx + gh)
    return (h,), {}


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
    carry = (c, h), each [B, H]; gates: input, forget and output.
    """
    c, _ = carry
    i, f, g, o = jnp.split(gx + gh, 4, axis=-1)
    gates = {"input_gate": jax.nn.sigmoid(i), "forget_gate": jax.nn.sigmoid(f), "output_gate": jax.nn.sigmoid(o)}
    c = gates["forget_gate"] * c + gates["input_gate"] * jnp.tanh(g)
    h = gates["output_gate"] * jnp.tanh(c)
    return (c, h), gates


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
    n = jnp.tanh(xn + r * add_bias(hn, params["b_hn"]))
    h = (1.0 - z) * n + z * h
    return (h,), {"reset_gate": r, "update_gate": z}


def gru_cho_update(params, carry, gx):
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
    return (h,), {"reset_gate": r, "update_gate": z}


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
    return (h,), {"reset_gate": r, "update_gate": z}


# --- registry ----------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Cell:
    """A named cell: its pure functions, the size of its carry, and what the fast paths may use."""

    name: str
    gates: int  # gate blocks G: w_x is [D, G*H]
    carry_names: tuple  # the carry's [B, H] arrays, h last: ("h",) or ("c", "h")
    init_params: Callable
    update: Callable  # (params, carry, gx) -> (carry, gate activations {name: [B, H]})
    project: Callable = project_inputs  # (params, x [..., D]) -> gx [..., G*H]
    # Optional, for the fast paths: (params, carry, gx, gh) -> (carry, gates) when gh = h @ w_h is the
    # step's only recurrent product, and how many leading gate blocks it reads only through gx + gh.
    core: Callable | None = None
    summed_gates: int = 0

    @property
    def carry_arity(self) -> int:
        return len(self.carry_names)

    def init_carry(self, batch_size, hidden_size, dtype=jnp.float32) -> Carry:
        return tuple(jnp.zeros((batch_size, hidden_size), dtype) for _ in self.carry_names)

    def recurrent_step(self, params, carry, gx):
        carry, _ = self.update(params, carry, gx)
        return carry, carry[-1]

    def step(self, params, carry, x):
        return self.recurrent_step(params, carry, self.project(params, x))


def _plain_init(gates):
    """Initialiser for a cell whose parameters are just w_x, w_h and b."""
    def init_params(key, input_size, hidden_size, init_scale=None, dtype=jnp.float32):
        return _init_common(key, input_size, hidden_size, gates, init_scale, dtype)
    return init_params


def _with_core(name, gates, carry_names, init_params, core, summed_gates):
    return Cell(name, gates, carry_names, init_params, _update_from_core(core), core=core, summed_gates=summed_gates)


CELLS = {
    cell.name: cell
    for cell in (
        _with_core("rnn", 1, ("h",), _plain_init(1), rnn_core, summed_gates=1),
        _with_core("lstm", 4, ("c", "h"), lstm_init_params, lstm_core, summed_gates=4),
        _with_core("gru", 3, ("h",), gru_init_params, gru_core, summed_gates=2),
        Cell("gru_cho", 3, ("h",), _plain_init(3), gru_cho_update),
        _with_core("gru_seed", 3, ("h",), _plain_init(3), gru_seed_core, summed_gates=3),
    )
}


def get_cell(name: str) -> Cell:
    try:
        return CELLS[name]
    except KeyError:
        from rnnlm.errors import UserError
        raise UserError(f"unknown cell {name!r}; choose one of {', '.join(CELLS)}") from None
