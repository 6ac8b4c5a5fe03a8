"""Models: Flax Linen modules that only create parameters and call the pure functions.

All computation lives in `rnnlm.cells` and `rnnlm.recurrence`; the modules here
decide the parameter names and shapes and wire embedding -> stack -> decoder (the
language model) or embedding -> stack -> pooling -> dense (the classifier).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import flax.linen as nn

from rnnlm.cells import get_cell, matmul
from rnnlm.recurrence import dropout, initial_carry, input_table, project_in_loop, run_stack, run_wavefront, scan_layer

# Forward-only passes of stacks this narrow run their layers as a wavefront on CPUs (README, levers):
# an evaluation window measured 6-10% faster at H = 200, -1% to +5% at H = 100-256, and -2% to +1%
# at H = 300-650, where the products, not their overhead, take the time.
WAVEFRONT_MAX_HIDDEN = 256


def _uniform_init(scale):
    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -scale, scale)
    return init


class LanguageModel(nn.Module):
    """Embedding -> stacked recurrent layers -> logits over the vocabulary.

    tokens [B, T] int32 -> logits [B, T, V]; the carry is one cell carry per
    layer (see `rnnlm.recurrence.initial_carry`).
    """

    vocab_size: int
    embed_size: int
    hidden_size: int
    num_layers: int
    cell: str = "lstm"
    dropout: float = 0.0  # on the output of every recurrent layer
    embed_dropout: float = 0.0  # on the embedding output
    tie_weights: bool = False  # softmax weights = embedding matrix (Press & Wolf 2017)
    init_scale: float = 0.0  # U(-s, s) for every weight; 0 = each part's default
    unroll: int = 1  # lax.scan unroll factor of training's forward and backward passes
    eval_unroll: int = 2  # lax.scan unroll factor of forward-only passes (evaluation, scoring, prompts)
    matmul_dtype: str = "float32"  # "bfloat16": matmuls in bfloat16 with float32 accumulation
    fold_embedding: bool = True  # the first layer reads embedding @ w_x + b by token id where that is cheaper
    wavefront: bool = True  # forward-only passes of narrow stacks advance all layers together where that is cheaper

    def setup(self):
        cell = get_cell(self.cell)
        scale = self.init_scale or None
        self.embedding = self.param("embedding", _uniform_init(self.init_scale or 0.1), (self.vocab_size, self.embed_size))
        sizes = [self.embed_size] + [self.hidden_size] * (self.num_layers - 1)
        self.layers = [
            self.param(f"layer_{depth}", cell.init_params, in_size, self.hidden_size, scale)
            for depth, in_size in enumerate(sizes)
        ]
        out_size = self.hidden_size
        if self.tie_weights and self.hidden_size != self.embed_size:
            # Tying needs features of the embedding's width; a linear map bridges H -> E.
            self.projection = self.param("projection", _uniform_init(self.init_scale or self.hidden_size ** -0.5), (self.hidden_size, self.embed_size))
            out_size = self.embed_size
        if not self.tie_weights:
            self.decoder = self.param("decoder", _uniform_init(self.init_scale or out_size ** -0.5), (out_size, self.vocab_size))
        self.decoder_bias = self.param("decoder_bias", nn.initializers.zeros, (self.vocab_size,))

    def initial_carry(self, batch_size: int):
        return initial_carry(get_cell(self.cell), self.num_layers, batch_size, self.hidden_size)

    def features(self, tokens, carry, *, train: bool = False):
        """tokens [B, T] -> (features [B, T, F], carry): everything before the decoder matmul."""
        rng = self.make_rng("dropout") if train and (self.dropout or self.embed_dropout) else None
        layers = [self._cast_matrices(p) for p in self.layers]
        if self._folds(tokens, rng):
            # The first layer gathers rows of embedding @ w_x + b by id instead of multiplying
            # every token's embedding by w_x: same values, V rows of matmul instead of B*T.
            layers[0] = {**layers[0], "w_x": input_table(self._cast(self.embedding), layers[0])}
            xs = tokens.T
        else:
            xs = jnp.take(self.embedding, tokens.T, axis=0)  # [T, B, E]: transpose ids, not activations
        if rng is not None and self.embed_dropout:
            xs = dropout(jax.random.fold_in(rng, 0), self.embed_dropout, xs)
        # Unrolling halves a forward-only loop's per-step overhead (ptb_small eval +10-15%) but slowed
        # training's backward pass, so the two passes have their own factors.
        cell, unroll = get_cell(self.cell), self.unroll if train else self.eval_unroll
        if self._runs_wavefront(xs, train):
            carry, ys = run_wavefront(cell, layers, carry, xs, unroll=unroll)
        else:
            carry, ys = run_stack(cell, layers, carry, xs, dropout_rate=self.dropout, rng=rng, unroll=unroll)
        if rng is not None:
            ys = dropout(jax.random.fold_in(rng, self.num_layers), self.dropout, ys)
        ys = jnp.swapaxes(ys, 0, 1)
        if self.tie_weights and self.hidden_size != self.embed_size:
            ys = matmul(ys, self._cast(self.projection))
        return ys, carry

    def _folds(self, tokens, rng) -> bool:
        """Whether `features` reads the first layer's inputs from `input_table` (README, levers).

        Not under embedding dropout (each position's input then differs). A rule of thumb for
        where it pays: a vocabulary no larger than the embedding (a GRU's forward-only pass reads
        the table through a [B, V] one-hot matmul in place of the [B, E] product) and a call with
        at least twice as many tokens as the vocabulary has entries (the table itself costs V rows
        of matmul, and of gradient). Character models are well inside it (V = 65, E = 128,
        thousands of tokens a window); word models, and calls of fewer than 2V tokens such as
        most one-token sampling steps, are outside.
        """
        return (self.fold_embedding and not (rng is not None and self.embed_dropout)
                and self.vocab_size <= self.embed_size and 2 * self.vocab_size <= tokens.size)

    def _runs_wavefront(self, xs, train: bool) -> bool:
        """Whether `features` runs the stack with `run_wavefront`: a forward-only pass (no dropout;
        training's backward pass is `scan_layer`'s) of two or more layers, each reading H-wide
        embedded inputs (not folded ids), H <= WAVEFRONT_MAX_HIDDEN, at least one step per layer,
        on a CPU (measured there; accelerators keep `run_stack`, whose first layer projects all
        its inputs in one matmul before the loop, `recurrence.project_in_loop`)."""
        return (self.wavefront and not train and self.num_layers >= 2 and get_cell(self.cell).core is not None
                and xs.ndim == 3 and self.embed_size == self.hidden_size <= WAVEFRONT_MAX_HIDDEN
                and xs.shape[0] >= self.num_layers and project_in_loop())

    def decoder_weights(self):
        """(weight [F, V] in the matmul dtype, bias [V]): logits = features @ weight + bias."""
        return self._cast(self.embedding.T if self.tie_weights else self.decoder), self.decoder_bias

    def decode(self, features):
        """features [..., F] -> logits [..., V] (float32)."""
        weight, bias = self.decoder_weights()
        return matmul(features, weight) + bias

    def _cast(self, matrix):
        # Cast once per step, outside the scan; parameters and their gradients stay float32.
        return matrix.astype(jnp.dtype(self.matmul_dtype))

    def _cast_matrices(self, params):
        return {k: self._cast(v) if k in ("w_x", "w_h") else v for k, v in params.items()}

    def __call__(self, tokens, carry, *, train: bool = False):
        features, carry = self.features(tokens, carry, train=train)
        return self.decode(features), carry


def language_model_from_config(model_config, vocab_size: int) -> LanguageModel:
    get_cell(model_config.cell)  # fail early, with the list of names, on a typo
    return LanguageModel(
        vocab_size=vocab_size,
        embed_size=model_config.embed_size,
        hidden_size=model_config.hidden_size,
        num_layers=model_config.num_layers,
        cell=model_config.cell,
        dropout=model_config.dropout,
        embed_dropout=model_config.embed_dropout,
        tie_weights=model_config.tie_weights,
        init_scale=model_config.init_scale,
        unroll=model_config.unroll,
        eval_unroll=model_config.eval_unroll,
        matmul_dtype=model_config.matmul_dtype,
        fold_embedding=model_config.fold_embedding,
        wavefront=model_config.wavefront,
    )


def count_params(params) -> int:
    return sum(x.size for x in jax.tree_util.tree_leaves(params))


class Classifier(nn.Module):
    """Embedding -> stacked (bi)directional recurrent layers -> pooling -> dense -> class logits.

    tokens [B, T] int32, mask [B, T] bool (True on real tokens) -> logits [B, C].
    With a mask the recurrence freezes the carry and zeroes the output on padded
    steps (`rnnlm.recurrence.scan_layer`), and pooling reads only valid steps, so
    a sentence gets the same logits whatever its padding (length, side) and its
    batch neighbours. Without one (`use_mask=False`, the ablation) padding is
    read like any token.

    bidirectional: every layer also runs over the sequence backwards
    (`reverse=True`, the same mask) and the next layer reads both outputs,
    concatenated [fwd, bwd] (as PyTorch's `bidirectional=True` and Keras's
    stacked `Bidirectional`).
    pooling: "last" = the final carry's h of each direction (with a mask: the
    state after the last real token; backwards: after the first); "mean" and
    "max" over the valid steps of the top layer's outputs.
    """

    vocab_size: int
    num_classes: int
    embed_size: int
    hidden_size: int
    num_layers: int
    cell: str = "lstm"
    bidirectional: bool = False
    pooling: str = "last"
    dropout: float = 0.0  # between layers and on the pooled features
    embed_dropout: float = 0.0  # on the embedding output
    init_scale: float = 0.0  # U(-s, s) for every weight; 0 = each part's default
    unroll: int = 1
    freeze_embeddings: bool = False  # no gradient reaches the embedding (pretrained vectors kept as they are)

    def setup(self):
        cell = get_cell(self.cell)
        scale = self.init_scale or None
        directions = 2 if self.bidirectional else 1
        self.embedding = self.param("embedding", _uniform_init(self.init_scale or 0.1), (self.vocab_size, self.embed_size))
        sizes = [self.embed_size] + [directions * self.hidden_size] * (self.num_layers - 1)
        self.layers = [self.param(f"layer_{d}", cell.init_params, n, self.hidden_size, scale) for d, n in enumerate(sizes)]
        if self.bidirectional:
            self.backward_layers = [self.param(f"backward_layer_{d}", cell.init_params, n, self.hidden_size, scale)
                                    for d, n in enumerate(sizes)]
        features = directions * self.hidden_size
        self.dense = self.param("dense", _uniform_init(self.init_scale or features ** -0.5), (features, self.num_classes))
        self.dense_bias = self.param("dense_bias", nn.initializers.zeros, (self.num_classes,))

    def features(self, tokens, mask=None, *, train: bool = False):
        """tokens [B, T] (and mask [B, T]) -> pooled features [B, directions * H]."""
        cell = get_cell(self.cell)
        rng = self.make_rng("dropout") if train and (self.dropout or self.embed_dropout) else None
        batch = tokens.shape[0]
        table = jax.lax.stop_gradient(self.embedding) if self.freeze_embeddings else self.embedding
        xs = jnp.take(table, tokens.T, axis=0)  # [T, B, E]
        mask_t = None if mask is None else mask.T.astype(bool)  # [T, B]
        if rng is not None:
            xs = dropout(jax.random.fold_in(rng, 0), self.embed_dropout, xs)
        stacks = [(self.layers, False)] + ([(self.backward_layers, True)] if self.bidirectional else [])
        for depth in range(self.num_layers):
            if depth > 0 and rng is not None:
                xs = dropout(jax.random.fold_in(rng, depth), self.dropout, xs)
            outputs, finals = [], []
            for layers, reverse in stacks:
                carry = cell.init_carry(batch, self.hidden_size, xs.dtype)
                carry, ys = scan_layer(cell, layers[depth], carry, xs, mask_t, reverse=reverse, unroll=self.unroll)
                outputs.append(ys)
                finals.append(carry[-1])  # h: the last element of every cell's carry
            xs = jnp.concatenate(outputs, axis=-1)
        pooled = self._pool(xs, jnp.concatenate(finals, axis=-1), mask_t)
        if rng is not None:
            pooled = dropout(jax.random.fold_in(rng, self.num_layers), self.dropout, pooled)
        return pooled

    def _pool(self, ys, last, mask_t):
        """ys [T, B, F] of the top layer, last [B, F] -> [B, F]."""
        if self.pooling == "last":
            return last
        if mask_t is None:
            mask_t = jnp.ones(ys.shape[:2], bool)
        valid = mask_t[:, :, None]
        if self.pooling == "mean":
            count = jnp.maximum(valid.sum(axis=0), 1).astype(ys.dtype)
            return jnp.where(valid, ys, 0.0).sum(axis=0) / count
        if self.pooling == "max":
            pooled = jnp.where(valid, ys, -jnp.inf).max(axis=0)
            return jnp.where(valid.any(axis=0), pooled, 0.0)  # an all-padding filler row: zeros, not -inf
        raise ValueError(f"unknown pooling {self.pooling!r}; choose last, mean or max")

    def __call__(self, tokens, mask=None, *, train: bool = False):
        return self.features(tokens, mask, train=train) @ self.dense + self.dense_bias


def classifier_from_config(model_config, vocab_size: int, num_classes: int) -> Classifier:
    get_cell(model_config.cell)
    return Classifier(
        vocab_size=vocab_size,
        num_classes=num_classes,
        embed_size=model_config.embed_size,
        hidden_size=model_config.hidden_size,
        num_layers=model_config.num_layers,
        cell=model_config.cell,
        bidirectional=model_config.bidirectional,
        pooling=model_config.pooling,
        dropout=model_config.dropout,
        embed_dropout=model_config.embed_dropout,
        init_scale=model_config.init_scale,
        unroll=model_config.unroll,
        freeze_embeddings=model_config.freeze_embeddings,
    )
