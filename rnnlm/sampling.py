"""Text generation: prime the carry with a prompt, then sample inside one jitted `lax.scan` (a long
text in chunks, streamed).

Decoding rules, applied in this order to the logits of each step:
  temperature 0 -> greedy (argmax); otherwise logits / temperature,
  top_k > 0     -> keep the k largest logits,
  top_p < 1     -> keep the smallest set of tokens whose probability reaches p (nucleus),
then draw from the renormalised distribution. `temperature` and `top_p` are
traced arguments (changing them does not recompile); `length` and `top_k` are static.
"""

from __future__ import annotations

import functools
import math
from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np


def filter_logits(logits, temperature, top_k: int, top_p):
    """logits [..., V] -> logits with the excluded tokens at -inf, scaled by 1/temperature."""
    logits = logits / jnp.maximum(temperature, 1e-6)
    if top_k:
        kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)

    def nucleus(logits):
        ordered = jnp.sort(logits, axis=-1)[..., ::-1]
        probs = jax.nn.softmax(ordered, axis=-1)
        # A token is kept if the mass strictly before it is below top_p; the first is always kept.
        kept = (jnp.cumsum(probs, axis=-1) - probs) < top_p
        threshold = jnp.take_along_axis(ordered, kept.sum(-1, keepdims=True) - 1, axis=-1)
        return jnp.where(logits < threshold, -jnp.inf, logits)

    # The sort over the vocabulary costs more than the rest of a sampling step: skip it when off.
    return jax.lax.cond(top_p < 1.0, nucleus, lambda logits: logits, logits)


def choose(rng, logits, temperature, top_k: int = 0, top_p=1.0):
    """One token id per row of logits [B, V].

    Drawn by inverting the cumulative distribution with one uniform number per
    row, not with `jax.random.categorical`'s Gumbel noise, which needs V random
    numbers per row: at V = 10,000 on a CPU those were two thirds of a batch-1
    sampling step (docs/levers.md). Tokens filtered out
    (probability 0) cover an empty interval and are never drawn.
    """
    def draw(logits):
        probabilities = jax.nn.softmax(filter_logits(logits, temperature, top_k, top_p), axis=-1)
        cdf = jnp.cumsum(probabilities, axis=-1)
        u = jax.random.uniform(rng, cdf.shape[:-1] + (1,), cdf.dtype) * cdf[..., -1:]
        return jnp.minimum((cdf <= u).sum(axis=-1), cdf.shape[-1] - 1)  # the first token whose cdf exceeds u

    return jax.lax.cond(temperature <= 0, lambda logits: jnp.argmax(logits, axis=-1), draw, logits)


def _prime(model, variables, prompt):
    """The carry after the prompt's first P-1 tokens (read in one scan), and its last token."""
    carry = model.initial_carry(prompt.shape[0])
    if prompt.shape[1] > 1:
        _, carry = model.apply(variables, prompt[:, :-1], carry)
    return carry, prompt[:, -1]


def _sample(model, variables, carry, token, keys, temperature, top_k, top_p):
    def body(state, key):
        carry, token = state
        logits, carry = model.apply(variables, token[:, None], carry)
        token = choose(key, logits[:, 0], temperature, top_k, top_p)
        return (carry, token), token

    (carry, token), tokens = jax.lax.scan(body, (carry, token), keys)
    return carry, token, tokens.T


@functools.partial(jax.jit, static_argnames=("model", "length", "top_k"))
def generate(model, params, prompt, rng, temperature, top_p, *, length: int, top_k: int = 0):
    """prompt [B, P] int32 (P >= 1) -> sampled continuation [B, length].

    The prompt's first P-1 tokens are read in one scan to build the carry; the
    last one is the first input of the sampling scan.
    """
    variables = {"params": params}
    carry, token = _prime(model, variables, prompt)
    return _sample(model, variables, carry, token, jax.random.split(rng, length), temperature, top_k, top_p)[2]


@functools.partial(jax.jit, static_argnames=("model", "length", "top_k"))
def _generate_more(model, params, carry, token, rng, temperature, top_p, *, length: int, top_k: int = 0):
    return _sample(model, {"params": params}, carry, token, jax.random.split(rng, length), temperature, top_k, top_p)


_prime_jit = jax.jit(_prime, static_argnums=0)
CHUNK = 4096  # tokens sampled per compiled call when streaming; a longer text arrives chunk by chunk


def check_settings(temperature, top_k: int, top_p, vocab_size: int | None = None, prefix: str = "") -> None:
    """The decoding settings, checked before anything runs (`prefix`: "sample." for the config's fields)."""
    from rnnlm.errors import UserError
    if not (math.isfinite(temperature) and temperature >= 0):
        raise UserError(f"{prefix}temperature must be a number >= 0 (0 = greedy), got {temperature}")
    if not 0 <= top_k <= (vocab_size if vocab_size is not None else top_k):
        raise UserError(f"{prefix}top-k must be between 0 and the vocabulary size {vocab_size}, got {top_k}"
                        if vocab_size is not None else f"{prefix}top_k must not be negative, got {top_k}")
    if not 0 < top_p <= 1:
        raise UserError(f"{prefix}top-p must be in (0, 1], got {top_p}")


def sample_stream(model, params, tokenizer, prompt: str = "", *, length: int, temperature: float = 1.0,
                  top_k: int = 0, top_p: float = 1.0, seed: int = 0, num_samples: int = 1) -> Iterator[list[str]]:
    """The texts of `sample_text`, in pieces as they are sampled: one list of `num_samples` pieces per
    chunk of at most CHUNK tokens (the first pieces start with the prompt). A text of at most CHUNK
    tokens is one chunk, sampled exactly as `generate` samples it."""
    check_settings(temperature, top_k, top_p, tokenizer.vocab_size)
    ids = tokenizer.encode(prompt, strict=True) if prompt else np.zeros(0, np.int32)
    if len(ids) == 0:  # begin as at the start of a line
        ids = np.array([tokenizer.index.get("\n", tokenizer.index.get("<eos>", 0))], np.int32)
    # Word tokens are decoded with a space after each; the prompt gets one too, so "end." + "I" reads "end. I".
    glue = " " if tokenizer.kind == "word" and prompt and not prompt[-1].isspace() else ""
    variables = {"params": params}
    carry, token = _prime_jit(model, variables, jnp.asarray(np.tile(ids, (num_samples, 1))))
    rng, temperature, top_p = jax.random.PRNGKey(seed), jnp.float32(temperature), jnp.float32(top_p)
    previous = None  # the last token of the previous chunk: decoding it with the next keeps SentencePiece's spaces
    for index, start in enumerate(range(0, length, CHUNK)):
        key = rng if index == 0 else jax.random.fold_in(rng, index)
        carry, token, tokens = _generate_more(model, params, carry, token, key, temperature, top_p,
                                              length=min(CHUNK, length - start), top_k=top_k)
        tokens = np.asarray(tokens)
        if previous is None:
            yield [prompt + glue + tokenizer.decode(row) for row in tokens]
        else:
            yield [tokenizer.decode(np.concatenate([[p], row]))[len(tokenizer.decode([p])):]
                   for p, row in zip(previous, tokens)]
        previous = tokens[:, -1]


def sample_text(model, params, tokenizer, prompt: str = "", *, length: int, temperature: float = 1.0,
                top_k: int = 0, top_p: float = 1.0, seed: int = 0, num_samples: int = 1) -> list[str]:
    """Text in, text out: the prompt followed by `length` sampled tokens, `num_samples` times."""
    pieces = list(sample_stream(model, params, tokenizer, prompt, length=length, temperature=temperature,
                                top_k=top_k, top_p=top_p, seed=seed, num_samples=num_samples))
    return ["".join(texts) for texts in zip(*pieces)]


# --- beam search -------------------------------------------------------------------------------

@functools.partial(jax.jit, static_argnames=("model", "length", "beam"))
def beam_search(model, params, prompt, length_penalty, end_id, *, length: int, beam: int):
    """The `beam` most likely continuations of one prompt [1, P], `length` tokens at most, in one jitted
    `lax.scan`: (tokens [beam, length], log-probabilities [beam], lengths [beam], scores [beam]), best first.

    Every step extends each live beam by every token and keeps the `beam` best totals. A beam that emits
    `end_id` (-1: none) is finished: it is extended by `end_id` at no cost, its length frozen. The final
    order is by score = log-probability / length ** length_penalty (0: the log-probability itself).
    With beam 1 this is greedy decoding.
    """
    variables = {"params": params}
    carry, token = _prime(model, variables, prompt)
    carry = jax.tree_util.tree_map(lambda x: jnp.repeat(x, beam, axis=0), carry)
    token = jnp.repeat(token, beam, axis=0)
    vocab = model.vocab_size
    totals = jnp.full((beam,), -jnp.inf).at[0].set(0.0)  # one live beam to start from
    state = (carry, token, totals, jnp.zeros(beam, bool), jnp.zeros((beam, length), jnp.int32),
             jnp.zeros(beam, jnp.int32))

    def body(state, step):
        carry, token, totals, finished, tokens, lengths = state
        logits, carry = model.apply(variables, token[:, None], carry)
        logp = jax.nn.log_softmax(logits[:, 0].astype(jnp.float32), axis=-1)
        only_end = jnp.where(jnp.arange(vocab) == end_id, 0.0, -jnp.inf)
        logp = jnp.where(finished[:, None], only_end[None], logp)
        best, index = jax.lax.top_k((totals[:, None] + logp).reshape(-1), beam)
        parent, word = index // vocab, (index % vocab).astype(jnp.int32)
        carry = jax.tree_util.tree_map(lambda x: x[parent], carry)
        was_finished = finished[parent]
        tokens = tokens[parent].at[:, step].set(word)
        lengths = lengths[parent] + (~was_finished).astype(jnp.int32)
        return (carry, word, best, was_finished | (word == end_id), tokens, lengths), None

    (_, _, totals, _, tokens, lengths), _ = jax.lax.scan(body, state, jnp.arange(length))
    scores = totals / jnp.maximum(lengths, 1).astype(jnp.float32) ** length_penalty
    order = jnp.argsort(-scores)
    return tokens[order], totals[order], lengths[order], scores[order]


def beam_text(model, params, tokenizer, prompt: str = "", *, length: int, beam: int, length_penalty: float = 0.0):
    """Text in, text out: the prompt and its best continuation by beam search, and that continuation's
    log-probability. The line end is the end token for word and SentencePiece tokenizers (a character
    model has none: it writes `length` characters)."""
    from rnnlm.errors import UserError
    if beam < 1:
        raise UserError(f"the beam width must be at least 1, got {beam}")
    if beam > tokenizer.vocab_size:
        raise UserError(f"the beam width must not exceed the vocabulary size {tokenizer.vocab_size}, got {beam}")
    if not (math.isfinite(length_penalty) and length_penalty >= 0):
        raise UserError(f"the length penalty must be a number >= 0, got {length_penalty}")
    ids = tokenizer.encode(prompt, strict=True) if prompt else np.zeros(0, np.int32)
    if len(ids) == 0:
        ids = np.array([tokenizer.index.get("\n", tokenizer.index.get("<eos>", 0))], np.int32)
    end = tokenizer.encode("\n")[0] if tokenizer.kind != "char" else -1
    tokens, totals, lengths, _ = beam_search(model, params, jnp.asarray(ids[None]), jnp.float32(length_penalty),
                                             jnp.int32(end), length=length, beam=beam)
    best = np.asarray(tokens[0])[:int(lengths[0])]
    glue = " " if tokenizer.kind == "word" and prompt and not prompt[-1].isspace() else ""
    return prompt + glue + tokenizer.decode(best), float(totals[0])
