"""Word vectors from a trained word-level language model, as a classifier's starting embedding.

The classifiers learn from a few thousand labelled sentences, so most words
are rare in them and many test words never appear (TREC: 9% of test tokens are
not in its train split). A language model run on a large unlabelled corpus
(experiments/wikitext2_vectors.py: WikiText-2) has an embedding row for tens of
thousands of words. With `model.embeddings_from = <that run's workdir>`:

* the classifier's word index (train words by frequency, capped by
  `data.num_words`) is extended with every word of the language model's
  vocabulary it lacks, so a test word seen only by the language model gets its
  own row instead of the out-of-vocabulary one;
* every row whose word the language model knows starts from its vector; the
  out-of-vocabulary row starts from the language model's `<unk>`; the rest
  (padding, train words the language model lacks) keep their random start.

Words are matched as the classifier reads them: lower-cased when
`data.lowercase` is on (then the most frequent cased form in the language
model's vocabulary gives the vector). `model.freeze_embeddings` keeps the
vectors fixed during training (Kim 2014's "static" variant), so the train words
cannot drift away from the words only the test split has.
"""

from __future__ import annotations

import jax
import numpy as np

from rnnlm.data.classification import OOV, PAD, WordIndex
from rnnlm.data.tokenizers import EOS, UNK
from rnnlm.errors import UserError


def language_model_vectors(workdir, embed_size: int, field: str = "model.embeddings_from") -> tuple[list[str], np.ndarray]:
    """(words, [V, E] embedding) of a word-level language-model run's latest checkpoint.

    The latest, not the best-on-valid one: a run's last valid and test lines score its final state, and a run
    stopped by time_budget_minutes saves its last (usually best-trained) state without a valid score.
    """
    variant = ":wide" if embed_size == 300 else ""  # the shipped vector runs: 128 wide, and 300 with :wide
    run = _word_language_model(workdir, field, f"experiments/wikitext2_vectors.py{variant}")
    vectors = np.asarray(run.params["embedding"], np.float32)
    if vectors.shape[1] != embed_size:
        raise UserError(f"{field}: {run.workdir} has {vectors.shape[1]}-wide embeddings but "
                        f"model.embed_size={embed_size}; set model.embed_size={vectors.shape[1]}")
    return list(run.tokenizer.symbols), vectors


def language_model_layer(workdir, field: str, like, cell: str, backward: bool):
    """The first recurrent layer of a word-level language-model run (latest checkpoint), as numpy arrays,
    to start a classifier's layer shaped as `like` (a tree of arrays or shapes) in one direction."""
    run = _word_language_model(workdir, field, "experiments/wikitext2_vectors.py:encoder"
                               + ("_backward" if backward else ""))
    if run.config.model.cell != cell:
        raise UserError(f"{field}: {run.workdir} is a {run.config.model.cell} model, the classifier's cell is {cell}")
    if bool(run.config.data.reverse) != backward:
        raise UserError(f"{field}: {run.workdir} reads text {'backwards' if run.config.data.reverse else 'forwards'}; "
                        f"the {'backward' if backward else 'forward'} direction needs a run with data.reverse={backward}")
    layer = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32), run.params["layer_0"])
    shapes = jax.tree_util.tree_map(np.shape, layer)
    wanted = jax.tree_util.tree_map(np.shape, like)
    if shapes != wanted:
        raise UserError(f"{field}: {run.workdir}'s first layer has shapes {shapes}, the classifier's {wanted}; "
                        f"give the classifier its model.embed_size and first hidden size")
    return layer


def _word_language_model(workdir, field: str, hint: str):
    """A word-level language-model run, loaded at its latest checkpoint, or a one-line error naming `field`."""
    from rnnlm.config import load_config
    from rnnlm.tasks import lm
    from rnnlm.workdir import existing_run
    try:
        workdir = existing_run(workdir)
        config = load_config(workdir / "config.json")
        kind = "a classifier" if config.task != lm.NAME else None
        run = lm.load(workdir, config, "latest") if kind is None else None
    except UserError as e:  # not a run, or one without a checkpoint yet
        raise UserError(f"{field}: {e}; train it first, e.g. rnnlm train --config {hint} --workdir {workdir}") from None
    if kind is None and run.tokenizer.kind != "word":
        kind = f"a {run.tokenizer.kind}-level language model"
    if kind is not None:
        raise UserError(f"{field}: {workdir} is {kind}; it must be a word-level language model run")
    return run


def _lookup(words: list[str], lowercase: bool) -> dict[str, int]:
    """The classifier's form of each language-model word -> its row; the first (most frequent) form wins."""
    table = {}
    for row, word in enumerate(words):
        if word in (UNK, EOS):
            continue
        table.setdefault(word.lower() if lowercase else word, row)
    return table


def extend_word_index(index: WordIndex, words: list[str]) -> WordIndex:
    """`index` plus the language model's words it lacks, appended in the language model's order."""
    known = set(index.symbols)
    extra = [w for w in _lookup(words, index.lowercase) if w not in known]
    return WordIndex(index.symbols + extra, index.classes, index.maxlen, index.lowercase)


def initial_embedding(embedding: np.ndarray, index: WordIndex, words: list[str],
                      vectors: np.ndarray) -> tuple[np.ndarray, int]:
    """`embedding` [rows, E] with the language model's vector on every row it has a word for; (table, rows set)."""
    lookup = _lookup(words, index.lowercase)
    if UNK in words:
        lookup[OOV] = words.index(UNK)
    rows = [(i, lookup[s]) for i, s in enumerate(index.symbols) if s != PAD and s in lookup]
    table = np.array(embedding, np.float32, copy=True)
    if rows:
        mine, theirs = map(np.asarray, zip(*rows))
        table[mine] = vectors[theirs]
    return table, len(rows)
