"""rnnlm/metrics.py: per-token metrics and the per-word and per-character conversions."""

import math

import numpy as np
import pytest

from rnnlm.data.tokenizers import CharTokenizer, WordTokenizer
from rnnlm.metrics import LN2, describe, per_unit_metrics, summarize, text_units, with_per_unit_metrics

TEXT = ("the cat sat on the mat .\nthe dog sat on the log .\n a cat and a dog met on a mat \n\n"
        "café naïve — über\n") * 20


def test_per_word_conversion_on_a_hand_computed_case():
    text = "a b\nc\n"  # words a b <eos> c <eos> = 5, less the unpredicted first = 4; 6 chars - 1 = 5
    assert text_units(text) == {"words": 4, "chars": 5}
    metrics = per_unit_metrics(4 * math.log(10.0), text_units(text))  # total NLL: 10 equally likely choices per word
    assert metrics["word_perplexity"] == pytest.approx(10.0)
    assert metrics["bits_per_char"] == pytest.approx(4 * math.log2(10.0) / 5)
    assert text_units("a b\nc") == {"words": 3, "chars": 4}  # an unfinished last line has no <eos>


@pytest.mark.parametrize("tokenizer_class", [WordTokenizer, CharTokenizer])
def test_per_word_metrics_agree_with_the_native_ones(tokenizer_class):
    """A word model's per-word perplexity is its perplexity; a character model's bits/char its own."""
    ids = tokenizer_class.fit(TEXT).encode(TEXT)
    nll_sum = 0.37 * (len(ids) - 1)
    native = summarize(nll_sum, len(ids) - 1, char_level=tokenizer_class is CharTokenizer)
    converted = with_per_unit_metrics(native, len(ids) - 1, text_units(TEXT))
    if tokenizer_class is WordTokenizer:
        assert converted["word_perplexity"] == pytest.approx(native["perplexity"], rel=1e-12)
    else:
        assert converted["bits_per_char"] == pytest.approx(native["bits_per_char"], rel=1e-12)




def test_summarize_by_hand():
    m = summarize(nll_sum=6.0, tokens=3, char_level=True)
    assert m == {"loss": 2.0, "perplexity": pytest.approx(math.exp(2.0)), "bits_per_char": pytest.approx(2.0 / LN2)}
    assert "bits_per_token" in summarize(1.0, 1, char_level=False)
    assert summarize(1e6, 1, char_level=False)["perplexity"] == math.exp(700.0)  # capped, not an overflow


def test_the_line_names_each_models_own_units_and_flags_unk():
    char = {"loss": 1.0, "perplexity": math.e, "bits_per_char": 1 / math.log(2), "word_perplexity": 246339.94}
    line = describe(char, "char")
    assert line.count("bits/char") == 1 and "per word" not in line and "246339" not in line
    word = {"loss": 4.0, "perplexity": math.exp(4), "word_perplexity": math.exp(4), "bits_per_char": 1.3994}
    assert describe(word, "word").endswith("per word: perplexity 54.60, bits/char 1.3994")
    flagged = describe({**word, "unk_share": 0.148}, "word")
    assert "<unk> is 14.8% of the targets: not comparable with open-vocabulary models" in flagged


def test_the_unk_share_counts_words_the_vocabulary_lacks_not_literal_unk():
    from rnnlm.tasks.lm import score_split
    word = WordTokenizer.fit("the cat sat <unk> the mat .\n", max_size=6)  # <unk>, <eos> and 4 words
    text = "the cat sat <unk> on a mat .\n"  # 'on', 'a' and one of the fitted words are not in it
    kept = set(word.symbols)
    expected = sum(w not in kept for w in text.split())
    units = text_units(text, word)
    assert units["replaced"] == expected and "<unk>" in kept  # the literal <unk> is PTB's own word
    ids = word.encode(text)
    fake_evaluator = lambda params, ids, char_level: summarize(len(ids) - 1.0, len(ids) - 1, char_level)
    assert score_split(fake_evaluator, None, ids, False, units)["unk_share"] == pytest.approx(expected / len(ids))
    char = CharTokenizer.fit("abc")
    assert text_units("abcxy<unk>", char)["replaced"] == 7  # x, y and the five characters of '<unk>'
    assert "unk_share" not in score_split(fake_evaluator, None, ids, False, text_units(text))
