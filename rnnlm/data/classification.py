"""Text classification data: "LABEL sentence" lines, a Keras-like word index, pad_sequences, batches.

File formats (`data.format`):
  * "lines": one example per line, the label, whitespace, the sentence (SST-2:
    `1 a stirring , funny ...`; TREC: `NUM:dist How far is ...`, where
    `data.coarse_labels` keeps the part before ':' — TREC's 6 coarse classes);
  * "tsv": tab-separated with a header row naming the columns; the label and the
    sentence are the columns named `data.label_column` and `data.text_column`
    (GLUE's `label<TAB>sentence`, in either order, other columns ignored);
  * "auto" (the default): "tsv" for a file named *.tsv, else "lines". A registered
    corpus says per file which it is. CRLF line endings read as LF. Empty lines are skipped and counted; a line
with a label but no sentence, or a valid/test label never seen in train, is a
one-line error naming the file and line, raised before anything is trained.

Classes are the train labels in sorted order (numerically when all are
integers, so "0", "1", "2" get ids 0, 1, 2). A corpus without a valid split
(TREC) gives `data.valid_fraction` of its train examples, drawn with a fixed
seed (0, whatever `config.seed` is, so every run sees the same split), to valid.

`WordIndex` is Keras's `Tokenizer(num_words=..., oov_token=...)`: id 0 is
padding, 1 is out-of-vocabulary, then words by descending train frequency
(ties in order of first appearance), keeping ids below `num_words`. Unlike
Keras it splits on whitespace only (no punctuation filter: the corpora are
tokenised already, and "!" or "?" carry signal).

`pad_sequences` is Keras's: `maxlen`, `padding` and `truncating` 'pre' | 'post'.
Batches also carry a `mask` ([B, T], True on real tokens) that the model feeds
to the recurrence, and `weights` ([B], 0 for rows that only fill the last batch).
"""

from __future__ import annotations

import collections
import dataclasses
import pathlib

import numpy as np

from rnnlm.data import corpora
from rnnlm.data import text as text_lib
from rnnlm.errors import UserError

SPLIT_SEED = 0  # the held-out valid split never depends on config.seed
BUCKET_MULTIPLE = 8  # bucketed batches are padded to a multiple of this: few distinct shapes to compile
BUCKET_POOL = 32  # bucketing sorts pools of this many batches by length, so batches stay shuffled


# --- pad_sequences (Keras semantics) ---------------------------------------------

def pad_sequences(sequences, maxlen: int | None = None, padding: str = "pre", truncating: str = "pre",
                  value: int = 0, dtype=np.int32) -> np.ndarray:
    """Keras `pad_sequences`: a list of id lists -> [N, maxlen]; maxlen None = the longest.

    truncating='pre' drops tokens from the start of a long sequence, 'post' from its end;
    padding='pre' puts the fill value before a short sequence, 'post' after it.
    """
    if padding not in ("pre", "post"):
        raise ValueError(f'padding type "{padding}" not understood')
    if truncating not in ("pre", "post"):
        raise ValueError(f'truncating type "{truncating}" not understood')
    sequences = [list(s) for s in sequences]
    if maxlen is None:
        maxlen = max((len(s) for s in sequences), default=0)
    out = np.full((len(sequences), maxlen), value, dtype=dtype)
    for row, seq in enumerate(sequences):
        if not seq or maxlen == 0:
            continue
        kept = seq[-maxlen:] if truncating == "pre" else seq[:maxlen]
        if padding == "pre":
            out[row, maxlen - len(kept):] = kept
        else:
            out[row, :len(kept)] = kept
    return out


def padding_mask(lengths, maxlen: int, padding: str) -> np.ndarray:
    """[N, maxlen] bool, True where `pad_sequences(..., padding=padding)` put a real token."""
    lengths = np.minimum(np.asarray(lengths), maxlen)[:, None]
    positions = np.arange(maxlen)[None, :]
    return positions >= maxlen - lengths if padding == "pre" else positions < lengths


# --- word index (Keras Tokenizer) ---------------------------------------------------

PAD, OOV = "<pad>", "<oov>"


class WordIndex:
    """Whitespace words -> ids: 0 padding, 1 out-of-vocabulary, then by frequency; with the classes and maxlen."""

    kind = "word_index"

    def __init__(self, symbols, classes, maxlen: int, lowercase: bool = False):
        self.symbols = list(symbols)
        self.classes = list(classes)
        self.maxlen = int(maxlen)
        self.lowercase = lowercase
        self.index = {s: i for i, s in enumerate(self.symbols)}

    @classmethod
    def fit(cls, texts, classes, maxlen: int, num_words: int = 0, lowercase: bool = False) -> "WordIndex":
        counts = collections.Counter()  # insertion-ordered: ties keep first appearance, as in Keras
        for text in texts:
            counts.update(text.lower().split() if lowercase else text.split())
        ranked = sorted(counts, key=lambda w: -counts[w])  # stable sort
        symbols = [PAD, OOV] + ranked
        return cls(symbols[:num_words] if num_words else symbols, classes, maxlen, lowercase)

    @property
    def vocab_size(self) -> int:
        return len(self.symbols)

    def encode(self, text: str) -> np.ndarray:
        words = text.lower().split() if self.lowercase else text.split()
        return np.fromiter((self.index.get(w, 1) for w in words), dtype=np.int32, count=len(words))

    def decode(self, ids) -> str:
        return " ".join(self.symbols[i] for i in np.asarray(ids).tolist() if i != 0)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "symbols": self.symbols, "classes": self.classes, "maxlen": self.maxlen,
                "lowercase": self.lowercase}


# --- reading labelled lines ----------------------------------------------------------

@dataclasses.dataclass
class Examples:
    labels: list[str]
    texts: list[str]
    where: list[str]  # "file:line" of each example, for error messages
    empty_lines: int = 0

    def subset(self, indices) -> "Examples":
        return Examples([self.labels[i] for i in indices], [self.texts[i] for i in indices],
                        [self.where[i] for i in indices])


def _coarse(label: str, where: str) -> str:
    """'NUM:dist' -> 'NUM' (TREC's coarse class)."""
    if ":" not in label or not label.split(":", 1)[0]:
        raise UserError(f"{where}: expected a 'COARSE:fine' label, got {label!r}")
    return label.split(":", 1)[0]


def parse_lines(text: str, source: str, coarse: bool = False) -> Examples:
    """'LABEL sentence' lines -> Examples; empty lines counted, a line without a sentence is an error."""
    out = Examples([], [], [])
    for number, line in enumerate(text.splitlines(), 1):
        parts = line.split(None, 1)
        if not parts:
            out.empty_lines += 1
            continue
        if len(parts) < 2:
            raise UserError(f"{source}:{number}: expected 'LABEL sentence', got only {parts[0]!r}")
        label = _coarse(parts[0], f"{source}:{number}") if coarse else parts[0]
        out.labels.append(label)
        out.texts.append(parts[1].strip())
        out.where.append(f"{source}:{number}")
    if not out.labels:
        raise UserError(f"{source} holds no labelled line")
    return out


def parse_tsv(text: str, source: str, label_column: str = "label", text_column: str = "sentence",
              coarse: bool = False) -> Examples:
    """Tab-separated rows under a header that names `label_column` and `text_column` -> Examples."""
    lines = text.splitlines()
    header = lines[0].split("\t") if lines else []
    missing = [c for c in (label_column, text_column) if c not in header]
    if missing:
        raise UserError(f"{source}:1: expected a tab-separated header row naming the columns {label_column!r} and "
                        f"{text_column!r} (data.label_column, data.text_column), got {lines[0][:60]!r}"
                        if lines else f"{source} is empty")
    label_at, text_at = header.index(label_column), header.index(text_column)
    out = Examples([], [], [])
    for number, line in enumerate(lines[1:], 2):
        if not line.strip():
            out.empty_lines += 1
            continue
        fields = line.split("\t")
        if len(fields) != len(header):
            raise UserError(f"{source}:{number}: expected {len(header)} tab-separated fields "
                            f"({', '.join(header)}), got {len(fields)}: {line[:60]!r}")
        label, sentence = fields[label_at].strip(), fields[text_at].strip()
        if not label or not sentence:
            raise UserError(f"{source}:{number}: empty {label_column if not label else text_column!r} field")
        out.labels.append(_coarse(label, f"{source}:{number}") if coarse else label)
        out.texts.append(sentence)
        out.where.append(f"{source}:{number}")
    if not out.labels:
        raise UserError(f"{source} holds no labelled row under its header")
    return out


FORMATS = ("auto", "lines", "tsv")


def read_file(path, data_config, entry: corpora.CorpusFile | None = None) -> Examples:
    """One labelled file: read as a registered corpus's `entry` says, else by `data.format` ("auto": by suffix)."""
    path = pathlib.Path(path)
    if entry is not None:
        file_format, (label_column, text_column) = entry.format, entry.columns
    else:
        file_format, label_column, text_column = data_config.format, data_config.label_column, data_config.text_column
    if file_format == "auto":
        file_format = "tsv" if path.suffix.lower() == ".tsv" else "lines"
    text = text_lib.read_text(path)
    if file_format == "tsv":
        return parse_tsv(text, str(path), label_column, text_column, data_config.coarse_labels)
    return parse_lines(text, str(path), data_config.coarse_labels)


def sorted_classes(labels) -> list[str]:
    unique = set(labels)
    if all(label.lstrip("-").isdigit() for label in unique):
        return sorted(unique, key=int)
    return sorted(unique)


def held_out(examples: Examples, fraction: float) -> tuple[Examples, Examples]:
    """(rest, held-out fraction) by a fixed-seed permutation."""
    order = np.random.default_rng(SPLIT_SEED).permutation(len(examples.labels))
    cut = max(1, int(round(len(order) * fraction)))
    if cut >= len(order):
        raise UserError(f"{len(order)} example(s) are too few to hold out data.valid_fraction={fraction}")
    return examples.subset(np.sort(order[cut:])), examples.subset(np.sort(order[:cut]))


def read_examples(data_config) -> dict[str, Examples]:
    """{train, valid, test: Examples} from data.lines, explicit paths, a registered corpus, a folder or a file."""
    coarse = data_config.coarse_labels
    source = corpora.resolve(data_config)
    if source.kind == "lines":
        examples = parse_lines("\n".join(data_config.lines), "data.lines", coarse)
        return {split: examples for split in text_lib.SPLITS}  # the seed example: one set for all three
    if source.kind == "files":
        return {s: read_file(p, data_config) for s, p in source.files.items()}
    if source.kind == "registered":
        corpus = source.corpus
        if corpus.task != "classify":
            raise UserError(f"corpus {corpus.name!r} is a language-model corpus; task=classify needs labelled lines")
        paths = corpora.locate(corpus, data_config.data_dir)
        entries = {entry.split: entry for entry in corpus.files}
        out = {s: read_file(p, data_config, entries[s]) for s, p in paths.items()}
        if "valid" not in out:
            out["train"], out["valid"] = held_out(out["train"], data_config.valid_fraction)
        return out
    if source.kind == "file":  # one file: valid and test are each valid_fraction of it, by a fixed seed
        rest, test = held_out(read_file(source.path, data_config), data_config.valid_fraction)
        train, valid = held_out(rest, data_config.valid_fraction)
        return {"train": train, "valid": valid, "test": test}
    raise UserError(f"corpus {data_config.corpus!r} is not a classification corpus")


# --- encoded splits and batches ------------------------------------------------------

@dataclasses.dataclass
class EncodedSplit:
    sequences: list  # np.int32 ids per example, already truncated to maxlen
    labels: np.ndarray  # [N] int32 class ids
    truncated: int  # examples longer than maxlen
    empty_lines: int

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(s) for s in self.sequences], np.int64)


def encode_split(examples: Examples, tokenizer: WordIndex, truncating: str, split: str) -> EncodedSplit:
    class_ids = {c: i for i, c in enumerate(tokenizer.classes)}
    labels = []
    for label, where in zip(examples.labels, examples.where):
        if label not in class_ids:
            raise UserError(f"{where}: label {label!r} is not one of the classes seen in train "
                            f"({', '.join(tokenizer.classes)})")
        labels.append(class_ids[label])
    sequences, truncated = [], 0
    for text in examples.texts:
        ids = tokenizer.encode(text)
        if len(ids) > tokenizer.maxlen:
            truncated += 1
            ids = ids[-tokenizer.maxlen:] if truncating == "pre" else ids[:tokenizer.maxlen]
        sequences.append(ids)
    return EncodedSplit(sequences, np.asarray(labels, np.int32), truncated, examples.empty_lines)


def fit_word_index(train: Examples, data_config, num_classes: int) -> WordIndex:
    classes = sorted_classes(train.labels)
    if num_classes and len(classes) != num_classes:
        counts = collections.Counter(train.labels)
        rarest = min(classes, key=lambda c: counts[c])
        first = train.where[train.labels.index(rarest)]
        raise UserError(f"train has {len(classes)} labels ({', '.join(classes)}) but model.num_classes={num_classes}; "
                        f"the rarest, {rarest!r}, first at {first}")
    if len(classes) < 2:
        raise UserError(f"train has {len(classes)} class ({', '.join(classes)}); a classifier needs at least 2")
    lowercase = data_config.lowercase
    maxlen = data_config.maxlen or max(len(t.split()) for t in train.texts)
    return WordIndex.fit(train.texts, classes, maxlen, data_config.num_words, lowercase)


def batch_order(lengths: np.ndarray, batch_size: int, rng: np.random.Generator | None,
                bucket: bool) -> list[np.ndarray]:
    """Index arrays of the batches of one pass; the last may be short.

    rng None: in order (evaluation). Bucketing sorts pools of BUCKET_POOL batches by
    length, cuts them into batches and shuffles the batches, so a batch holds
    sentences of similar length (less padding) while the epoch stays shuffled.
    """
    order = np.arange(len(lengths)) if rng is None else rng.permutation(len(lengths))
    if bucket:
        pool = batch_size * BUCKET_POOL
        order = np.concatenate([chunk[np.argsort(lengths[chunk], kind="stable")]
                                for chunk in np.array_split(order, max(1, -(-len(order) // pool)))])
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if rng is not None and bucket:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def make_batch(split: EncodedSplit, indices: np.ndarray, batch_size: int, maxlen: int, padding: str,
               bucket: bool) -> dict[str, np.ndarray]:
    """One [batch_size, T] batch; rows past len(indices) are zero-weight filler (one compiled shape)."""
    sequences = [split.sequences[i] for i in indices]
    lengths = np.array([len(s) for s in sequences], np.int64)
    width = maxlen
    if bucket:
        width = min(maxlen, max(BUCKET_MULTIPLE, -(-int(lengths.max(initial=1)) // BUCKET_MULTIPLE) * BUCKET_MULTIPLE))
    fill = batch_size - len(indices)
    tokens = pad_sequences(sequences + [[]] * fill, maxlen=width, padding=padding, truncating="pre")
    lengths = np.concatenate([lengths, np.zeros(fill, np.int64)])
    return {"tokens": tokens, "mask": padding_mask(lengths, width, padding),
            "labels": np.concatenate([split.labels[indices], np.zeros(fill, np.int32)]),
            "weights": np.concatenate([np.ones(len(indices), np.float32), np.zeros(fill, np.float32)])}
