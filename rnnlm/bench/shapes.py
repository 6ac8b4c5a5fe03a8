"""The benchmarked shapes, their analytic matmul FLOP count and the token data every implementation reads.

Token values do not change the speed of a dense RNN, so the data is uniform
random ids from a fixed seed rather than a corpus: the benchmark needs no data
directory, and every implementation reads the very same windows.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from rnnlm.cells import get_cell
from rnnlm.data.batching import Streams, make_streams
from rnnlm.errors import UserError

GATES = {"lstm": 4, "gru": 3, "mingru": 2, "minlstm": 3, "mogrifier": 4}  # the fused matmuls are GATES * hidden wide
INPUT_ONLY = ("mingru", "minlstm")  # gates of x_t alone: no recurrent matmul (rnnlm.cells)
MOGRIFIER_ROUNDS = 5  # the benchmark's Mogrifier: the paper's 5 rounds at full rank (`rnnlm.cells.get_cell`)
TRAIN_WINDOWS = 8  # distinct train windows cycled through; the carry flows from one to the next


@dataclasses.dataclass(frozen=True)
class Shape:
    name: str
    vocab: int
    embed: int
    hidden: int
    layers: int
    batch: int  # train streams
    seq_len: int  # BPTT window, tokens
    eval_batch: int  # eval streams (larger than train: eval has no backward pass to hold)

    def tokens_per_train_step(self) -> int:
        return self.batch * self.seq_len

    def tokens_per_eval_step(self) -> int:
        return self.eval_batch * self.seq_len


CONFIGS = {
    # Zaremba et al. (2014) small, at BPTT 35 like the medium model.
    "ptb_small": Shape("ptb_small", vocab=10_000, embed=200, hidden=200, layers=2, batch=20, seq_len=35, eval_batch=64),
    # char-rnn / tinyshakespeare sized.
    "char": Shape("char", vocab=65, embed=128, hidden=512, layers=2, batch=64, seq_len=128, eval_batch=128),
    # Zaremba et al. (2014) medium.
    "ptb_medium": Shape("ptb_medium", vocab=10_000, embed=650, hidden=650, layers=2, batch=20, seq_len=35,
                        eval_batch=64),
    # The char shape at longer windows, the tokens of a step kept (B * T = 8,192 trained, 16,384 evaluated):
    # the cost per token against T, where a parallel scan and a loop part ways.
    **{f"char_t{t}": Shape(f"char_t{t}", vocab=65, embed=128, hidden=512, layers=2, batch=8192 // t, seq_len=t,
                           eval_batch=16384 // t) for t in (128, 512, 2048)},
}
DEFAULT_CONFIGS = ("ptb_small", "char", "ptb_medium")  # what a plain `rnnlm bench` runs


def tiny(shape: Shape) -> Shape:
    """Every dimension shrunk so that a whole run takes seconds; the name is kept."""
    return dataclasses.replace(shape, vocab=50, embed=16, hidden=32, layers=2, batch=4, seq_len=8, eval_batch=8)


def get_shape(name: str, is_tiny: bool = False) -> Shape:
    if name not in CONFIGS:
        raise UserError(f"unknown benchmark config {name!r}; choose from {', '.join(CONFIGS)}")
    return tiny(CONFIGS[name]) if is_tiny else CONFIGS[name]


def forward_flops_per_token(shape: Shape, cell: str) -> int:
    """Matmul FLOPs of one token's forward pass: input projections, recurrent matmuls, decoder.

    2 * m * n per [m] @ [m, n] product; element-wise gate math, the embedding
    lookup and the softmax are left out (they are not matmul work).
    """
    width = GATES[cell] * shape.hidden
    flops = 0
    for depth in range(shape.layers):
        inputs = shape.embed if depth == 0 else shape.hidden
        flops += 2 * inputs * width  # x_t @ W_x
        if cell not in INPUT_ONLY:
            flops += 2 * shape.hidden * width  # h_{t-1} @ W_h
        if cell == "mogrifier":
            flops += MOGRIFIER_ROUNDS * 2 * inputs * shape.hidden  # each round's Q h or R x, [H] x [D]
    return flops + 2 * shape.hidden * shape.vocab  # h_t @ W_decoder


def param_count(shape: Shape, cell: str) -> int:
    """Parameters of the benchmarked language model: embedding, each layer's matrices and biases, decoder."""
    width = GATES[cell] * shape.hidden
    count = shape.vocab * shape.embed + shape.hidden * shape.vocab + shape.vocab
    for depth in range(shape.layers):
        inputs = shape.embed if depth == 0 else shape.hidden
        count += inputs * width + width + (0 if cell in INPUT_ONLY else shape.hidden * width)
        count += shape.hidden if cell == "gru" else 0  # b_hn
        count += MOGRIFIER_ROUNDS * inputs * shape.hidden if cell == "mogrifier" else 0
    return count


def equal_params(shape: Shape, cell: str, reference: str = "lstm") -> Shape:
    """The shape with the hidden size that brings `cell`'s model nearest to `reference`'s parameter count."""
    target = param_count(shape, reference)
    widths = range(8, 8 * shape.hidden + 1)
    hidden = min(widths, key=lambda h: abs(param_count(dataclasses.replace(shape, hidden=h), cell) - target))
    return dataclasses.replace(shape, hidden=hidden)


def train_flops_per_token(shape: Shape, cell: str) -> int:
    """Backward costs two matmuls per forward matmul (input and weight gradients): 3x forward."""
    return 3 * forward_flops_per_token(shape, cell)


def folded_flops_per_token(shape: Shape, cell: str, tokens_per_call: int, train: bool) -> float:
    """The model's FLOP count (above) with the first layer's inputs read from an input table, as
    rnnlm does for small vocabularies (`LanguageModel.fold_embedding`): per call the [V, E] @ [E, G*H]
    table (in training also its two gradient products) instead of every token's [E] @ [E, G*H]
    product and its two gradients. Rows are gathered (not matmul work), except in a GRU's
    forward-only pass, which reads each token's row through a [V]-wide one-hot product
    (`rnnlm.fast.table.rows`); training scatter-adds the rows' gradients."""
    width = GATES[cell] * shape.hidden
    table = 2 * shape.vocab * shape.embed * width / tokens_per_call
    if train:
        return train_flops_per_token(shape, cell) - 3 * 2 * shape.embed * width + 3 * table
    gated = get_cell(cell)  # a cell without a core gathers its rows in the reference loop: no one-hot product
    one_hot = 0 if gated.core is None or gated.summed_gates == gated.gates else 2 * shape.vocab * width
    return forward_flops_per_token(shape, cell) - 2 * shape.embed * width + table + one_hot


def _ids(shape: Shape, count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, shape.vocab, size=count, dtype=np.int32)


def eval_ids(shape: Shape, steps: int, seed: int = 1) -> np.ndarray:
    """Exactly `steps` full windows of eval_batch x seq_len (make_streams adds no padding)."""
    return _ids(shape, shape.eval_batch * shape.seq_len * steps + 1, seed)


def train_streams(shape: Shape, seed: int = 0) -> Streams:
    """The windows of the shipped batching code, `make_streams`, shared by every implementation."""
    return make_streams(_ids(shape, shape.batch * shape.seq_len * TRAIN_WINDOWS + 1, seed), shape.batch, shape.seq_len)


def eval_streams(shape: Shape, steps: int) -> Streams:
    return make_streams(eval_ids(shape, steps), shape.eval_batch, shape.seq_len)
