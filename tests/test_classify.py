"""The text classifier: Keras pad_sequences and word index, padding invariance, data files, the CLI end to end."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnlm import cli
from rnnlm.cells import CELLS
from rnnlm.config import base_config
from rnnlm.data import classification as data_lib
from rnnlm.data.classification import WordIndex, pad_sequences, padding_mask
from rnnlm.errors import UserError
from rnnlm.models import Classifier

SEQS = [[1, 2, 3], [4, 5], [6, 7, 8, 9, 10], []]


# --- pad_sequences: hand-written Keras results ----------------------------------------

@pytest.mark.parametrize("padding,truncating,expected", [
    ("pre", "pre", [[0, 1, 2, 3], [0, 0, 4, 5], [7, 8, 9, 10], [0, 0, 0, 0]]),
    ("post", "post", [[1, 2, 3, 0], [4, 5, 0, 0], [6, 7, 8, 9], [0, 0, 0, 0]]),
    ("pre", "post", [[0, 1, 2, 3], [0, 0, 4, 5], [6, 7, 8, 9], [0, 0, 0, 0]]),
    ("post", "pre", [[1, 2, 3, 0], [4, 5, 0, 0], [7, 8, 9, 10], [0, 0, 0, 0]]),
])
def test_pad_sequences_matches_keras(padding, truncating, expected):
    out = pad_sequences(SEQS, maxlen=4, padding=padding, truncating=truncating)
    assert out.dtype == np.int32 and out.tolist() == expected
    lengths = [min(len(s), 4) for s in SEQS]
    np.testing.assert_array_equal(padding_mask(lengths, 4, padding), out != 0)  # no id 0 in SEQS


def test_pad_sequences_defaults_and_errors():
    # Keras's defaults: maxlen = the longest, padding and truncating 'pre', value 0.
    assert pad_sequences([[1], [2, 3]]).tolist() == [[0, 1], [2, 3]]
    assert pad_sequences([[1], [2, 3, 4]], maxlen=2, value=-1).tolist() == [[-1, 1], [3, 4]]
    with pytest.raises(ValueError, match="padding type"):
        pad_sequences(SEQS, padding="middle")
    with pytest.raises(ValueError, match="truncating type"):
        pad_sequences(SEQS, truncating="middle")


def test_word_index_is_keras_tokenizer_with_oov():
    # Keras: Tokenizer(num_words=5, oov_token="<OOV>").fit_on_texts(texts) gives
    # {"<OOV>": 1, "the": 2, "sat": 3, "cat": 4, "dog": 5, "down": 6} (ties keep first appearance)
    # and texts_to_sequences maps ids >= num_words to the OOV id.
    texts = ["the cat sat", "the dog sat down"]
    full = WordIndex.fit(texts, ["0", "1"], maxlen=4)
    assert full.symbols == ["<pad>", "<oov>", "the", "sat", "cat", "dog", "down"]
    capped = WordIndex.fit(texts, ["0", "1"], maxlen=4, num_words=5)
    assert capped.vocab_size == 5
    assert capped.encode("the dog sat on it").tolist() == [2, 1, 3, 1, 1]
    assert WordIndex.fit(["The THE the"], ["0", "1"], 3, lowercase=True).encode("tHe").tolist() == [2]


# --- the padding invariance of the masked model --------------------------------------------

POOLING = ("last", "mean", "max")
MODELS = [(cell, bidirectional, POOLING[(i + bidirectional) % 3], 9 + 2 * i + bidirectional)
          for i, cell in enumerate(CELLS) for bidirectional in (False, True)]  # each pooling both ways


@pytest.mark.parametrize("cell,bidirectional,pooling,width", MODELS)
def test_logits_do_not_depend_on_padding(cell, bidirectional, pooling, width):
    model = Classifier(vocab_size=20, num_classes=3, embed_size=6, hidden_size=5, num_layers=2, cell=cell,
                       bidirectional=bidirectional, pooling=pooling)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 1), jnp.int32))["params"]
    sentence = [3, 4, 5, 6]
    # The same sentence pre- and post-padded (width - 4 padding steps; the width differs from
    # case to case), beside neighbours of other lengths padded either way.
    rows = [sentence, [7, 8, 9, 10, 11, 12, 13, 14, 15], sentence, [2], [16, 17, 18, 19, 2, 3]]
    sides = ["pre", "post", "post", "pre", "post"]
    tokens = np.stack([pad_sequences([r], width, side)[0] for r, side in zip(rows, sides)])
    mask = np.stack([padding_mask([len(r)], width, side)[0] for r, side in zip(rows, sides)])

    check_unmasked = cell == "lstm"  # once each way is enough; the suite's time is mostly compiling

    @jax.jit  # one compilation for all the applications
    def run(params):
        apply = lambda t, m: model.apply({"params": params}, t, m)
        return (apply(jnp.array([sentence]), jnp.ones((1, 4), bool))[0], apply(tokens, mask),
                apply(tokens, None) if check_unmasked else None)

    alone, logits, unmasked = run(params)
    np.testing.assert_allclose(logits[0], alone, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(logits[2], alone, rtol=1e-5, atol=1e-6)
    # Without the mask, padding is read like any token, and the logits move.
    assert not check_unmasked or not (np.allclose(unmasked[0], alone, rtol=1e-4, atol=1e-5)
                and np.allclose(unmasked[2], alone, rtol=1e-4, atol=1e-5))


# --- data files --------------------------------------------------------------------------

def test_parse_lines_labels_and_bad_lines():
    examples = data_lib.parse_lines("1 good film\n\n0 bad one\n   \n", "f.txt")
    assert examples.labels == ["1", "0"] and examples.texts == ["good film", "bad one"]
    assert examples.empty_lines == 2 and examples.where == ["f.txt:1", "f.txt:3"]
    assert data_lib.parse_lines("NUM:dist How far ?", "t", coarse=True).labels == ["NUM"]
    with pytest.raises(UserError, match=r"f.txt:2: expected 'LABEL sentence', got only 'lonely'"):
        data_lib.parse_lines("1 fine\nlonely\n", "f.txt")
    with pytest.raises(UserError, match="expected a 'COARSE:fine' label"):
        data_lib.parse_lines("NUM How far ?", "t", coarse=True)
    with pytest.raises(UserError, match="holds no labelled line"):
        data_lib.parse_lines("\n\n", "t")
    assert data_lib.sorted_classes(["10", "2", "1", "2"]) == ["1", "2", "10"]


def test_unknown_labels_and_truncation_are_reported():
    index = WordIndex.fit(["a b c"], ["0", "1"], maxlen=2)
    examples = data_lib.parse_lines("0 a b c\n1 a\n", "v.txt")
    encoded = data_lib.encode_split(examples, index, "post", "valid")
    assert encoded.truncated == 1 and [s.tolist() for s in encoded.sequences] == [[2, 3], [2]]
    with pytest.raises(UserError, match=r"v.txt:2: label '7' is not one of the classes seen in train \(0, 1\)"):
        data_lib.encode_split(data_lib.parse_lines("0 a\n7 b\n", "v.txt"), index, "pre", "valid")
    config = base_config().data
    with pytest.raises(UserError, match="train has 3 labels .* but model.num_classes=2; the rarest, 'x'"):
        data_lib.fit_word_index(data_lib.parse_lines("0 a\n1 b\n0 c\n1 d\nx oops\n", "t"), config, num_classes=2)


@pytest.mark.parametrize("corpus,sizes,classes", [
    ("sst2", (6920, 872, 1821), ["0", "1"]),
    ("trec", (4907, 545, 500), ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]),  # valid = 10% of train, seed 0
])
def test_registered_corpora(corpus, sizes, classes):
    config = base_config().data
    config.update(corpus=corpus, coarse_labels=corpus == "trec")
    examples = data_lib.read_examples(config)
    assert tuple(len(examples[s].labels) for s in ("train", "valid", "test")) == sizes
    assert data_lib.sorted_classes(examples["train"].labels) == classes
    if corpus == "trec":
        assert not set(examples["train"].where) & set(examples["valid"].where)
        assert data_lib.read_examples(config)["valid"].where == examples["valid"].where  # fixed seed


def test_bucketed_batches_cover_every_example_with_less_padding():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 50, size=203)
    plain = data_lib.batch_order(lengths, 16, np.random.default_rng(1), bucket=False)
    bucketed = data_lib.batch_order(lengths, 16, np.random.default_rng(1), bucket=True)
    for order in (plain, bucketed):
        assert sorted(np.concatenate(order).tolist()) == list(range(203))
    padding = lambda order: sum(16 * lengths[b].max() - lengths[b].sum() for b in order)
    assert padding(bucketed) < padding(plain) / 3
    split = data_lib.EncodedSplit([np.ones(n, np.int32) + 1 for n in lengths], np.zeros(203, np.int32), 0, 0)
    batch = data_lib.make_batch(split, bucketed[0], 16, 64, "post", bucket=True)
    assert batch["tokens"].shape[1] % 8 == 0 and batch["tokens"].shape[1] >= lengths[bucketed[0]].max()
    last = data_lib.make_batch(split, plain[-1], 16, 64, "pre", bucket=False)  # 203 = 12 * 16 + 11
    assert last["tokens"].shape == (16, 64) and last["weights"].tolist() == [1.0] * 11 + [0.0] * 5
    np.testing.assert_array_equal(last["mask"].sum(axis=1)[:11], lengths[plain[-1]])


# --- the CLI end to end --------------------------------------------------------------------

@pytest.fixture(scope="module")
def seed_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("seed") / "run"
    assert cli.main(["train", "--config", "experiments/seed_classifier.py", "--workdir", str(workdir)]) == 0
    return workdir


def test_seed_classifier_reaches_full_train_accuracy(seed_run, capsys):
    records = [json.loads(line) for line in (seed_run / "metrics.jsonl").read_text().splitlines()]
    valid = [r for r in records if r["split"] == "valid"]  # valid = train = the three sentences
    assert len(valid) == 10 and valid[-1]["accuracy"] == 1.0
    train = [r for r in records if r["split"] == "train"]
    assert train[-1]["loss"] < train[0]["loss"]
    capsys.readouterr()
    assert cli.main(["eval", "--workdir", str(seed_run), "--split", "train"]) == 0
    out = capsys.readouterr().out
    assert "train: accuracy 100.00% of 3" in out and "confusion matrix" in out
    assert cli.main(["predict", "--workdir", str(seed_run), "a dull and boring film , i hated it", "x " * 12]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("1\t") and "(truncated to 10 words)" in lines[1]
    probabilities = [float(p.split("=")[1]) for p in lines[0].split("\t")[1].split()]
    assert len(probabilities) == 3 and abs(sum(probabilities) - 1) < 2e-3


def test_resume_and_counted_bad_lines(tmp_path, capsys):
    """A user folder with empty lines and an over-long sentence: counted and logged; the run resumes."""
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "train.txt").write_text("pos a good film\n\nneg a bad film\npos " + "very " * 30 + "good\n")
    (folder / "valid.txt").write_text("pos good\nneg bad\n")
    (folder / "test.txt").write_text("neg bad bad\n")
    args = ["train", "--config", "experiments/sst2_lstm.py:tiny", "--workdir", str(tmp_path / "run"),
            f"--config.data.corpus={folder}", "--config.data.maxlen=8", "--config.train.batch_size=2",
            "--config.data.bucket_by_length=False", "--config.model.bidirectional=False",
            "--config.train.max_steps=4", "--config.train.epochs=3", "--config.eval.batch_size=2"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "train: 1 sentence(s) truncated to maxlen=8 (post), 1 empty line(s) skipped" in out
    data = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert data["split"] == "data" and data["train_truncated"] == 1 and data["train_empty_lines"] == 1
    assert cli.main(args[:-3] + ["--config.train.max_steps=6", "--config.train.epochs=3",
                                 "--config.eval.batch_size=2"]) == 0
    assert "resumed from step 4 (epoch 3, batch 0)" in capsys.readouterr().out
