"""Models: Flax Linen modules that only create parameters and call the pure functions.

All computation lives in `rnnlm.cells` and `rnnlm.recurrence` (the reference
path) and `rnnlm.fast` (the same numbers, faster; `rnnlm.fast.choose` says
which runs where); the modules here decide the parameter names and shapes and
wire embedding -> stack -> decoder (the language model) or embedding -> stack
-> pooling -> dense (the classifier). Parameter trees: `embedding`, `layer_<i>`
(`w_x`, `w_h`, `b`, a GRU's `b_hn`), the language model's `projection`,
`decoder` and `decoder_bias`, the classifier's `backward_layer_<i>`, `dense`
and `dense_bias`.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from rnnlm import cells, fast
from rnnlm.cells import add_bias, cell_of
from rnnlm.fast import precision, table, wavefront
from rnnlm.recurrence import Probe, dropout, initial_carry, run_stack


OOV_ID = 1  # the classifier's word index: 0 padding, 1 out-of-vocabulary (rnnlm.data.classification)
# Dropout keys: fold_in(rng, 0) embedding outputs, (rng, d) the input of layer d, (rng, L) the top layer's
# outputs; these two sit far above any layer count.
EMBED_ROWS_KEY, WEIGHT_DROP_KEY = 1 << 20, (1 << 20) + 1


def drop_words(rng, rate: float, tokens, mask=None):
    """Word dropout (as in Flax's SST-2 example): each real token's id -> OOV_ID with
    probability `rate`; padding (mask False, or id 0 without a mask) is left alone."""
    real = tokens != 0 if mask is None else mask.astype(bool)
    return jnp.where(jax.random.bernoulli(rng, rate, tokens.shape) & real, OOV_ID, tokens)


def drop_rows(rng, rate: float, embedding):
    """Embedding dropout (Gal & Ghahramani 2016; AWD-LSTM's dropoute): whole rows, that is word types,
    zeroed with probability `rate`, the others scaled by 1 / (1 - rate); one mask for the whole window."""
    keep = jax.random.bernoulli(rng, 1.0 - rate, (embedding.shape[0], 1))
    return jnp.where(keep, embedding / (1.0 - rate), jnp.zeros_like(embedding))


def drop_connect(rng, rate: float, layers):
    """Weight drop (Wan et al. 2013's DropConnect on w_h, AWD-LSTM's wdrop): every layer's recurrent
    matrix with entries zeroed with probability `rate` and the rest scaled, one mask per layer for the
    whole window, the same at every step and for every stream."""
    return [{**p, "w_h": dropout(jax.random.fold_in(rng, depth), rate, p["w_h"])} for depth, p in enumerate(layers)]


def _norm_params(module, sizes):
    """Per-layer layer-norm parameters {"scale": 1, "bias": 0} of each layer's input width, or () without."""
    if not module.layer_norm:
        return ()
    init = lambda key, n: {"scale": jnp.ones((n,)), "bias": jnp.zeros((n,))}
    return [module.param(f"norm_{d}", init, n) for d, n in enumerate(sizes)]


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
    mogrifier_rounds: int = 5  # the Mogrifier's rounds of mutual gating (`rnnlm.cells.mogrify`); 0 = the LSTM
    mogrifier_rank: int = 0  # their matrices' rank; 0 = full
    residual: bool = False  # a layer as wide as its input adds it: y = x + layer(x)
    layer_norm: bool = False  # every layer reads its input layer-normalised (`rnnlm.recurrence.layer_norm`)
    dropout: float = 0.0  # on the output of every recurrent layer (AWD-LSTM's `dropout` on the last)
    embed_dropout: float = 0.0  # on the embedding output (AWD-LSTM's `dropouti`)
    hidden_dropout: float = -1.0  # between layers instead (AWD-LSTM's `dropouth`); -1 = `dropout`
    locked_dropout: bool = False  # the three dropouts above: one mask per stream, shared by a window's steps
    embed_row_dropout: float = 0.0  # whole embedding rows (word types) per window (AWD-LSTM's `dropoute`)
    weight_drop: float = 0.0  # DropConnect on every layer's w_h, one mask per window (AWD-LSTM's `wdrop`)
    hidden_sizes: tuple = ()  # one width per layer (AWD-LSTM: 1150, 1150, 400); () = hidden_size for all
    tie_weights: bool = False  # softmax weights = embedding matrix (Press & Wolf 2017)
    mos_components: int = 0  # K > 0: a mixture of K softmaxes over tanh latents of width E (Yang et al. 2018)
    init_scale: float = 0.0  # U(-s, s) for every weight; 0 = each part's default
    matmul_dtype: str = "float32"  # "bfloat16": matmuls in bfloat16 with float32 accumulation
    speed: fast.Speed = fast.Speed()  # how to compute (fast paths, unrolling), never what

    def setup(self):
        cell = cell_of(self)
        scale = self.init_scale or None
        self.embedding = self.param("embedding", _uniform_init(self.init_scale or 0.1), (self.vocab_size, self.embed_size))
        widths = self.layer_sizes
        sizes = [self.embed_size, *widths[:-1]]
        self.layers = [
            self.param(f"layer_{depth}", cell.init_params, in_size, width, scale)
            for depth, (in_size, width) in enumerate(zip(sizes, widths))
        ]
        self.norms = _norm_params(self, sizes)
        out_size = widths[-1]
        if self.projects:
            # Tying needs features of the embedding's width; a linear map bridges H -> E.
            self.projection = self.param("projection", _uniform_init(self.init_scale or out_size ** -0.5),
                                         (out_size, self.embed_size))
            out_size = self.embed_size
        if self.mos_components:
            # Yang et al.'s decoder: a prior over K components and K latents tanh(h W_k + b_k) of the
            # embedding's width, each read by the (tied or own) softmax weights.
            k, width = self.mos_components, self.embed_size
            self.mos_prior = self.param("mos_prior", _uniform_init(self.init_scale or out_size ** -0.5), (out_size, k))
            self.mos_latent = self.param("mos_latent", _uniform_init(self.init_scale or out_size ** -0.5),
                                         (out_size, k * width))
            self.mos_latent_bias = self.param("mos_latent_bias", nn.initializers.zeros, (k * width,))
            out_size = width
        if not self.tie_weights:
            self.decoder = self.param("decoder", _uniform_init(self.init_scale or out_size ** -0.5), (out_size, self.vocab_size))
        self.decoder_bias = self.param("decoder_bias", nn.initializers.zeros, (self.vocab_size,))

    def example_inputs(self):
        """The smallest arguments of `__call__`, for initialising the parameters (`init_params`)."""
        return jnp.zeros((1, 1), jnp.int32), self.initial_carry(1)

    @property
    def layer_sizes(self) -> tuple:
        """Each recurrent layer's width."""
        return tuple(self.hidden_sizes) or (self.hidden_size,) * self.num_layers

    @property
    def projects(self) -> bool:
        """Tied weights, and a top layer narrower or wider than the embedding: H -> E by `projection` (a
        mixture of softmaxes makes its latents of width E instead)."""
        return self.tie_weights and self.layer_sizes[-1] != self.embed_size and not self.mos_components

    def initial_carry(self, batch_size: int):
        return initial_carry(cell_of(self), self.num_layers, batch_size, self.layer_sizes)

    def plan(self, tokens_shape=(0, 0), *, train: bool = False, probe: bool = False) -> fast.Plan:
        """The fast paths a call on tokens of this [B, T] shape takes (`rnnlm.fast.choose`)."""
        batch, steps = tokens_shape
        uniform = len(set(self.layer_sizes)) == 1
        return fast.choose(self.speed, cell_of(self), train=train, probe=probe, vocab=self.vocab_size,
                           embed=self.embed_size, hidden=self.layer_sizes[0] if uniform else -1,
                           layers=self.num_layers, steps=steps,
                           tokens=batch * steps, embed_dropout=train and self.embed_dropout > 0,
                           matmul_dtype=self.matmul_dtype, between_layers=self.residual or self.layer_norm,
                           normed_inputs=self.layer_norm)

    @property
    def between_dropout(self) -> float:
        return self.dropout if self.hidden_dropout < 0 else self.hidden_dropout

    def features(self, tokens, carry, mask=None, *, train: bool = False, probe: Probe | None = None,
                 with_top: bool = False):
        """tokens [B, T] -> (features [B, T, F], carry): everything before the decoder matmul.

        mask [B, T] (optional): False steps keep the carry and output zeros (a drawn window's padding).

        With a `probe` the reference path runs and, for a recording probe, a third item holds the
        probed layer's states (`rnnlm.recurrence.Probe`). With `with_top` the third item is the top
        layer's outputs before and after their dropout, time-major [T, B, H] (AR and TAR read them).
        """
        regularised = (self.dropout or self.embed_dropout or self.between_dropout or self.embed_row_dropout
                       or self.weight_drop)
        rng = self.make_rng("dropout") if train and regularised else None
        plan = self.plan(tokens.shape, train=train, probe=probe is not None)
        cell, matmul = cell_of(self), self._matmul(plan)
        layers = self.layers
        embedding = self.embedding
        if rng is not None and self.weight_drop:
            # Masked outside every scan: the hand-written backward pass sees a plain w_h, and autodiff
            # carries its gradient through the mask to the raw matrix.
            layers = drop_connect(jax.random.fold_in(rng, WEIGHT_DROP_KEY), self.weight_drop, layers)
        if rng is not None and self.embed_row_dropout:
            embedding = drop_rows(jax.random.fold_in(rng, EMBED_ROWS_KEY), self.embed_row_dropout, embedding)
        layers = [self._cast_matrices(p) for p in layers]
        if plan.input_table:
            # The first layer gathers rows of embedding @ w_x + b by id instead of multiplying
            # every token's embedding by w_x: same values, V rows of matmul instead of B*T.
            layers[0] = {**layers[0], "w_x": table.input_table(self._cast(embedding), layers[0], matmul)}
            xs = tokens.T
        else:
            xs = jnp.take(embedding, tokens.T, axis=0)  # [T, B, E]: transpose ids, not activations
        if rng is not None and self.embed_dropout:
            xs = dropout(jax.random.fold_in(rng, 0), self.embed_dropout, xs, self.locked_dropout)
        # Unrolling halves a forward-only loop's per-step overhead but slowed training's backward
        # pass, so the two passes have their own factors.
        unroll = self.speed.unroll if train else self.speed.eval_unroll
        recorded = None
        if plan.wavefront and mask is None:
            carry, ys = wavefront.run_wavefront(cell, layers, carry, xs, unroll=unroll)
        else:
            mask_t = None if mask is None else mask.T.astype(bool)
            out = run_stack(cell, layers, carry, xs, mask_t, dropout_rate=self.between_dropout, rng=rng, unroll=unroll,
                            probe=probe, scan=fast.layer_scan(plan), norms=self.norms, residual=self.residual,
                            locked=self.locked_dropout)
            carry, ys = out[:2]
            recorded = out[2] if len(out) > 2 else None
        top = ys
        if rng is not None:
            ys = dropout(jax.random.fold_in(rng, self.num_layers), self.dropout, ys, self.locked_dropout)
        if with_top:
            recorded = (top, ys)
        ys = jnp.swapaxes(ys, 0, 1)
        if self.projects:
            ys = matmul(ys, self._cast(self.projection))
        return (ys, carry) if recorded is None else (ys, carry, recorded)

    def decoder_weights(self):
        """(weight [F, V] in the matmul dtype, bias [V]): logits = features @ weight + bias."""
        return self._cast(self.embedding.T if self.tie_weights else self.decoder), self.decoder_bias

    def decode(self, features):
        """features [..., F] -> logits [..., V] (float32). With a mixture of softmaxes these are the
        mixture's log-probabilities, log sum_k pi_k softmax(latent_k @ weight + bias): a softmax of
        them is the mixture, so sampling, scoring and the losses read them as logits."""
        weight, bias = self.decoder_weights()
        matmul = self._matmul(self.plan())
        if not self.mos_components:
            return add_bias(matmul(features, weight), bias)
        k = self.mos_components
        log_prior = jax.nn.log_softmax(matmul(features, self._cast(self.mos_prior)).astype(jnp.float32), axis=-1)
        latent = jnp.tanh(add_bias(matmul(features, self._cast(self.mos_latent)), self.mos_latent_bias))
        latent = latent.reshape(latent.shape[:-1] + (k, self.embed_size)).astype(features.dtype)
        log_p = jax.nn.log_softmax(add_bias(matmul(latent, weight), bias).astype(jnp.float32), axis=-1)  # [..., K, V]
        return jax.nn.logsumexp(log_p + log_prior[..., None], axis=-2)

    def _matmul(self, plan: fast.Plan):
        return precision.matmul if plan.low_precision_backward else cells.matmul

    def _cast(self, matrix):
        # Cast once per call, outside the scan; parameters and their gradients stay float32.
        return matrix.astype(jnp.dtype(self.matmul_dtype))

    def _cast_matrices(self, params):
        return {k: self._cast(v) if k in ("w_x", "w_h") else v for k, v in params.items()}

    def __call__(self, tokens, carry, *, train: bool = False):
        features, carry = self.features(tokens, carry, train=train)
        return self.decode(features), carry


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
    "max" over the valid steps of the top layer's outputs; "attention" = their
    weighted sum, weights softmax_t(v . tanh(W y_t)) over the valid steps
    (Bahdanau's additive attention with keys only, as Flax's examples/sst2;
    W is [F, hidden_size]), the outputs it reads dropped at `dropout`.
    head_size: > 0 puts a tanh layer of that width (dropped at `dropout`)
    between the pooled features and the logits, Flax's MLP classifier.
    """

    vocab_size: int
    num_classes: int
    embed_size: int
    hidden_size: int
    num_layers: int
    cell: str = "lstm"
    mogrifier_rounds: int = 5
    mogrifier_rank: int = 0
    residual: bool = False  # as the language model's
    layer_norm: bool = False
    bidirectional: bool = False
    pooling: str = "last"
    head_size: int = 0
    dropout: float = 0.0  # between layers and on the pooled features
    embed_dropout: float = 0.0  # on the embedding output
    word_dropout: float = 0.0  # a real token's id becomes out-of-vocabulary (`OOV_ID`) with this probability
    init_scale: float = 0.0  # U(-s, s) for every weight; 0 = each part's default
    freeze_embeddings: bool = False  # no gradient reaches the embedding (pretrained vectors kept as they are)
    speed: fast.Speed = fast.Speed()

    def setup(self):
        cell = cell_of(self)
        scale = self.init_scale or None
        directions = 2 if self.bidirectional else 1
        self.embedding = self.param("embedding", _uniform_init(self.init_scale or 0.1), (self.vocab_size, self.embed_size))
        sizes = [self.embed_size] + [directions * self.hidden_size] * (self.num_layers - 1)
        self.layers = [self.param(f"layer_{d}", cell.init_params, n, self.hidden_size, scale) for d, n in enumerate(sizes)]
        if self.bidirectional:
            self.backward_layers = [self.param(f"backward_layer_{d}", cell.init_params, n, self.hidden_size, scale)
                                    for d, n in enumerate(sizes)]
        self.norms = _norm_params(self, sizes)  # one per layer, shared by both directions (they read one input)
        features = directions * self.hidden_size
        if self.pooling == "attention":
            self.attention_keys = self.param("attention_keys", _uniform_init(self.init_scale or features ** -0.5),
                                             (features, self.hidden_size))
            self.attention_energy = self.param("attention_energy",
                                               _uniform_init(self.init_scale or self.hidden_size ** -0.5),
                                               (self.hidden_size,))
        if self.head_size:
            self.head = self.param("head", _uniform_init(self.init_scale or features ** -0.5),
                                   (features, self.head_size))
            self.head_bias = self.param("head_bias", nn.initializers.zeros, (self.head_size,))
            features = self.head_size
        self.dense = self.param("dense", _uniform_init(self.init_scale or features ** -0.5), (features, self.num_classes))
        self.dense_bias = self.param("dense_bias", nn.initializers.zeros, (self.num_classes,))

    def example_inputs(self):
        return jnp.zeros((1, 1), jnp.int32), jnp.ones((1, 1), bool)

    def features(self, tokens, mask=None, *, train: bool = False, perturbation=None):
        """tokens [B, T] (and mask [B, T]) -> features [B, directions * H] (or [B, head_size]).

        perturbation [B, T, E]: added to the embedded words after their dropout (adversarial training)."""
        cell = cell_of(self)
        rng = self.make_rng("dropout") if train and (self.dropout or self.embed_dropout or self.word_dropout) else None
        plan = fast.choose(self.speed, cell, train=train)
        table = jax.lax.stop_gradient(self.embedding) if self.freeze_embeddings else self.embedding
        if rng is not None and self.word_dropout:
            tokens = drop_words(jax.random.fold_in(rng, self.num_layers + 1), self.word_dropout, tokens, mask)
        xs = jnp.take(table, tokens.T, axis=0)  # [T, B, E]
        mask_t = None if mask is None else mask.T.astype(bool)  # [T, B]
        if rng is not None:
            xs = dropout(jax.random.fold_in(rng, 0), self.embed_dropout, xs)
        if perturbation is not None:
            xs = xs + jnp.swapaxes(perturbation, 0, 1).astype(xs.dtype)
        zeros = initial_carry(cell, self.num_layers, tokens.shape[0], self.hidden_size, xs.dtype)
        backward = (self.backward_layers, zeros) if self.bidirectional else ((), ())
        carries, ys = run_stack(cell, self.layers, zeros, xs, mask_t, reverse_layers=backward[0],
                                reverse_carries=backward[1], dropout_rate=self.dropout, rng=rng,
                                unroll=self.speed.unroll if train else self.speed.eval_unroll, scan=fast.layer_scan(plan),
                                norms=self.norms, residual=self.residual)
        tops = [carries[0][-1], carries[1][-1]] if self.bidirectional else [carries[-1]]
        if rng is not None and self.pooling == "attention":
            ys = dropout(jax.random.fold_in(rng, self.num_layers + 2), self.dropout, ys)
        pooled = self._pool(ys, jnp.concatenate([top[-1] for top in tops], axis=-1), mask_t)  # h: a carry's last part
        if rng is not None:
            pooled = dropout(jax.random.fold_in(rng, self.num_layers), self.dropout, pooled)
        if self.head_size:
            pooled = jnp.tanh(add_bias(pooled @ self.head, self.head_bias))
            if rng is not None:
                pooled = dropout(jax.random.fold_in(rng, self.num_layers + 3), self.dropout, pooled)
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
        if self.pooling == "attention":
            scores = jnp.tanh(ys @ self.attention_keys) @ self.attention_energy  # [T, B]
            # A finite floor, not -inf: an all-padding filler row then gets finite weights (zeroed below) and gradients.
            scores = jnp.where(mask_t, scores, jnp.finfo(scores.dtype).min)
            weights = jnp.where(mask_t, jax.nn.softmax(scores, axis=0), 0.0)
            return jnp.einsum("tb,tbf->bf", weights, ys)
        raise ValueError(f"unknown pooling {self.pooling!r}; choose last, mean, max or attention")

    def __call__(self, tokens, mask=None, *, train: bool = False, perturbation=None):
        return add_bias(self.features(tokens, mask, train=train, perturbation=perturbation) @ self.dense,
                        self.dense_bias)


def language_model_from_config(config, vocab_size: int) -> LanguageModel:
    """The language model of a run's config (its `model` and `speed` sections)."""
    m = config.model
    cell_of(m)  # fail early, with the list of names, on a typo
    return LanguageModel(vocab_size=vocab_size, embed_size=m.embed_size, hidden_size=m.hidden_size,
                         num_layers=m.num_layers, cell=m.cell, mogrifier_rounds=m.mogrifier_rounds,
                         mogrifier_rank=m.mogrifier_rank, residual=m.residual, layer_norm=m.layer_norm,
                         dropout=m.dropout, embed_dropout=m.embed_dropout, hidden_dropout=m.hidden_dropout,
                         locked_dropout=m.locked_dropout, embed_row_dropout=m.embed_row_dropout,
                         weight_drop=m.weight_drop, hidden_sizes=tuple(m.hidden_sizes),
                         tie_weights=m.tie_weights, mos_components=m.mos_components, init_scale=m.init_scale, matmul_dtype=m.matmul_dtype,
                         speed=fast.Speed.from_config(config.speed))


def classifier_from_config(config, vocab_size: int, num_classes: int) -> Classifier:
    m = config.model
    cell_of(m)
    return Classifier(vocab_size=vocab_size, num_classes=num_classes, embed_size=m.embed_size,
                      hidden_size=m.hidden_size, num_layers=m.num_layers, cell=m.cell,
                      mogrifier_rounds=m.mogrifier_rounds, mogrifier_rank=m.mogrifier_rank, residual=m.residual,
                      layer_norm=m.layer_norm, bidirectional=m.bidirectional,
                      pooling=m.pooling, head_size=m.head_size, dropout=m.dropout, embed_dropout=m.embed_dropout, word_dropout=m.word_dropout,
                      init_scale=m.init_scale,
                      freeze_embeddings=m.freeze_embeddings, speed=fast.Speed.from_config(config.speed))


def init_params(model: nn.Module, key):
    """The parameters of a model from its `example_inputs` (the one initialiser)."""
    return model.init({"params": key}, *model.example_inputs())["params"]


def count_params(model_or_params) -> int:
    """Parameters of a model (counted from its initialiser's shapes, nothing allocated) or of a tree."""
    if isinstance(model_or_params, nn.Module):
        model_or_params = jax.eval_shape(lambda: init_params(model_or_params, jax.random.PRNGKey(0)))
    return sum(x.size for x in jax.tree_util.tree_leaves(model_or_params))
