"""rnnlm/data/classification.py: Keras pad_sequences and word index, labelled lines, registered corpora, batches."""

import numpy as np
import pytest

from rnnlm.config import base_config
from rnnlm.data import classification as data_lib
from rnnlm.data.classification import WordIndex, pad_sequences, padding_mask
from rnnlm.errors import UserError

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


def test_parse_tsv_reads_named_columns_and_refuses_bad_rows():
    text = "id\tsentence\tlabel\r\n7\ta fine film\t1\r\n\r\n8\tdull , dull\t0\r\n"  # CRLF, extra column, any order
    examples = data_lib.parse_tsv(text, "t.tsv")
    assert (examples.labels, examples.texts, examples.where, examples.empty_lines) == (
        ["1", "0"], ["a fine film", "dull , dull"], ["t.tsv:2", "t.tsv:4"], 1)
    renamed = data_lib.parse_tsv("polarity\tcontent\nNUM:x\thow far ?\n", "t.tsv", "polarity", "content", coarse=True)
    assert renamed.labels == ["NUM"] and renamed.texts == ["how far ?"]
    with pytest.raises(UserError, match=r"t.tsv:1: expected a tab-separated header row .* got '1\\ta fine film'"):
        data_lib.parse_tsv("1\ta fine film\n", "t.tsv")
    with pytest.raises(UserError, match=r"t.tsv:3: expected 2 tab-separated fields \(label, sentence\), got 1"):
        data_lib.parse_tsv("label\tsentence\n1\tok\n0 no tab here\n", "t.tsv")
    with pytest.raises(UserError, match="t.tsv:2: empty 'sentence' field"):
        data_lib.parse_tsv("label\tsentence\n1\t  \n", "t.tsv")
    with pytest.raises(UserError, match="holds no labelled row"):
        data_lib.parse_tsv("label\tsentence\n", "t.tsv")


def test_a_folder_of_tsv_files_is_read_by_suffix_and_data_format_overrides(tmp_path):
    for name, rows in (("train.tsv", "0\tbad\n1\tgood\n"), ("dev.tsv", "1\tgreat\n"), ("test.tsv", "0\tawful\n")):
        (tmp_path / name).write_text("label\tsentence\n" + rows)
    config = base_config().data
    config.corpus = str(tmp_path)
    examples = data_lib.read_examples(config)
    assert [examples[s].texts for s in ("train", "valid", "test")] == [["bad", "good"], ["great"], ["awful"]]
    config.format = "lines"  # the header row is then an example labelled 'label'
    assert data_lib.read_examples(config)["train"].labels == ["label\tsentence".split()[0], "0", "1"]


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
    with pytest.raises(UserError, match="train has 3 labels .* the rarest, '2', first at t.tsv:4"):
        data_lib.fit_word_index(data_lib.parse_tsv("label\tsentence\n0\ta\n1\tb\n2\tc\n1\td\n0\te\n", "t.tsv"), config,
                                num_classes=2)


@pytest.mark.parametrize("corpus,sizes,classes", [
    ("sst2", (6920, 872, 1821), ["0", "1"]),
    ("trec", (4907, 545, 500), ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]),  # valid = 10% of train, seed 0
    ("sst2_phrases", (67349, 872, 1821), ["0", "1"]),  # counts from the data README
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
