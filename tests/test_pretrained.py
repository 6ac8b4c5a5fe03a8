"""rnnlm/pretrained.py: word vectors from a language-model run as a classifier's starting embedding."""

import json

import jax
import numpy as np
import pytest

from rnnlm import cli
from rnnlm.config import base_config
from rnnlm.data.classification import WordIndex
from rnnlm.runs import load_run
from rnnlm.pretrained import extend_word_index, initial_embedding
from rnnlm.train import train_and_evaluate

LM_WORDS = ["<unk>", "<eos>", "the", "The", "film", "Superb", "dull", "superb"]


def test_extend_adds_missing_words_once_in_the_language_models_order():
    index = WordIndex(["<pad>", "<oov>", "film", "plot"], ["0", "1"], maxlen=5)
    cased = extend_word_index(index, LM_WORDS)
    assert cased.symbols == ["<pad>", "<oov>", "film", "plot", "the", "The", "Superb", "dull", "superb"]
    lower = extend_word_index(WordIndex(index.symbols, index.classes, 5, lowercase=True), LM_WORDS)
    assert lower.symbols == ["<pad>", "<oov>", "film", "plot", "the", "superb", "dull"]
    assert lower.encode("The SUPERB film")[1] == lower.index["superb"]


def test_rows_come_from_the_language_model_and_the_rest_stay():
    vectors = np.arange(len(LM_WORDS) * 3, dtype=np.float32).reshape(-1, 3)
    index = extend_word_index(WordIndex(["<pad>", "<oov>", "plot", "film"], ["0", "1"], 5, lowercase=True), LM_WORDS)
    start = np.full((index.vocab_size + 2, 3), -1.0, np.float32)  # Keras-style spare rows beyond the index
    table, matched = initial_embedding(start, index, LM_WORDS, vectors)
    np.testing.assert_array_equal(table[index.index["<oov>"]], vectors[0])  # <oov> <- <unk>
    np.testing.assert_array_equal(table[index.index["film"]], vectors[4])
    np.testing.assert_array_equal(table[index.index["the"]], vectors[2])  # the first (most frequent) cased form
    np.testing.assert_array_equal(table[index.index["superb"]], vectors[5])
    for untouched in (0, index.index["plot"], -1, -2):
        np.testing.assert_array_equal(table[untouched], -1.0)
    assert matched == index.vocab_size - 2 and (start == -1).all()  # the input is not modified


# --- end to end -------------------------------------------------------------------------------

TEXT = "the film was superb\nthe film was dull\na superb cast and a dull plot\n" * 40


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrained")
    corpus = root / "reviews.txt"
    corpus.write_text(TEXT)
    config = base_config()
    config.data.corpus, config.data.tokenizer = str(corpus), "word"
    config.model.update(embed_size=8, hidden_size=16, num_layers=1)
    config.train.update(batch_size=2, bptt=8, max_steps=6, log_every=3, checkpoint_every=0)
    config.eval.batch_size, config.sample.length = 2, 0
    train_and_evaluate(config, root / "lm")
    config.data.reverse = True  # the same model reading the text backwards: for a classifier's backward direction
    train_and_evaluate(config, root / "lm_back")
    folder = root / "labelled"
    folder.mkdir()
    (folder / "train.txt").write_text("pos a superb film\nneg a dull film\npos superb\nneg dull plot\n")
    (folder / "valid.txt").write_text("pos superb cast\nneg dull\n")
    (folder / "test.txt").write_text("neg was dull\n")
    return root


def classifier_args(root, workdir, *extra):
    return ["train", "--config", "experiments/sst2_lstm.py:tiny", "--workdir", str(workdir),
            f"--config.data.corpus={root / 'labelled'}", "--config.train.batch_size=2", "--config.eval.batch_size=2",
            "--config.train.max_steps=4", "--config.train.epochs=2", "--config.model.embed_size=8",
            f"--config.model.embeddings_from={root / 'lm'}", *extra]


@pytest.mark.slow
def test_frozen_classifier_keeps_the_language_models_vectors(lm_run, tmp_path, capsys):
    assert cli.main(classifier_args(lm_run, tmp_path / "clf", "--config.model.freeze_embeddings=True")) == 0
    assert "embedding: " in capsys.readouterr().out
    lm, clf = load_run(lm_run / "lm"), load_run(tmp_path / "clf")
    words = clf.tokenizer.symbols
    assert "cast" in words and "was" in words  # language-model words absent from the labelled train split
    table, vectors = np.asarray(clf.params["embedding"]), np.asarray(lm.params["embedding"])
    for word in ("superb", "dull", "cast", "was"):
        np.testing.assert_array_equal(table[clf.tokenizer.index[word]], vectors[lm.tokenizer.index[word]])
    np.testing.assert_array_equal(table[1], vectors[lm.tokenizer.index["<unk>"]])
    data = json.loads((tmp_path / "clf" / "metrics.jsonl").read_text().splitlines()[0])
    assert data["pretrained_rows"] == len([w for w in words if w in lm.tokenizer.index]) + 1  # + <oov>

    # Unfrozen, the same start moves with training.
    assert cli.main(classifier_args(lm_run, tmp_path / "tuned")) == 0
    tuned = load_run(tmp_path / "tuned")
    row = tuned.tokenizer.index["superb"]
    assert not np.array_equal(np.asarray(tuned.params["embedding"])[row], vectors[lm.tokenizer.index["superb"]])


@pytest.mark.slow
def test_unusable_sources_are_one_line_errors_before_anything_is_written(lm_run, tmp_path, capsys):
    assert cli.main(classifier_args(lm_run, tmp_path / "wide", "--config.model.embed_size=16")) == 2
    assert "8-wide embeddings but model.embed_size=16" in capsys.readouterr().err
    assert cli.main(classifier_args(lm_run, tmp_path / "none", f"--config.model.embeddings_from={tmp_path}")) == 2
    err = capsys.readouterr().err
    assert "is not a training run" in err and "experiments/wikitext2_vectors.py --workdir" in err
    # A 300-wide classifier is pointed at the 300-wide vectors' variant.
    assert cli.main(classifier_args(lm_run, tmp_path / "none300", f"--config.model.embeddings_from={tmp_path}",
                                    "--config.model.embed_size=300")) == 2
    assert "experiments/wikitext2_vectors.py:wide --workdir" in capsys.readouterr().err
    assert not any((tmp_path / name).exists() for name in ("wide", "none", "none300"))


@pytest.mark.slow
def test_the_encoder_starts_from_a_forward_and_a_backward_language_model(lm_run, tmp_path, capsys):
    """model.encoder_from / backward_encoder_from: with a negligible learning rate the trained classifier holds
    the two language models' first layers; data.reverse trained the backward one on every split reversed."""
    for split in ("train", "valid", "test"):
        forward, backward = (np.load(lm_run / run / "data" / f"{split}.npy") for run in ("lm", "lm_back"))
        assert len(forward) > 2 and np.array_equal(backward, forward[::-1])
    encoder = [f"--config.model.encoder_from={lm_run / 'lm'}", f"--config.model.backward_encoder_from={lm_run / 'lm_back'}"]
    assert cli.main(classifier_args(lm_run, tmp_path / "clf", *encoder, "--config.train.learning_rate=1e-12")) == 0
    out = capsys.readouterr().out
    assert f"backward_layer_0 from {lm_run / 'lm_back'}, layer_0 from {lm_run / 'lm'}" in out
    clf, lm, back = (load_run(w) for w in (tmp_path / "clf", lm_run / "lm", lm_run / "lm_back"))
    for name, source in (("layer_0", lm), ("backward_layer_0", back)):
        for mine, theirs in zip(*(jax.tree_util.tree_leaves(p) for p in (clf.params[name], source.params["layer_0"]))):
            np.testing.assert_allclose(np.asarray(mine), np.asarray(theirs), rtol=0, atol=1e-9)
    assert not np.array_equal(np.asarray(lm.params["layer_0"]["w_h"]), np.asarray(back.params["layer_0"]["w_h"]))
    data = json.loads((tmp_path / "clf" / "metrics.jsonl").read_text().splitlines()[0])
    assert data["pretrained_layers"] == 2
    assert cli.main(["generate", "--workdir", str(lm_run / "lm_back"), "--length", "3"]) == 2
    assert "reads text backwards (data.reverse)" in capsys.readouterr().err

    backwards = lm_run / "lm_back"
    bad = {"swapped": ([f"--config.model.encoder_from={backwards}", f"--config.model.embeddings_from={backwards}"],
                       "reads text backwards"),
           "narrow": (encoder + ["--config.model.hidden_size=12"], "first layer has shapes"),
           "one_way": (encoder + ["--config.model.bidirectional=False"], "needs model.bidirectional=True"),
           "two_sources": (encoder + [f"--config.model.embeddings_from={lm_run / 'lm_back'}"],
                           "leave model.embeddings_from empty")}
    for name, (extra, message) in bad.items():
        assert cli.main(classifier_args(lm_run, tmp_path / name, *extra)) == 2, name
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, (name, err)
        assert not (tmp_path / name).exists()
