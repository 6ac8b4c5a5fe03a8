"""An LSTM layer as one cuDNN call (`jax.experimental.rnn`), the fast path on NVIDIA GPUs.

`lax.scan` launches a few small kernels per time step; cuDNN's fused LSTM runs
a whole layer, forward or backward, in one call, as PyTorch's `nn.LSTM` does on
a GPU. The parameters keep rnnlm's layout ({"w_x": [D, 4H], "w_h": [H, 4H],
"b": [4H]}, gates i, f, g, o, which is cuDNN's order) and are packed into
cuDNN's flat weight vector inside the step, so checkpoints, the scan path and
every other tool see one layout. The pack is a copy of one layer's weights per
call, small next to a window's activations, and its gradient is a slice.

Off a GPU the same packed vector goes through `jax.experimental.rnn.lstm_ref`,
which unpacks it the way cuDNN reads it: that is how the tests on a CPU check
the packing and the carry's order against the scan.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.experimental import rnn


def available() -> bool:
    """cuDNN's LSTM has a lowering for CUDA (and ROCm) only."""
    return jax.default_backend() == "gpu"


def pack(params):
    """rnnlm's LSTM parameters -> cuDNN's flat vector for one unidirectional layer.

    cuDNN holds W_ih [4H, D], W_hh [4H, H], then the biases b_ih and b_hh, each
    flattened row-major. rnnlm has one bias, so b_hh is zeros (its gradient,
    which equals b_ih's, is dropped with it).
    """
    b = params["b"]
    return jnp.concatenate([params["w_x"].T.ravel(), params["w_h"].T.ravel(), b, jnp.zeros_like(b)])


def lstm_layer(params, carry, xs):
    """`rnnlm.recurrence.scan_layer` for the LSTM without a mask: xs [T, B, D], carry (c, h) -> (carry, ys [T, B, H])."""
    c, h = carry
    input_size, hidden_size = params["w_x"].shape[0], params["w_h"].shape[0]
    x = jnp.swapaxes(xs, 0, 1)  # cuDNN's wrapper is batch-major
    lengths = jnp.full((x.shape[0],), x.shape[1], jnp.int32)
    weights = pack(params)
    if available():
        y, h_n, c_n = rnn.lstm(x, h[None], c[None], weights, lengths, input_size=input_size,
                               hidden_size=hidden_size, num_layers=1, dropout=0.0, bidirectional=False)
    else:
        w_ih, w_hh, b_ih, b_hh = rnn.unpack_lstm_weights(weights, input_size, hidden_size, 1, False)
        y, h_n, c_n = rnn.lstm_ref(x, h[None], c[None], w_ih, w_hh, b_ih, b_hh, lengths,
                                   input_size, hidden_size, 1, 0.0, False)
    return (c_n[0], h_n[0]), jnp.swapaxes(y, 0, 1)
