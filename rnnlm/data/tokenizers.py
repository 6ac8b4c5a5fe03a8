"""Character and word tokenizers, fitted on the train split and saved with the run.

Both map text to np.int32 ids and back, and serialise to one JSON file
(`tokenizer.json` in the workdir) so eval and generate read text exactly as
training did.

* `char`: one id per Unicode code point seen in train, plus `<unk>` (id 0) for
  characters that only appear in valid/test. Prompts are encoded strictly: an
  unseen character is an error, not a silent `<unk>`.
* `word`: whitespace-separated words, `<eos>` at every line end (the PTB
  convention of Mikolov and Zaremba), vocabulary from train ordered by
  frequency, `<unk>` for the rest. On PTB this gives exactly 10,000 entries.
"""

from __future__ import annotations

import collections
import json
import pathlib

import numpy as np

from rnnlm.errors import UserError

UNK = "<unk>"
EOS = "<eos>"


class CharTokenizer:
    kind = "char"

    def __init__(self, symbols: list[str]):
        self.symbols = list(symbols)
        self.index = {s: i for i, s in enumerate(self.symbols)}

    @classmethod
    def fit(cls, text: str, **unused) -> "CharTokenizer":
        return cls([UNK] + sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.symbols)

    def encode(self, text: str, strict: bool = False) -> np.ndarray:
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        uniques, inverse = np.unique(codes, return_inverse=True)
        table = np.array([self.index.get(chr(u), -1) for u in uniques], dtype=np.int32)
        if strict and (table < 0).any():
            missing = "".join(chr(u) for u, t in zip(uniques, table) if t < 0)
            raise UserError(f"characters not in the vocabulary: {missing!r}")
        table[table < 0] = self.index[UNK]
        return table[inverse].astype(np.int32)

    def decode(self, ids) -> str:
        return "".join("\ufffd" if i == 0 else self.symbols[i] for i in np.asarray(ids).tolist())

    def to_dict(self) -> dict:
        return {"kind": self.kind, "symbols": self.symbols}


class WordTokenizer:
    kind = "word"

    def __init__(self, symbols: list[str], lowercase: bool = False):
        self.symbols = list(symbols)
        self.lowercase = lowercase
        self.index = {s: i for i, s in enumerate(self.symbols)}

    @classmethod
    def fit(cls, text: str, max_size: int = 0, min_freq: int = 1, lowercase: bool = False, **unused):
        counts = collections.Counter(cls._words(text, lowercase))
        counts.pop(UNK, None)
        counts.pop(EOS, None)
        ranked = sorted((w for w, c in counts.items() if c >= min_freq), key=lambda w: (-counts[w], w))
        if max_size:
            ranked = ranked[:max(max_size - 2, 0)]
        return cls([UNK, EOS] + ranked, lowercase)

    @staticmethod
    def _words(text: str, lowercase: bool):
        for line in text.splitlines():
            yield from (line.lower() if lowercase else line).split()
            yield EOS

    @property
    def vocab_size(self) -> int:
        return len(self.symbols)

    def encode(self, text: str, strict: bool = False) -> np.ndarray:
        unk = self.index[UNK]
        words = list(self._words(text, self.lowercase))
        if not text.endswith("\n") and words:
            words.pop()  # a prompt without a final newline does not end its sentence
        ids = np.fromiter((self.index.get(w, unk) for w in words), dtype=np.int32, count=len(words))
        if strict and (ids == unk).any():
            missing = sorted({w for w, i in zip(words, ids) if i == unk and w != UNK})
            if missing:
                raise UserError(f"words not in the vocabulary: {' '.join(missing[:10])}")
        return ids

    def decode(self, ids) -> str:
        out = []
        for i in np.asarray(ids).tolist():
            word = self.symbols[i]
            out.append("\n" if word == EOS else word + " ")
        return "".join(out)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "symbols": self.symbols, "lowercase": self.lowercase}


TOKENIZERS = {"char": CharTokenizer, "word": WordTokenizer}


def fit_tokenizer(kind: str, train_text: str, data_config):
    if kind not in TOKENIZERS:
        raise UserError(f"unknown tokenizer {kind!r}; choose one of {', '.join(TOKENIZERS)}")
    return TOKENIZERS[kind].fit(train_text, max_size=data_config.max_vocab,
                                min_freq=data_config.min_freq, lowercase=data_config.lowercase)


def tokenizer_json(tokenizer) -> str:
    return json.dumps(tokenizer.to_dict(), ensure_ascii=False)


def save_tokenizer(tokenizer, path: pathlib.Path) -> None:
    pathlib.Path(path).write_text(tokenizer_json(tokenizer))


def load_tokenizer(path: pathlib.Path):
    spec = json.loads(pathlib.Path(path).read_text())
    kind = spec.pop("kind")
    return TOKENIZERS[kind](**spec)
