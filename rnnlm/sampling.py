"""Text generation: prime the carry with a prompt, then sample inside one jitted `lax.scan`.

Decoding rules, applied in this order to the logits of each step:
  temperature 0 -> greedy (argmax); otherwise logits / temperature,
  top_k > 0     -> keep the k largest logits,
  top_p < 1     -> keep the smallest set of tokens whose probability reaches p (nucleus),
then draw from the renormalised distribution. `temperature` and `top_p` are
traced arguments (changing them does not recompile); `length` and `top_k` are static.
"""

from __future__ import annotations

import functools

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


@functools.partial(jax.jit, static_argnames=("model", "length", "top_k"))
def generate(model, params, prompt, rng, temperature, top_p, *, length: int, top_k: int = 0):
    """prompt [B, P] int32 (P >= 1) -> sampled continuation [B, length].

    The prompt's first P-1 tokens are read in one scan to build the carry; the
    last one is the first input of the sampling scan.
    """
    variables = {"params": params}
    carry = model.initial_carry(prompt.shape[0])
    if prompt.shape[1] > 1:
        _, carry = model.apply(variables, prompt[:, :-1], carry)

    def body(state, key):
        carry, token = state
        logits, carry = model.apply(variables, token[:, None], carry)
        token = choose(key, logits[:, 0], temperature, top_k, top_p)
        return (carry, token), token

    _, tokens = jax.lax.scan(body, (carry, prompt[:, -1]), jax.random.split(rng, length))
    return tokens.T


def sample_text(model, params, tokenizer, prompt: str = "", *, length: int, temperature: float = 1.0,
                top_k: int = 0, top_p: float = 1.0, seed: int = 0, num_samples: int = 1) -> list[str]:
    """Text in, text out: the prompt followed by `length` sampled tokens, `num_samples` times."""
    from rnnlm.errors import UserError
    if not 0 <= top_k <= tokenizer.vocab_size:
        raise UserError(f"top-k must be between 0 and the vocabulary size {tokenizer.vocab_size}, got {top_k}")
    if not 0 < top_p <= 1:
        raise UserError(f"top-p must be in (0, 1], got {top_p}")
    if temperature < 0:
        raise UserError(f"temperature must be >= 0, got {temperature}")
    ids = tokenizer.encode(prompt, strict=True) if prompt else np.zeros(0, np.int32)
    if len(ids) == 0:  # begin as at the start of a line
        ids = np.array([tokenizer.index.get("\n", tokenizer.index.get("<eos>", 0))], np.int32)
    tokens = generate(model, params, jnp.asarray(np.tile(ids, (num_samples, 1))), jax.random.PRNGKey(seed),
                      jnp.float32(temperature), jnp.float32(top_p), length=length, top_k=top_k)
    return [prompt + tokenizer.decode(row) for row in np.asarray(tokens)]
