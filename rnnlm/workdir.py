"""What a run keeps in its workdir, and the rules for reusing a workdir.

    <workdir>/config.json      the run's configuration
    <workdir>/tokenizer.json   the tokenizer fitted on train
    <workdir>/tokenizer.model  SentencePiece runs: the .model file (sha256 in tokenizer.json)
    <workdir>/data/<split>.npy token ids per split (a cache; safe to delete)
    <workdir>/metrics.jsonl    one JSON record per log step and per evaluation
    <workdir>/checkpoints/     Orbax checkpoints (see rnnlm.checkpoint)

A workdir that already holds a run is resumed, never overwritten. A config that
would change what the saved arrays mean (data, tokenizer, model shape, stream
layout, optimizer kind) is refused, naming the field; other changes (learning
rate, epochs, logging) are allowed and logged.
"""

from __future__ import annotations

import io
import json
import logging
import os
import pathlib
import tempfile

import numpy as np

from rnnlm.config import config_json, load_config
from rnnlm.data import text as text_lib
from rnnlm.data.tokenizers import fit_tokenizer, load_tokenizer, tokenizer_json, tokenizer_sidecars
from rnnlm.errors import UserError

# Fields whose change makes an existing checkpoint meaningless or unloadable. The `speed` section
# is not among them: it changes how the same function is computed, never its parameters.
FROZEN_PREFIXES = ("task", "data.", "model.", "train.batch_size", "train.bptt", "train.optimizer", "train.loss",
                   "train.variable_bptt", "train.averaging", "train.init_from")


def check_writable(workdir: pathlib.Path) -> None:
    """A workdir must be a directory, or not exist yet under a directory this process may write into."""
    if workdir.exists() and not workdir.is_dir():
        raise UserError(f"--workdir {workdir} is a file, not a directory")
    ancestor = workdir
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserError(f"--workdir {workdir}: {ancestor} is a file, not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UserError(f"--workdir {workdir}: {ancestor} is not writable (permission denied)")


def make_workdir(workdir: pathlib.Path) -> None:
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # e.g. root on a read-only file system, where os.access says yes
        raise UserError(f"--workdir {workdir}: cannot create it ({e.strerror})") from None


class WorkdirLock:
    """One training process per workdir: an exclusive `flock` on <workdir>/.lock, held while training.

    The kernel drops the lock when its process ends, however it ends (a SIGKILL too), so a lock is
    never stale; the file only names the holder's pid for the message.
    """

    def __init__(self, workdir: pathlib.Path):
        import fcntl
        self.path = workdir / ".lock"
        self.file = open(self.path, "a+")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.seek(0)
            holder = self.file.read().strip() or "unknown"
            self.file.close()
            raise UserError(f"{workdir} is in use by another rnnlm process (pid {holder}); wait for it to end "
                            f"or stop it, or use another --workdir") from None
        self.file.seek(0)
        self.file.truncate()
        self.file.write(f"{os.getpid()}\n")
        self.file.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()  # closing the file releases the lock
        return False


def _flatten(tree, prefix=""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read once, at import: setting it later would race with other threads' files


def write_atomically(path: pathlib.Path, payload: bytes) -> None:
    """Readers (another process, a later run) see the old file or the new one, never half of one."""
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as tmp:
        tmp.write(payload)
    os.chmod(tmp.name, 0o666 & ~_UMASK)  # as open() would create it: a temporary file is private (0600)
    os.replace(tmp.name, path)


def write_tuned(workdir, name: str, chosen: dict, rows: list[dict], selected_on: str) -> pathlib.Path:
    """An evaluation method's settings chosen on validation data, beside the run as `<name>.json` (its
    checkpoints are never touched): {"chosen", "selected_on", "grid"}."""
    path = pathlib.Path(workdir) / f"{name}.json"
    record = {"chosen": chosen, "selected_on": selected_on, "grid": rows}
    write_atomically(path, (json.dumps(record, indent=2) + "\n").encode())
    return path


def read_tuned(workdir, name: str) -> dict:
    """The settings `write_tuned` saved beside the run, or {}."""
    path = pathlib.Path(workdir) / f"{name}.json" if workdir is not None else None
    return json.loads(path.read_text())["chosen"] if path is not None and path.exists() else {}


def reconcile_config(config, workdir: pathlib.Path, write: bool = True) -> None:
    """Write config.json for a new run, or check a rerun's config against the saved one."""
    path = workdir / "config.json"
    if not path.exists():
        if write:
            write_atomically(path, config_json(config).encode())
        return
    saved = dict(_flatten(load_config(path).to_dict()))
    current = dict(_flatten(config.to_dict()))
    changed = sorted(k for k in saved.keys() | current.keys() if saved.get(k) != current.get(k))
    frozen = [k for k in changed if k.startswith(FROZEN_PREFIXES)]
    if frozen and all(k in DATA_PATHS for k in frozen):
        _check_same_data(config, workdir, {k: (saved.get(k), current.get(k)) for k in frozen}, announce=write)
    elif frozen:
        key = frozen[0]
        raise UserError(f"{workdir} holds a run with {key}={saved.get(key)!r}, but the config says "
                        f"{current.get(key)!r}; use another --workdir")
    if not write:
        return
    for key in (k for k in changed if k not in DATA_PATHS):  # those were announced with their check
        logging.warning("config change on resume: %s: %r -> %r", key, saved.get(key), current.get(key))
    if changed:
        write_atomically(path, config_json(config).encode())


# Where the data is, not what it is: a change of these alone is allowed when the data is the same.
DATA_PATHS = ("data.corpus", "data.data_dir", "data.train_path", "data.valid_path", "data.test_path")


def _check_same_data(config, workdir: pathlib.Path, moved: dict, announce: bool) -> None:
    """Only where the data lies changed (a relative path, a moved folder): resume if the texts there,
    tokenized by the run's tokenizer, give exactly the token ids the run trained on (its data cache)."""
    first = next(iter(moved))
    keep = f"--config.{first}={moved[first][0]}"
    cache, tokenizer_path = workdir / "data", workdir / "tokenizer.json"
    if config.task != "lm" or not tokenizer_path.exists() or not all(
            (cache / f"{s}.npy").exists() for s in text_lib.SPLITS):
        raise UserError(f"{workdir} holds a run with {first}={moved[first][0]!r}, but the config says "
                        f"{moved[first][1]!r}, and this run keeps no data cache to compare the two by content; "
                        f"if it is the same data, resume with {keep}")
    texts, _ = text_lib.load_corpus_text(config.data)
    tokenizer = load_tokenizer(tokenizer_path)
    for split in text_lib.SPLITS:
        if not np.array_equal(tokenizer.encode(texts[split]), np.load(cache / f"{split}.npy")):
            raise UserError(f"{workdir} holds a run with {first}={moved[first][0]!r}; the data at "
                            f"{moved[first][1]!r} differs from it (its {split} split); give the run's data, "
                            f"e.g. {keep}, or use another --workdir for this data")
    for key, (old, new) in moved.items() if announce else ():
        logging.warning("data path change on resume: %s: %r -> %r (the same data: its token ids match the "
                        "run's)", key, old, new)


def load_data(config, workdir: pathlib.Path):
    """(tokenizer, {split: ids}, cached) without writing anything.

    From the workdir's cache when it holds one; else the corpus is read and
    checked and the tokenizer fitted on train — so bad data fails before a run
    directory is created.
    """
    cache = workdir / "data"
    tokenizer_path = workdir / "tokenizer.json"
    splits = text_lib.SPLITS
    if tokenizer_path.exists() and all((cache / f"{s}.npy").exists() for s in splits):
        return load_tokenizer(tokenizer_path), {s: np.load(cache / f"{s}.npy") for s in splits}, True
    texts, usual_tokenizer = text_lib.load_corpus_text(config.data)
    if tokenizer_path.exists():
        tokenizer = load_tokenizer(tokenizer_path)
    else:
        tokenizer = fit_tokenizer(config.data.tokenizer or usual_tokenizer, texts["train"], config.data)
    ids = {s: tokenizer.encode(texts[s]) for s in splits}
    if config.data.reverse:  # a backward model: every split read from its last token to its first
        ids = {s: np.ascontiguousarray(values[::-1]) for s, values in ids.items()}
    for split, values in ids.items():
        if len(values) < 2:
            raise UserError(f"the {split} split has {len(values)} token(s); need at least 2")
    return tokenizer, ids, False


def save_data(workdir: pathlib.Path, tokenizer, ids) -> None:
    cache = workdir / "data"
    cache.mkdir(parents=True, exist_ok=True)
    for split, values in ids.items():
        buffer = io.BytesIO()
        np.save(buffer, values)
        write_atomically(cache / f"{split}.npy", buffer.getvalue())
    for name, payload in tokenizer_sidecars(tokenizer).items():  # before tokenizer.json, which names them
        write_atomically(workdir / name, payload)
    write_atomically(workdir / "tokenizer.json", tokenizer_json(tokenizer).encode())


def prepare_data(config, workdir: pathlib.Path, write: bool = True):
    """(tokenizer, {split: ids}) for a run, saving the tokenizer and ids on first use when write is set."""
    tokenizer, ids, cached = load_data(config, workdir)
    if write and not cached:
        save_data(workdir, tokenizer, ids)
    return tokenizer, ids


class MetricLog:
    """Append-only JSON lines; on resume, records after the restored step (and test summaries) are dropped."""

    def __init__(self, path: pathlib.Path, enabled: bool = True):
        from rnnlm.tensorboard import EventFile
        self.path = path
        self.enabled = enabled
        self.events = EventFile(pathlib.Path(path).parent)  # the same records for TensorBoard

    def truncate_after(self, step: int) -> None:
        self.events.purge_from(step + 1)
        if not (self.enabled and self.path.exists()):
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line torn by a kill mid-write
                continue
            # Test and _best records summarise a finished run; the resumed run writes its own.
            if record["step"] <= step and record["split"] not in ("test", "valid_best", "test_best"):
                kept.append(line)
        write_atomically(self.path, "".join(line + "\n" for line in kept).encode())

    def write(self, record: dict) -> None:
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
            self.events.write(record)

    def close(self) -> None:
        self.events.close()


def logged_records(workdir) -> list[dict]:
    """The records of `<workdir>/metrics.jsonl` that parse (a line torn by a kill is skipped); [] if none."""
    path = pathlib.Path(workdir) / "metrics.jsonl"
    records = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def read_metrics(workdir) -> list[dict]:
    """The records of `<workdir>/metrics.jsonl`; a UserError when there are none."""
    path = pathlib.Path(workdir) / "metrics.jsonl"
    if not path.is_file():
        raise UserError(f"no metrics.jsonl in {workdir}")
    records = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                raise UserError(f"{path}:{number} is not a JSON record") from None
    if not records:
        raise UserError(f"{path} holds no records yet")
    return records


def existing_run(workdir) -> pathlib.Path:
    """The workdir of a finished or running training, or a UserError saying what is missing."""
    workdir = pathlib.Path(workdir)
    for name in ("config.json", "tokenizer.json", "checkpoints"):
        if name == "checkpoints" and (workdir / "model.safetensors").exists():
            continue  # an exported run (`rnnlm export`)
        if not (workdir / name).exists():
            raise UserError(f"{workdir} is not a training run: {name} is missing")
    return workdir
