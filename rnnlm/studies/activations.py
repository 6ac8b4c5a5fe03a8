"""What a trained run computes over a text: hidden states, gates, surprisal; units that track a feature.

In the spirit of Karpathy, Johnson & Fei-Fei (2015), "Visualizing and Understanding
Recurrent Networks": `trace` runs the model over one text (batch 1) and keeps, per
layer and per token, the hidden state h, the LSTM cell state c and the gate
activations (LSTM input/forget/output; GRU reset/update), plus the surprisal of
every token, -log2 p(token | what came before), in bits.

`text_features` computes per-character features (inside double quotes, position in
the line, bracket depth), each the value *after* reading the character, as h_t is;
`unit_correlations` ranks every unit of every layer by |Pearson r| with a feature.

    rnnlm units --workdir runs/shakespeare_char --feature line_position --top 5
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from rnnlm.errors import UserError
from rnnlm.metrics import LN2
from rnnlm.recurrence import Probe

FEATURES = ("inside_quotes", "line_position", "bracket_depth")


@dataclasses.dataclass
class Trace:
    tokens: list[str]  # the text of each token
    surprisal: np.ndarray  # [T] bits; NaN for the first token, which nothing predicts
    layers: list[dict[str, np.ndarray]]  # per layer: "h", maybe "c", gate names -> [T, H]

    def series(self, layer: int, state: str) -> np.ndarray:
        if not -len(self.layers) <= layer < len(self.layers):
            raise UserError(f"layer {layer} does not exist; the model has {len(self.layers)} layer(s)")
        states = self.layers[layer]
        if state not in states:
            raise UserError(f"no {state!r} in this model's layers; choose one of {', '.join(states)}")
        return states[state]


def trace(model, params, ids, tokenizer=None) -> Trace:
    """Run `model` over the token ids [T] from a zero state; see `Trace`."""
    ids = np.asarray(ids, np.int32)
    if ids.ndim != 1 or len(ids) < 2:
        raise UserError("the text must hold at least two tokens")
    surprisal, layers = jax.device_get(_trace(model, params, jnp.asarray(ids)))
    tokens = [tokenizer.decode([i]) for i in ids.tolist()] if tokenizer is not None else [str(i) for i in ids]
    return Trace(tokens, np.asarray(surprisal), [{k: np.asarray(v) for k, v in l.items()} for l in layers])


@functools.partial(jax.jit, static_argnums=0)  # a Linen module is a hashable dataclass
def _trace(model, params, ids):
    # The model's own stack, every layer recording its steps' carries and gates.
    features, _, recorded = model.apply({"params": params}, ids[None], model.initial_carry(1),
                                        probe=Probe(record=True), method=model.features)
    logits = model.apply({"params": params}, features[0], method=model.decode)
    logp = jax.nn.log_softmax(logits.astype(jnp.float32))
    surprisal = -jnp.take_along_axis(logp[:-1], ids[1:, None], axis=-1)[:, 0] / LN2
    return jnp.concatenate([jnp.full((1,), jnp.nan), surprisal]), [{k: v[:, 0] for k, v in r.items()} for r in recorded]


def text_features(text: str) -> dict[str, np.ndarray]:
    """Per-character features, each the value after reading the character.

    inside_quotes: 1 between an opening `"` and its closing `"` (the opening one included);
    line_position: characters read since the last line break (0 at the break itself);
    bracket_depth: open minus closed ( [ { so far, never below 0.
    """
    quotes, lines, depths = [], [], []
    inside, column, depth = 0, 0, 0
    for char in text:
        if char == '"':
            inside = 1 - inside
        column = 0 if char == "\n" else column + 1
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth = max(depth - 1, 0)
        quotes.append(inside)
        lines.append(column)
        depths.append(depth)
    return {"inside_quotes": np.array(quotes, np.float32), "line_position": np.array(lines, np.float32),
            "bracket_depth": np.array(depths, np.float32)}


def correlations(states: np.ndarray, feature: np.ndarray) -> np.ndarray:
    """Pearson r between each column of states [T, N] and feature [T]; 0 where either is constant."""
    x = states - states.mean(axis=0)
    y = feature - feature.mean()
    denominator = np.sqrt((x ** 2).sum(axis=0) * (y ** 2).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (x * y[:, None]).sum(axis=0) / denominator
    return np.where(denominator > 0, r, 0.0)


def unit_correlations(result: Trace, feature: np.ndarray, top: int) -> list[dict]:
    """The `top` units (over every layer, h and c) with the largest |r| with the feature."""
    found = []
    for layer, states in enumerate(result.layers):
        for state in ("h", "c"):
            if state in states:
                r = correlations(states[state].astype(np.float64), feature.astype(np.float64))
                found += [{"layer": layer, "state": state, "unit": int(u), "r": float(r[u])}
                          for u in range(len(r))]
    return sorted(found, key=lambda f: -abs(f["r"]))[:top]


def text_and_ids(run, text: str | None, max_chars: int) -> tuple[str, np.ndarray]:
    """(text, ids) to trace: the given text (strictly encoded) or the start of the valid split."""
    if text is None:
        from rnnlm.workdir import prepare_data
        _, ids = prepare_data(run.config, run.workdir)
        ids = ids["valid"][:max_chars]
        return run.tokenizer.decode(ids), ids
    if not text:
        raise UserError("the text is empty")
    ids = run.tokenizer.encode(text, strict=True)
    return text, ids[:max_chars]
