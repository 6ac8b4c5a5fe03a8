"""Turn `config.data` into train/valid/test text: a named corpus, the user's own files, or the offline default.

`config.data.corpus` is the one field a user sets:
  * a registered name (`ptb`, `tinyshakespeare`, ...; see `rnnlm.data.corpora`);
  * `default`: CPython's bundled documentation text (`pydoc_data.topics`), always offline;
  * a path to one text file: split by position into train/valid/test by
    `config.data.split` (each cut moved forward to the next line break);
  * a path to a folder holding files whose names contain `train`, `valid`
    (or `dev`) and `test`.
`config.data.train_path`/`valid_path`/`test_path` name three files explicitly.
"""

from __future__ import annotations

import pathlib

from rnnlm.data import corpora
from rnnlm.errors import UserError

SPLITS = ("train", "valid", "test")
MAX_FILE_BYTES = 2 << 30  # refuse files above 2 GiB: they would not fit the in-memory pipeline


def read_text(path: pathlib.Path) -> str:
    path = pathlib.Path(path)
    if not path.exists():
        raise UserError(f"file not found: {path}")
    if not path.is_file():
        raise UserError(f"not a regular file: {path}")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise UserError(f"{path} is {size / 2**30:.1f} GiB; the limit is {MAX_FILE_BYTES / 2**30:.0f} GiB")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not valid UTF-8 (byte {e.start}); convert it first, "
                        f"e.g. iconv -f latin1 -t utf-8") from None
    if not text.strip():
        raise UserError(f"{path} is empty")
    return text


def split_fractions(value) -> tuple[float, float, float]:
    """data.split as three floats, or a one-line error (ml_collections turns `=abc` into a tuple of letters)."""
    try:
        fractions = tuple(float(f) for f in value)
    except (TypeError, ValueError):
        fractions = ()
    if len(fractions) != 3 or any(not f > 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        shown = "".join(value) if isinstance(value, tuple) and all(isinstance(v, str) for v in value) else value
        raise UserError(f"data.split must be three positive fractions summing to 1, e.g. (0.9,0.05,0.05); got {shown!r}")
    return fractions


def split_by_position(text: str, fractions) -> dict[str, str]:
    """Cut one text into train/valid/test at the given fractions of its length."""
    fractions = split_fractions(fractions)
    cuts = []
    for boundary in (fractions[0], fractions[0] + fractions[1]):
        cut = int(len(text) * boundary)
        newline = text.find("\n", cut)
        cuts.append(cut if newline < 0 else newline + 1)
    parts = {"train": text[:cuts[0]], "valid": text[cuts[0]:cuts[1]], "test": text[cuts[1]:]}
    for split, part in parts.items():
        if not part.strip():
            raise UserError(f"the {split} split is empty; the text is too short for data.split={fractions}")
    return parts


def default_corpus_text() -> str:
    """CPython's pydoc topics: ~0.5 MB of English prose and code that every Python ships."""
    from pydoc_data import topics
    return "\n".join(topics.topics[key] for key in sorted(topics.topics))


def load_corpus_text(data_config) -> tuple[dict[str, str], str]:
    """Returns ({split: text}, tokenizer the corpus is usually read with)."""
    source = corpora.resolve(data_config)
    if source.kind == "files":
        return {s: read_text(p) for s, p in source.files.items()}, "word"
    if source.kind == "default":
        return split_by_position(default_corpus_text(), data_config.split), "char"
    if source.kind == "registered":
        paths = corpora.locate(source.corpus, data_config.data_dir)
        if source.corpus.split_fractions is not None:
            return split_by_position(read_text(paths["all"]), data_config.split), source.corpus.tokenizer
        return {s: read_text(paths[s]) for s in paths}, source.corpus.tokenizer
    if source.kind == "file":
        return split_by_position(read_text(source.path), data_config.split), "char"
    raise UserError("data.lines holds labelled lines for task=classify; a language model reads data.corpus")
