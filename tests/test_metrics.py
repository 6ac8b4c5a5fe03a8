"""rnnlm/metrics.py: per-token metrics and the per-word and per-character conversions."""

import math

import pytest

from rnnlm.data.tokenizers import CharTokenizer, WordTokenizer
from rnnlm.metrics import LN2, per_unit_metrics, summarize, text_units, with_per_unit_metrics

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
