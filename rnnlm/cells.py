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
size, H the hidden size, G the gate blocks (1 for `rnn`, 4 for `lstm` and
`mogrifier`, 3 for the GRUs and `minlstm`, 2 for `mingru`). `mingru` and
`minlstm` have no w_h: their gates read x_t alone, their recurrence is linear
(`Cell.linear`) and `rnnlm.recurrence.scan_linear` solves it in parallel over
time. The Mogrifier adds its gating matrices q_i / r_i (`mogrifier_init_params`).
Every cell's equations, parameter count and cost: docs/cells.md. Shapes: x [B, D], carry a tuple of [B, H] arrays (`(h,)`, or `(c, h)`
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
import functools
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


# --- minGRU and minLSTM (Feng et al. 2024): gates of x_t alone, a linear recurrence ---

def mingru_update(params, carry, gx):
    """minGRU: every gate reads x_t only, so h_t = a_t * h_{t-1} + b_t is linear in the state.

        z = sigmoid(W_z x_t + b_z),  h~ = W_h x_t + b_h        (gx = [z logits, h~], blocks z, h)
        h_t = (1 - z) * h_{t-1} + z * h~
    No recurrent matrix: w_x is [D, 2H] and there is no w_h.
    """
    (h,) = carry
    a, b = mingru_linear(params, gx)
    return (a * h + b,), {"update_gate": 1.0 - a}


def mingru_linear(params, gx):
    """(a, b) of h_t = a * h_{t-1} + b: a = 1 - z, b = z * h~."""
    logit, candidate = jnp.split(gx, 2, axis=-1)
    z = jax.nn.sigmoid(logit)
    return 1.0 - z, z * candidate


def minlstm_update(params, carry, gx):
    """minLSTM: forget and input gates of x_t alone, normalised to sum to one.

        f = sigmoid(W_f x_t + b_f),  i = sigmoid(W_i x_t + b_i),  h~ = W_h x_t + b_h   (blocks f, i, h)
        f' = f / (f + i),  i' = i / (f + i)
        h_t = f' * h_{t-1} + i' * h~
    """
    (h,) = carry
    a, b = minlstm_linear(params, gx)
    return (a * h + b,), {"forget_gate": a}


def minlstm_linear(params, gx):
    """(a, b) of h_t = a * h_{t-1} + b: a = f', b = i' * h~."""
    f, i, candidate = jnp.split(gx, 3, axis=-1)
    f, i = jax.nn.sigmoid(f), jax.nn.sigmoid(i)
    return f / (f + i), i / (f + i) * candidate


# --- Mogrifier LSTM (Melis, Kocisky & Blunsom 2020) ----------------------------

def mogrifier_init_params(key, input_size, hidden_size, init_scale=None, dtype=jnp.float32, *, rounds, rank):
    """The LSTM's parameters and, per round i = 1..rounds, "q_i" [H, D] (odd i) or "r_i" [D, H] (even i);
    with rank k > 0 each is a product of "q_i_left" [H, k] @ "q_i_right" [k, D] (or r_i's) instead."""
    params = lstm_init_params(key, input_size, hidden_size, init_scale, dtype)
    for i in range(1, rounds + 1):
        name, (rows, cols) = ("q", (hidden_size, input_size)) if i % 2 else ("r", (input_size, hidden_size))
        k = jax.random.fold_in(key, 100 + i)
        if rank:
            kl, kr = jax.random.split(k)
            params[f"{name}_{i}_left"] = _uniform(kl, (rows, rank), init_scale or rows ** -0.5, dtype)
            params[f"{name}_{i}_right"] = _uniform(kr, (rank, cols), init_scale or rank ** -0.5, dtype)
        else:
            params[f"{name}_{i}"] = _uniform(k, (rows, cols), init_scale or rows ** -0.5, dtype)
    return params


def _mogrifier_matrix_product(params, name, v):
    if name in params:
        return matmul(v, params[name])
    return matmul(matmul(v, params[name + "_left"]), params[name + "_right"])


def mogrify(params, x, h, rounds: int):
    """The Mogrifier's rounds: for i = 1..rounds, odd i: x <- 2 sigmoid(Q^i h) * x; even i:
    h <- 2 sigmoid(R^i x) * h. Returns the gated (x, h) the LSTM step then reads."""
    for i in range(1, rounds + 1):
        if i % 2:
            x = 2.0 * jax.nn.sigmoid(_mogrifier_matrix_product(params, f"q_{i}", h)) * x
        else:
            h = 2.0 * jax.nn.sigmoid(_mogrifier_matrix_product(params, f"r_{i}", x)) * h
    return x, h


def mogrifier_update(params, carry, x, *, rounds):
    """One Mogrifier LSTM step: x_t and h_{t-1} gate each other for `rounds` rounds (`mogrify`), then the
    LSTM step (`lstm_core`) on the gated pair; c_t and h_t are carried as the LSTM's. Its input is x_t
    itself (`project` is the identity): the input matmul must follow the gating, inside the loop."""
    c, h = carry
    x, h_gated = mogrify(params, x, h, rounds)
    gx = project_inputs(params, x)
    return lstm_core(params, (c, h), gx, matmul(h_gated, params["w_h"]))


def _identity_projection(params, x):
    return x


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
    # Optional, for a linear recurrence h_t = a_t * h_{t-1} + b_t (carry (h,)): (params, gx) -> (a, b).
    # `rnnlm.recurrence` then solves a sequence with `lax.associative_scan` instead of a loop.
    linear: Callable | None = None
    options: tuple = ()  # the (name, value) settings it was built with (`get_cell`)

    @property
    def carry_arity(self) -> int:
        return len(self.carry_names)

    @property
    def has_recurrent_matrix(self) -> bool:
        """Whether its parameters hold a w_h (what weight drop masks); the linear cells have none."""
        return "w_h" in jax.eval_shape(lambda: self.init_params(jax.random.PRNGKey(0), 2, 2))

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


def _input_only_init(gates):
    """Initialiser for a cell with no recurrent matrix: w_x [D, G*H] and b, U(-1/sqrt(D), 1/sqrt(D))."""
    def init_params(key, input_size, hidden_size, init_scale=None, dtype=jnp.float32):
        scale = init_scale if init_scale else input_size ** -0.5
        kx, kb = jax.random.split(key)
        return {"w_x": _uniform(kx, (input_size, gates * hidden_size), scale, dtype),
                "b": _uniform(kb, (gates * hidden_size,), scale, dtype)}
    return init_params


def _with_core(name, gates, carry_names, init_params, core, summed_gates):
    return Cell(name, gates, carry_names, init_params, _update_from_core(core), core=core, summed_gates=summed_gates)


def _mogrifier(rounds: int, rank: int) -> Cell:
    """The Mogrifier of these settings; with 0 rounds it is the LSTM, fast paths included."""
    options = (("rounds", rounds), ("rank", rank))
    if rounds == 0:
        return Cell("mogrifier", 4, ("c", "h"), lstm_init_params, _update_from_core(lstm_core), core=lstm_core,
                    summed_gates=4, options=options)
    return Cell("mogrifier", 4, ("c", "h"), functools.partial(mogrifier_init_params, rounds=rounds, rank=rank),
                functools.partial(mogrifier_update, rounds=rounds), project=_identity_projection, options=options)


CELLS = {
    cell.name: cell
    for cell in (
        _with_core("rnn", 1, ("h",), _plain_init(1), rnn_core, summed_gates=1),
        _with_core("lstm", 4, ("c", "h"), lstm_init_params, lstm_core, summed_gates=4),
        _with_core("gru", 3, ("h",), gru_init_params, gru_core, summed_gates=2),
        Cell("gru_cho", 3, ("h",), _plain_init(3), gru_cho_update),
        _with_core("gru_seed", 3, ("h",), _plain_init(3), gru_seed_core, summed_gates=3),
        Cell("mingru", 2, ("h",), _input_only_init(2), mingru_update, linear=mingru_linear),
        Cell("minlstm", 3, ("h",), _input_only_init(3), minlstm_update, linear=minlstm_linear),
        _mogrifier(rounds=5, rank=0),  # the paper's 5 rounds, full rank; `get_cell` builds other settings
    )
}


@functools.lru_cache(maxsize=None)  # one Cell per setting: a cell is a static argument of jitted functions
def get_cell(name: str, rounds: int = 5, rank: int = 0) -> Cell:
    """The cell registered as `name`; for the Mogrifier, `rounds` rounds of gating of rank `rank` (0: full)."""
    if name not in CELLS:
        from rnnlm.errors import UserError
        raise UserError(f"unknown cell {name!r}; choose one of {', '.join(CELLS)}")
    if name == "mogrifier":
        return _mogrifier(rounds, rank)
    return CELLS[name]


def cell_of(model_config) -> Cell:
    """The cell a `model` config section (or a model module with the same fields) asks for."""
    return get_cell(model_config.cell, getattr(model_config, "mogrifier_rounds", 5),
                    getattr(model_config, "mogrifier_rank", 0))
