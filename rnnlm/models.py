"""Models: Flax Linen modules that only create parameters and call the pure functions.

All computation lives in `rnnlm.cells` and `rnnlm.recurrence`; the modules here
decide the parameter names and shapes and wire embedding -> stack -> decoder.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import flax.linen as nn

from rnnlm.cells import get_cell
from rnnlm.recurrence import dropout, initial_carry, run_stack


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
    unroll: int = 1  # lax.scan unroll factor

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
        xs = jnp.take(self.embedding, tokens.T, axis=0)  # [T, B, E]: transpose ids, not activations
        if rng is not None:
            xs = dropout(jax.random.fold_in(rng, 0), self.embed_dropout, xs)
        carry, ys = run_stack(get_cell(self.cell), self.layers, carry, xs,
                              dropout_rate=self.dropout, rng=rng, unroll=self.unroll)
        if rng is not None:
            ys = dropout(jax.random.fold_in(rng, self.num_layers), self.dropout, ys)
        ys = jnp.swapaxes(ys, 0, 1)
        if self.tie_weights and self.hidden_size != self.embed_size:
            ys = ys @ self.projection
        return ys, carry

    def decode(self, features):
        """features [..., F] -> logits [..., V]."""
        weight = self.embedding.T if self.tie_weights else self.decoder
        return features @ weight + self.decoder_bias

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
    )


def count_params(params) -> int:
    return sum(x.size for x in jax.tree_util.tree_leaves(params))
