"""Scoring your own text: every token's log-probability under a saved language model, summed per line.

Two readings of a text of lines (`score_lines`):
  * each line alone (the default): from the zero state, after reading one line break, so its first
    token is scored too and its last target is the line end (`<eos>`, "\\n", `</s>`): the probability of
    the sentence as a line of its own;
  * carried (`carry=True`): the text as one stream with the state flowing across lines, as `rnnlm eval`
    scores a split with one stream: the first token is context only, every later token is scored once
    and counted in the line it belongs to, and the totals are eval's (tested).

Windows of at most WINDOW tokens, lines batched LINES at a time, lengths rounded up to multiples of
ROUND: a few compiled shapes whatever the text.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from rnnlm.errors import UserError

WINDOW, LINES, ROUND = 128, 16, 32
LN2 = math.log(2.0)


@functools.partial(jax.jit, static_argnames="model")
def window_log_probs(model, params, tokens, targets, carry):
    """(carry, log p(target) [B, T]) of one window read from `carry`."""
    logits, carry = model.apply({"params": params}, tokens, carry)
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return carry, jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]


def stream_log_probs(model, params, tokens: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """log p of every target of [B, L] streams read from the zero state, in windows of at most WINDOW."""
    rows, length = tokens.shape
    window = min(WINDOW, _round_up(length))
    padded = _round_up(length, window)
    tokens, targets = (np.pad(a, ((0, 0), (0, padded - length))) for a in (tokens, targets))
    carry, out = model.initial_carry(rows), []
    for start in range(0, padded, window):
        carry, logp = window_log_probs(model, params, jnp.asarray(tokens[:, start:start + window]),
                                       jnp.asarray(targets[:, start:start + window]), carry)
        out.append(np.asarray(logp))
    return np.concatenate(out, axis=1)[:, :length]


def line_break(tokenizer) -> int:
    ids = tokenizer.encode("\n")
    if len(ids) != 1:
        raise UserError(f"the {tokenizer.kind} tokenizer has no single line-break token to start a line from")
    return int(ids[0])


def score_lines(model, params, tokenizer, lines: list[str], *, carry: bool = False,
                per_token: bool = False) -> list[dict]:
    """One record per line: {"line", "text", "log_prob" (natural log), "tokens", "perplexity",
    "bits_per_token"} and, with per_token, "surprisal": [[token, bits], ...]."""
    encoded = [tokenizer.encode(line + "\n") for line in lines]
    if carry:
        ids = np.concatenate(encoded) if encoded else np.zeros(0, np.int32)
        if len(ids) < 2:
            raise UserError("nothing to score: the text has fewer than two tokens")
        logp = stream_log_probs(model, params, ids[None, :-1], ids[None, 1:])[0]
        owner = np.repeat(np.arange(len(lines)), [len(e) for e in encoded])[1:]  # the line of each target
        per_line = [(ids[1:][owner == i], logp[owner == i]) for i in range(len(lines))]
    else:
        start = line_break(tokenizer)
        per_line = [None] * len(lines)
        order = np.argsort([len(e) for e in encoded], kind="stable")  # similar lengths share a batch
        for group in (order[i:i + LINES] for i in range(0, len(order), LINES)):
            length = _round_up(max(len(encoded[i]) for i in group))
            tokens = np.zeros((LINES, length), np.int32)
            targets = np.zeros((LINES, length), np.int32)
            for row, i in enumerate(group):
                ids = encoded[i]
                tokens[row, 0], tokens[row, 1:len(ids)] = start, ids[:-1]
                targets[row, :len(ids)] = ids
            logp = stream_log_probs(model, params, tokens, targets)
            for row, i in enumerate(group):
                per_line[i] = (encoded[i], logp[row, :len(encoded[i])])
    records = []
    for index, (text, (ids, logp)) in enumerate(zip(lines, per_line)):
        total, count = float(np.sum(logp, dtype=np.float64)), len(ids)
        record = {"line": index, "text": text, "log_prob": total, "tokens": count,
                  "perplexity": math.exp(-total / count) if count else None,
                  "bits_per_token": -total / count / LN2 if count else None}
        if per_token:
            record["surprisal"] = [[token_name(tokenizer, int(i)), float(-p / LN2)] for i, p in zip(ids, logp)]
        records.append(record)
    return records


def token_name(tokenizer, token: int) -> str:
    """A token as the tokenizer's vocabulary writes it (a word, `<eos>`, a character, a piece)."""
    if tokenizer.kind == "word":
        return tokenizer.symbols[token]
    return tokenizer.decode([token])


def _round_up(n: int, to: int = ROUND) -> int:
    return max(to, -(-n // to) * to)
