"""rnnlm/data/text.py: a config's data section to train/valid/test text: named corpora, files, folders."""

import ml_collections
import pytest

from rnnlm.config import base_config
from rnnlm.data.text import load_corpus_text, read_text, split_by_position
from rnnlm.data.tokenizers import CharTokenizer
from rnnlm.errors import UserError


def data_config(**overrides) -> ml_collections.ConfigDict:
    config = base_config().data
    config.update(overrides)
    return config


def test_tinyshakespeare_char_split_is_90_5_5():
    texts, kind = load_corpus_text(data_config(corpus="tinyshakespeare"))
    total = sum(len(t) for t in texts.values())
    assert kind == "char" and total == 1_115_394
    assert abs(len(texts["train"]) / total - 0.9) < 1e-3 and abs(len(texts["valid"]) / total - 0.05) < 1e-3
    assert len(CharTokenizer.fit(texts["train"]).symbols) == 66  # 65 characters + <unk>


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


def test_default_corpus_is_offline_and_nonempty():
    texts, kind = load_corpus_text(data_config(corpus="default"))
    assert kind == "char" and len(texts["train"]) > 100_000
    with pytest.raises(UserError, match="unknown corpus 'nope'"):
        load_corpus_text(data_config(corpus="nope"))

