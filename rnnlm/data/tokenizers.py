"""Character, word and SentencePiece tokenizers, fitted on the train split and saved with the run.

All map text to np.int32 ids and back, and serialise to one JSON file
(`tokenizer.json` in the workdir) so eval and generate read text exactly as
training did; SentencePiece also keeps its binary `tokenizer.model` beside it.

* `char`: one id per Unicode code point seen in train, plus `<unk>` (id 0) for
  characters that only appear in valid/test. Prompts are encoded strictly: an
  unseen character is an error, not a silent `<unk>`.
* `word`: whitespace-separated words, `<eos>` at every line end (the PTB
  convention of Mikolov and Zaremba), vocabulary from train ordered by
  frequency, `<unk>` for the rest. On PTB this gives exactly 10,000 entries.
* `sentencepiece`: subword pieces (BPE or unigram, Kudo & Richardson 2018)
  trained on the train split, or an existing `.model` file; see
  `SentencePieceTokenizer`.
"""

from __future__ import annotations

import collections
import hashlib
import io
import json
import pathlib

import numpy as np

from rnnlm.errors import UserError

UNK = "<unk>"
EOS = "<eos>"



def replaced_tokens(tokenizer, text: str) -> int:
    """How many tokens of `text` are `<unk>` standing for text the vocabulary lacks. A literal `<unk>`
    word (PTB's files have them) is the text itself, predicted as such, so it does not count."""
    if tokenizer.kind == "word":
        return sum(1 for word in tokenizer._words(text, tokenizer.lowercase) if word not in tokenizer.index)
    unk = tokenizer.unk if tokenizer.kind == "sentencepiece" else tokenizer.index[UNK]
    return int((tokenizer.encode(text) == unk).sum())

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


def _spm_processor(model_proto: bytes, source: str):
    import sentencepiece as spm
    try:
        processor = spm.SentencePieceProcessor(model_proto=model_proto)
    except (RuntimeError, TypeError, OSError):  # the C++ parser reports a bad proto as RuntimeError
        raise UserError(f"{source} is not a SentencePiece model") from None
    if processor.get_piece_size() < 2 or processor.eos_id() < 0:
        raise UserError(f"{source}: the SentencePiece model has no end-of-sentence piece (eos_id); "
                        f"rnnlm ends every line with it")
    return processor


class SentencePieceTokenizer:
    """Subword pieces from the `sentencepiece` library: BPE or unigram, trained on the train split.

    Every line is encoded on its own and followed by the model's end-of-sentence
    piece (`</s>`), the `<eos>` convention of the word tokenizer, so a line end is
    a token and decode(encode(text)) == text. Training is deterministic (one
    thread, no sampling or shuffling of the input) and keeps the text as it is
    (no Unicode normalisation, no whitespace folding), so the subword model reads
    exactly the characters that bits-per-character counts. Ids: unknown 0, `</s>` 1,
    no BOS and no padding piece. An existing `.model` file can be used instead
    (`data.spm_model`); its own ids are kept.

    The serialized model is the `.model` file of the sentencepiece tools; a run
    keeps it as `<workdir>/tokenizer.model`, and tokenizer.json records its sha256.
    """

    kind = "sentencepiece"
    model_file = "tokenizer.model"

    def __init__(self, model_proto: bytes, source: str = "tokenizer.model"):
        self.model_proto = bytes(model_proto)
        self.processor = _spm_processor(self.model_proto, source)
        self.eos = self.processor.eos_id()
        self.unk = self.processor.unk_id()
        # piece -> id like the other tokenizers' `index`; "\n" and "<eos>" name the line end
        # (sampling starts an unprompted sample after one).
        self.index = {self.processor.id_to_piece(i): i for i in range(self.processor.get_piece_size())}
        self.index.update({"\n": self.eos, EOS: self.eos})

    @classmethod
    def fit(cls, text: str, spm_vocab_size: int = 8000, spm_model_type: str = "bpe", spm_model: str = "",
            **unused) -> "SentencePieceTokenizer":
        if spm_model:
            path = pathlib.Path(spm_model).expanduser()
            if not path.is_file():
                raise UserError(f"data.spm_model: file not found: {path}")
            return cls(path.read_bytes(), str(path))
        import sentencepiece as spm
        lines = [line for line in text.split("\n") if line.strip()]
        proto = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(lines), model_writer=proto, vocab_size=spm_vocab_size,
                model_type=spm_model_type, character_coverage=1.0, unk_id=0, eos_id=1, bos_id=-1, pad_id=-1,
                # The default unk name "<unk>" would hide '<' and '>' of the corpora's own "<unk>" words
                # from training, so they could never be encoded.
                unk_piece="<spm_unk>",
                # Identity: the pieces spell the text exactly; no dummy "▁" before lines that start with a
                # space already (every PTB and WikiText line).
                normalization_rule_name="identity", remove_extra_whitespaces=False, add_dummy_prefix=False,
                num_threads=1, shuffle_input_sentence=False, input_sentence_size=0,
                max_sentence_length=1 << 20, minloglevel=2)
        except RuntimeError as e:  # e.g. "Vocabulary size is too high (8000). Please set it to a value <= 316."
            raise UserError(f"SentencePiece training failed: {str(e).splitlines()[-1].split('] ')[-1]}") from None
        return cls(proto.getvalue(), "the trained model")

    @property
    def vocab_size(self) -> int:
        return self.processor.get_piece_size()

    def encode(self, text: str, strict: bool = False) -> np.ndarray:
        lines = text.split("\n")
        ids = []
        for index, pieces in enumerate(self.processor.encode(lines)):
            ids.extend(pieces)
            if index < len(lines) - 1:  # the part after the last newline has not ended its line
                ids.append(self.eos)
        ids = np.asarray(ids, dtype=np.int32)
        if strict and (ids == self.unk).any():
            missing = sorted({ch for ch in set(text) - {"\n"} if self.unk in self.processor.encode(ch)})
            raise UserError(f"characters not in the SentencePiece vocabulary: {''.join(missing)!r}")
        return ids

    def decode(self, ids) -> str:
        ids = np.asarray(ids).tolist()
        lines, line = [], []
        for i in ids:
            if i == self.eos:
                lines.append(line)
                line = []
            else:
                line.append(i)
        return "\n".join(self.processor.decode(pieces) for pieces in lines + [line])

    def sidecar_files(self) -> dict[str, bytes]:
        """Files saved beside tokenizer.json (before it, so tokenizer.json implies they exist)."""
        return {self.model_file: self.model_proto}

    def to_dict(self) -> dict:
        return {"kind": self.kind, "model_file": self.model_file,
                "model_sha256": hashlib.sha256(self.model_proto).hexdigest(), "vocab_size": self.vocab_size}

    @classmethod
    def from_spec(cls, spec: dict, directory: pathlib.Path) -> "SentencePieceTokenizer":
        path = pathlib.Path(directory) / spec["model_file"]
        if not path.is_file():
            raise UserError(f"{path} is missing; tokenizer.json refers to it")
        proto = path.read_bytes()
        if hashlib.sha256(proto).hexdigest() != spec["model_sha256"]:
            raise UserError(f"{path} does not match the sha256 recorded in tokenizer.json")
        return cls(proto, str(path))


TOKENIZERS = {"char": CharTokenizer, "word": WordTokenizer, "sentencepiece": SentencePieceTokenizer}


def fit_tokenizer(kind: str, train_text: str, data_config):
    if kind not in TOKENIZERS:
        raise UserError(f"unknown tokenizer {kind!r}; choose one of {', '.join(TOKENIZERS)}")
    return TOKENIZERS[kind].fit(train_text, max_size=data_config.max_vocab,
                                min_freq=data_config.min_freq, lowercase=data_config.lowercase,
                                spm_vocab_size=data_config.get("spm_vocab_size", 8000),
                                spm_model_type=data_config.get("spm_model_type", "bpe"),
                                spm_model=data_config.get("spm_model", ""))


def tokenizer_json(tokenizer) -> str:
    return json.dumps(tokenizer.to_dict(), ensure_ascii=False)


def tokenizer_sidecars(tokenizer) -> dict[str, bytes]:
    """Binary files a tokenizer keeps beside its tokenizer.json (SentencePiece's .model)."""
    return tokenizer.sidecar_files() if hasattr(tokenizer, "sidecar_files") else {}


def save_tokenizer(tokenizer, path: pathlib.Path) -> None:
    path = pathlib.Path(path)
    for name, payload in tokenizer_sidecars(tokenizer).items():
        (path.parent / name).write_bytes(payload)
    path.write_text(tokenizer_json(tokenizer))


def load_tokenizer(path: pathlib.Path):
    path = pathlib.Path(path)
    spec = json.loads(path.read_text())
    kind = spec.pop("kind")
    if kind not in TOKENIZERS:
        raise UserError(f"{path}: unknown tokenizer kind {kind!r}")
    cls = TOKENIZERS[kind]
    return cls.from_spec(spec, path.parent) if hasattr(cls, "from_spec") else cls(**spec)
