"""Corpora, tokenizers and truncated-BPTT batching."""

import hashlib
import io

import ml_collections
import numpy as np
import pytest

from conftest import data_dir
from rnnlm.config import base_config
from rnnlm.data import corpora
from rnnlm.data.batching import make_streams
from rnnlm.data.text import load_corpus_text, read_text, split_by_position
from rnnlm.data.tokenizers import CharTokenizer, WordTokenizer, load_tokenizer, save_tokenizer
from rnnlm.errors import UserError


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


def test_tinyshakespeare_char_split_is_90_5_5():
    texts, kind = load_corpus_text(data_config(corpus="tinyshakespeare"))
    total = sum(len(t) for t in texts.values())
    assert kind == "char" and total == 1_115_394
    assert abs(len(texts["train"]) / total - 0.9) < 1e-3 and abs(len(texts["valid"]) / total - 0.05) < 1e-3
    assert len(CharTokenizer.fit(texts["train"]).symbols) == 66  # 65 characters + <unk>


@pytest.mark.parametrize("pairs,batch,bptt", [(1, 1, 1), (99, 4, 7), (100, 5, 10), (37, 8, 3), (5, 10, 4)])
def test_streams_score_every_target_exactly_once(pairs, batch, bptt):
    ids = np.arange(pairs + 1, dtype=np.int32) + 1000
    streams = make_streams(ids, batch, bptt)
    seen_targets = []
    for w in range(streams.num_windows):
        window = streams.window(w)
        assert window["tokens"].shape == (batch, bptt)
        keep = window["weights"] > 0
        seen_targets.extend(window["targets"][keep].tolist())
    assert sorted(seen_targets) == ids[1:].tolist()
    assert streams.num_targets == pairs
    # Within a stream, each target is the next token of the same stream (contiguity across windows).
    full_tokens, full_targets, full_w = streams.tokens, streams.targets, streams.weights > 0
    np.testing.assert_array_equal(full_targets[full_w], full_tokens[full_w] + 1)


def test_split_by_position_cuts_at_line_breaks():
    text = "".join(f"line {i}\n" for i in range(100))
    parts = split_by_position(text, (0.8, 0.1, 0.1))
    assert "".join(parts.values()) == text
    assert all(p.endswith("\n") for p in parts.values())
    assert parts["train"].count("\n") in (80, 81)
    with pytest.raises(UserError, match="three positive fractions"):
        split_by_position(text, (0.5, 0.5))


def test_user_file_and_folder_corpora(tmp_path):
    (tmp_path / "one.txt").write_text("".join(f"sentence number {i}\n" for i in range(50)))
    texts, kind = load_corpus_text(data_config(corpus=str(tmp_path / "one.txt")))
    assert kind == "char" and set(texts) == {"train", "valid", "test"}
    folder = tmp_path / "folder"
    folder.mkdir()
    for name in ("my.train.txt", "my.dev.txt", "my.test.txt"):
        (folder / name).write_text(f"{name}\n")
    texts, kind = load_corpus_text(data_config(corpus=str(folder)))
    assert texts["valid"] == "my.dev.txt\n" and kind == "word"
    (folder / "extra-test.txt").write_text("x\n")
    with pytest.raises(UserError, match="2 files .* for the test split"):
        load_corpus_text(data_config(corpus=str(folder)))


@pytest.mark.parametrize("content,message", [
    (b"", "is empty"), (b"  \n\n", "is empty"), (b"caf\xe9\n", "not valid UTF-8 \\(byte 3\\)")])
def test_bad_text_files(tmp_path, content, message):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(UserError, match=message):
        read_text(path)
    with pytest.raises(UserError, match="file not found"):
        read_text(tmp_path / "missing.txt")


def test_checksum_mismatch_is_refused(tmp_path, monkeypatch):
    (tmp_path / "ptb").mkdir()
    for entry in corpora.CORPORA["ptb"].files:
        (tmp_path / "ptb" / entry.name).write_bytes((data_dir() / "ptb" / entry.name).read_bytes())
    with open(tmp_path / "ptb" / "ptb.valid.txt", "ab") as f:
        f.write(b" extra\n")
    with pytest.raises(UserError, match="checksum mismatch for .*ptb.valid.txt"):
        corpora.locate(corpora.CORPORA["ptb"], str(tmp_path))


def test_download_verifies_and_writes_atomically(tmp_path, monkeypatch):
    """The download path with the network replaced: good bytes land, bad bytes never do."""
    payload = "sisterðcity\n".encode("latin-1")
    entry = corpora.CorpusFile("train", "x.txt", "https://example.invalid/x.txt",
                               hashlib.sha256(payload.decode("latin-1").encode("utf-8")).hexdigest(), "latin-1")
    corpus = corpora.Corpus("fake", "fake", (entry,), tokenizer="word")
    monkeypatch.setenv("RNNLM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(corpora.urllib.request, "urlopen", lambda url, timeout: io.BytesIO(payload))
    path = corpora.locate(corpus, str(tmp_path / "empty"))["train"]
    assert path.read_text() == "sisterðcity\n"

    bad = corpora.Corpus("bad", "bad", (corpora.CorpusFile("train", "y.txt", "https://example.invalid/y", "0" * 64),),
                         tokenizer="word")
    with pytest.raises(UserError, match="checksum mismatch for https://example.invalid/y"):
        corpora.locate(bad, str(tmp_path / "empty"))
    assert not list((tmp_path / "cache" / "bad").glob("*"))

    def offline(url, timeout):
        raise OSError("network unreachable")
    monkeypatch.setattr(corpora.urllib.request, "urlopen", offline)
    with pytest.raises(UserError, match="cannot download .*network unreachable"):
        corpora.locate(bad, "")


def test_registry_checksums_match_the_shared_copies():
    for corpus in corpora.CORPORA.values():
        paths = corpora.locate(corpus, str(data_dir()), download=False)
        assert set(paths) == {f.split for f in corpus.files}


def test_default_corpus_is_offline_and_nonempty():
    texts, kind = load_corpus_text(data_config(corpus="default"))
    assert kind == "char" and len(texts["train"]) > 100_000
    with pytest.raises(UserError, match="unknown corpus 'nope'"):
        load_corpus_text(data_config(corpus="nope"))
