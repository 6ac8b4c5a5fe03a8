"""rnnlm/data/tokenizers.py: character and word tokenizers, and SentencePiece (round trip, determinism,
the saved .model), end to end through the CLI."""

import ml_collections
import numpy as np
import pytest

from rnnlm import cli
from rnnlm.config import base_config
from rnnlm.data.text import load_corpus_text
from rnnlm.data.tokenizers import CharTokenizer, SentencePieceTokenizer, WordTokenizer, load_tokenizer, save_tokenizer
from rnnlm.errors import UserError
from rnnlm.workdir import load_data, save_data

TEXT = ("the cat sat on the mat .\nthe dog sat on the log .\n a cat and a dog met on a mat \n\n"
        "café naïve — über\n") * 20
VOCAB = {"bpe": 60, "unigram": 28}  # unigram tops out lower on this small text


def data_config(**overrides) -> ml_collections.ConfigDict:
    config = base_config().data
    config.update(overrides)
    return config


def test_char_tokenizer_round_trip_and_unknowns(tmp_path):
    tok = CharTokenizer.fit("hello world\nÄpfel ✓")
    text = "world ✓\nhello"
    assert tok.decode(tok.encode(text)) == text
    assert tok.encode("hq").tolist() == [tok.index["h"], 0]  # unseen -> <unk>
    with pytest.raises(UserError, match="not in the vocabulary: 'q'"):
        tok.encode("hq", strict=True)
    save_tokenizer(tok, tmp_path / "t.json")
    again = load_tokenizer(tmp_path / "t.json")
    assert again.symbols == tok.symbols and again.encode(text).tolist() == tok.encode(text).tolist()


def test_word_tokenizer_eos_unk_and_round_trip(tmp_path):
    tok = WordTokenizer.fit("a b a\nc a b\n", max_size=4)
    assert tok.symbols == ["<unk>", "<eos>", "a", "b"]  # by frequency, c cut by max_size
    ids = tok.encode("a c\nb\n")
    assert [tok.symbols[i] for i in ids] == ["a", "<unk>", "<eos>", "b", "<eos>"]
    assert tok.decode(tok.encode("a b\nb a\n")) == "a b \nb a \n"
    save_tokenizer(tok, tmp_path / "w.json")
    assert load_tokenizer(tmp_path / "w.json").symbols == tok.symbols


@pytest.fixture(scope="module")
def ptb_texts():
    texts, kind = load_corpus_text(data_config(corpus="ptb"))
    assert kind == "word"
    return texts


def test_ptb_word_vocabulary_and_token_counts(ptb_texts):
    tok = WordTokenizer.fit(ptb_texts["train"])
    assert tok.vocab_size == 10_000  # 9,999 word types incl. <unk> + <eos>, the standard PTB vocabulary
    # Published counts (shared/data/README.md): words + one <eos> per line.
    assert len(tok.encode(ptb_texts["train"])) == 929_589
    assert len(tok.encode(ptb_texts["valid"])) == 73_760
    assert len(tok.encode(ptb_texts["test"])) == 82_430


@pytest.fixture(scope="module", params=["bpe", "unigram"])
def tokenizer(request):
    return SentencePieceTokenizer.fit(TEXT, spm_vocab_size=VOCAB[request.param], spm_model_type=request.param)


def test_round_trip_keeps_every_character(tokenizer):
    for text in (TEXT, "  the   cat  \n\n met a dog", "tac mat\n"):  # spaces, empty lines, no final newline
        ids = tokenizer.encode(text)
        assert ids.dtype == np.int32 and tokenizer.decode(ids) == text
    ids = tokenizer.encode("a\nb\n").tolist()
    assert ids.count(tokenizer.eos) == 2 and ids[-1] == tokenizer.eos  # one </s> per line end
    assert tokenizer.eos not in tokenizer.encode("no newline").tolist()


@pytest.mark.parametrize("model_type", ["bpe", "unigram"])
def test_training_is_deterministic(model_type):
    first, second = (SentencePieceTokenizer.fit(TEXT, spm_vocab_size=VOCAB[model_type], spm_model_type=model_type)
                     for _ in range(2))
    assert first.model_proto == second.model_proto and first.vocab_size == VOCAB[model_type]
    np.testing.assert_array_equal(first.encode(TEXT), second.encode(TEXT))


def test_unknown_characters_and_bad_settings(tokenizer):
    assert (tokenizer.encode("☃") == tokenizer.unk).any()
    with pytest.raises(UserError, match="not in the SentencePiece vocabulary: '☃'"):
        tokenizer.encode("the ☃", strict=True)
    with pytest.raises(UserError, match=r"SentencePiece training failed: Vocabulary size (is )?too high \(5000\)"):
        SentencePieceTokenizer.fit("tiny text\n", spm_vocab_size=5000)


def test_model_file_saved_reused_and_checked(tmp_path):
    config = base_config()
    config.data.update(corpus=str(tmp_path / "corpus.txt"), tokenizer="sentencepiece", spm_vocab_size=60)
    (tmp_path / "corpus.txt").write_text(TEXT * 3)
    run = tmp_path / "run"
    run.mkdir()
    tokenizer, ids, cached = load_data(config, run)
    assert not cached and tokenizer.kind == "sentencepiece"
    save_data(run, tokenizer, ids)
    assert (run / "tokenizer.model").read_bytes() == tokenizer.model_proto  # the sentencepiece tools' .model
    again = load_tokenizer(run / "tokenizer.json")
    assert again.model_proto == tokenizer.model_proto and again.encode(TEXT).tolist() == tokenizer.encode(TEXT).tolist()
    # An existing .model: the same ids.
    config.data.spm_model = str(run / "tokenizer.model")
    other, other_ids, _ = load_data(config, tmp_path / "elsewhere")
    np.testing.assert_array_equal(other_ids["valid"], ids["valid"])
    # A .model that is not one, and a tokenizer.model that no longer matches tokenizer.json.
    (tmp_path / "bad.model").write_bytes(b"\x00not a protobuf")
    config.data.spm_model = str(tmp_path / "bad.model")
    with pytest.raises(UserError, match="bad.model is not a SentencePiece model"):
        load_data(config, tmp_path / "elsewhere")
    (run / "tokenizer.model").write_bytes(b"changed")
    with pytest.raises(UserError, match="does not match the sha256 recorded in tokenizer.json"):
        load_tokenizer(run / "tokenizer.json")


@pytest.mark.slow
def test_sentencepiece_language_model_through_the_cli(tmp_path, capsys):
    (tmp_path / "corpus.txt").write_text(TEXT * 5)
    workdir = tmp_path / "run"
    args = ["train", "--config", "experiments/default.py:tiny", "--workdir", str(workdir),
            f"--config.data.corpus={tmp_path / 'corpus.txt'}", "--config.data.tokenizer=sentencepiece",
            "--config.data.spm_vocab_size=60", "--config.train.max_steps=4", "--config.sample.length=5",
            "--config.sample.prompt=", "--config.model.num_layers=1"]  # an unprompted sample starts after a line end
    assert cli.main(args) == 0
    assert (workdir / "tokenizer.model").exists()
    capsys.readouterr()
    assert cli.main(["eval", "--workdir", str(workdir), "--split", "valid"]) == 0
    assert "per word: perplexity" in capsys.readouterr().out
    assert cli.main(["generate", "--workdir", str(workdir), "--prompt", "the dog", "--length", "5"]) == 0
    assert capsys.readouterr().out.startswith("the dog")
