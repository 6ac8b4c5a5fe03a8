"""Per-token metrics, and per-word perplexity and bits per character: numbers that compare across tokenizers.

A model's perplexity is per *its own* token, so a character model, a word model
and a subword model of the same text report numbers on three different scales.
The total negative log-likelihood of a split does not depend on the tokenizer
(every tokenization spells the same text), so it is divided by units of the
text itself instead:

    word_perplexity = exp(total NLL / words),   words = whitespace words + one <eos> per line - 1
    bits_per_char   = total NLL / (chars * ln 2), chars = code points of the text, newlines included, - 1

The words are counted as the word tokenizer counts its tokens (PTB/WikiText
convention: every line end is an `<eos>` word). The `- 1`: a language model
never predicts the first unit of a split (it has no context), and the streams
score `N - 1` (input, target) pairs; with it, a word model's word_perplexity is
exactly its perplexity and a character model's bits_per_char exactly its own.
For a subword model the first word is partly predicted; that one word is the
only approximation.

They compare only between open-vocabulary models. A word model with a capped
vocabulary predicts `<unk>` for every rare word, a far easier event than
spelling the word out, so its per-word and per-character figures are lower than
an open-vocabulary model's on the same text would be: `unk_share` (targets that
are `<unk>`) is reported with every evaluation, and `describe` says "not
comparable" whenever it is above zero. PTB's files have `<unk>` in the text
itself: a word model predicts it as the text's own word, as a character model
spells it, so it does not count.
"""

from __future__ import annotations

import json
import math
import pathlib

LN2 = math.log(2.0)


def summarize(nll_sum: float, tokens: float, char_level: bool) -> dict:
    """Total NLL (nats) over `tokens` predictions -> loss (nats per token), perplexity, bits per token or char."""
    loss = float(nll_sum) / max(float(tokens), 1.0)
    out = {"loss": loss, "perplexity": math.exp(min(loss, 700.0))}
    out["bits_per_char" if char_level else "bits_per_token"] = loss / LN2
    return out


def text_units(text: str, tokenizer=None) -> dict:
    """{"words", "chars"} of a split, each less the unpredicted first unit (see the module docstring), and
    with a tokenizer "replaced": its tokens that are `<unk>` standing for text it lacks."""
    lines = text.splitlines()
    line_ends = len(lines) - (0 if text.endswith("\n") else 1)  # an unfinished last line has no <eos>
    words = sum(len(line.split()) for line in lines) + max(line_ends, 0)
    units = {"words": max(words - 1, 1), "chars": max(len(text) - 1, 1)}
    if tokenizer is not None:
        from rnnlm.data.tokenizers import replaced_tokens
        units["replaced"] = replaced_tokens(tokenizer, text)
    return units


def per_unit_metrics(nll_sum: float, units: dict) -> dict:
    """Total NLL (nats) of a split -> its per-word perplexity and bits per character."""
    per_word = float(nll_sum) / units["words"]
    return {"word_perplexity": math.exp(min(per_word, 700.0)), "bits_per_char": float(nll_sum) / (units["chars"] * LN2)}


def _units_path(workdir) -> pathlib.Path:
    return pathlib.Path(workdir) / "data" / "units.json"


def split_units(config, workdir, tokenizer=None) -> dict:
    """{split: text_units} of a run's splits: the workdir's data/units.json, else counted from the corpus
    (also when a tokenizer is given and the file, from an older run, lacks "replaced")."""
    from rnnlm.data import text as text_lib
    path = _units_path(workdir)
    if path.exists():
        units = json.loads(path.read_text())
        if tokenizer is None or all("replaced" in u for u in units.values()):
            return units
    texts, _ = text_lib.load_corpus_text(config.data)
    return {split: text_units(texts[split], tokenizer) for split in text_lib.SPLITS}


def write_units(workdir, units: dict) -> None:
    """Cache the units in data/units.json, where the workdir has a data cache and lacks it."""
    from rnnlm.workdir import write_atomically
    path = _units_path(workdir)
    if path.parent.is_dir() and not path.exists():
        write_atomically(path, json.dumps(units).encode())


def with_per_unit_metrics(metrics: dict, num_targets: int, units: dict) -> dict:
    """An evaluator's result ({"loss": mean NLL per target, ...}) with word_perplexity and bits_per_char added.

    num_targets: the targets the evaluator scored, len(ids) - 1.
    """
    return {**metrics, **per_unit_metrics(metrics["loss"] * num_targets, units)}


def describe(metrics: dict, tokenizer_kind: str) -> str:
    """One line for a split's language-model metrics: the model's own units first, then the figures
    that compare across tokenizers (not a character model's per-word perplexity, a number on no one's
    scale), with the `<unk>` caveat when it applies."""
    own = "bits/char" if tokenizer_kind == "char" else "bits/token"
    line = f"loss {metrics['loss']:.4f}, perplexity {metrics['perplexity']:.2f}, {own} {metrics['loss'] / LN2:.4f}"
    if tokenizer_kind != "char" and "word_perplexity" in metrics:
        line += f"; per word: perplexity {metrics['word_perplexity']:.2f}, bits/char {metrics['bits_per_char']:.4f}"
    if metrics.get("unk_share"):
        line += (f"; <unk> is {metrics['unk_share']:.1%} of the targets: not comparable with open-vocabulary "
                 f"models")
    return line
