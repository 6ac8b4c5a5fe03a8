"""rnnlm/train.py: the one training loop's guarantees, each tested once for both tasks (language model,
classifier): exact resume after SIGKILL and SIGTERM, a non-finite step stopped at or skipped, the time
budget agreed across processes, metric sums pending at a checkpoint."""

import dataclasses
import json
import pathlib
import random
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnlm import train as train_lib
from rnnlm.config import base_config
from rnnlm.data import classification as data_lib
from rnnlm.data.batching import make_streams
from rnnlm.errors import UserError
from rnnlm.runs import load_run
from rnnlm.tasks import classify, lm

REPO = pathlib.Path(__file__).resolve().parent.parent
TEXT = "".join(f"{i} little pigs went to market; {i * 7 % 13} came home.\n" for i in range(300))
WORDS = "good bad fine dull great poor film plot cast story".split()


@dataclasses.dataclass
class TaskCase:
    """One task's data and tiny config, and what the tests need to know about its batches."""

    name: str
    root: pathlib.Path

    def config(self, **train):
        config = base_config()
        if self.name == "lm":
            config.data.update(corpus=str(self.root / "pigs.txt"), tokenizer="char")
            config.train.update(bptt=16)
            config.sample.length = 0
        else:
            config.task = "classify"
            config.data.update(corpus=str(self.root / "reviews"), maxlen=12)
        config.model.update(embed_size=8, hidden_size=16, num_layers=1)
        config.train.update(batch_size=4, epochs=1, max_steps=30, log_every=5, checkpoint_every=5)
        config.train.update(train)
        config.eval.batch_size = 2
        return config

    def cli(self, workdir, *extra):
        """The CLI command of a longer run with dropout (3 epochs: ~200 steps of the language model, 90 of
        the classifier)."""
        common = ["--config.model.hidden_size=32", "--config.train.batch_size=8", "--config.train.log_every=5",
                  "--config.train.checkpoint_every=7", "--config.eval.batch_size=4", "--config.model.dropout=0.2",
                  "--config.train.epochs=3", "--config.train.max_steps=0"]
        if self.name == "lm":
            config = ["experiments/default.py:tiny", f"--config.data.corpus={self.root / 'pigs.txt'}",
                      "--config.train.bptt=24", "--config.sample.prompt=1 ", "--config.sample.length=20"]
        else:
            config = ["experiments/sst2_lstm.py:tiny", f"--config.data.corpus={self.root / 'reviews'}"]
        return [sys.executable, "-m", "rnnlm", "train", "--config", *config, "--workdir", str(workdir), *common, *extra]

    def poison_id(self, config, workdir):
        """The id of the one poisoned token, and the first step whose batch holds it."""
        if self.name == "lm":
            from rnnlm.workdir import load_data
            tokenizer, ids, _ = load_data(config, workdir)
            poison = tokenizer.index["#"]
            streams = make_streams(ids["train"], config.train.batch_size, config.train.bptt)
            return poison, int(np.nonzero(streams.tokens == poison)[1][0] // config.train.bptt) + 1
        tokenizer, splits, _ = classify.load_classification_data(config, workdir)
        poison = tokenizer.index["#"]
        train = splits["train"]
        row = next(i for i, s in enumerate(train.sequences) if poison in s.tolist())
        order = data_lib.batch_order(train.lengths, config.train.batch_size,
                                     np.random.default_rng([config.seed, 0]), config.data.bucket_by_length)
        return poison, next(i for i, batch in enumerate(order) if row in batch.tolist()) + 1

    def reach(self):
        """How far past its last checkpoint an interrupted run goes at most: every signal lands before the end."""
        return 40 if self.name == "lm" else 30

    def loss_name(self):
        return (lm, "window_loss") if self.name == "lm" else (classify, "batch_loss")


def _write_reviews(folder, seed, poisoned=False):
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", 240), ("valid", 24), ("test", 24)):
        lines = []
        for i in range(count):
            label = rng.randrange(2)
            words = [rng.choice(WORDS[label::2]) for _ in range(rng.randrange(2, 9))]
            if poisoned and split == "train" and i == 225:  # in the 11th batch of epoch 0
                words.insert(1, "#")
            lines.append(f"{label} {' '.join(words)}")
        (folder / f"{split}.txt").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module", params=["lm", "classify"])
def case(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    (root / "pigs.txt").write_text(TEXT)
    (root / "poisoned.txt").write_text(TEXT[:181] + "#" + TEXT[181:])  # one '#', early in the first train stream
    _write_reviews(root / "reviews", 0)
    _write_reviews(root / "poisoned_reviews", 0, poisoned=True)
    return TaskCase(request.param, root)


def history(workdir, splits=None):
    records = [json.loads(l) for l in (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()]
    for r in records:
        r.pop("tokens_per_sec", None)
        r.pop("train_seconds", None)  # wall time: a resumed run's differs
        r.pop("examples_per_sec", None)
    return [r for r in records if splits is None or r["split"] in splits]


def params_of(workdir):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(load_run(workdir).params)]


def wait_for_step(workdir, at_least, proc, timeout=120):
    """Poll the metric log until this process has written a train record at step >= `at_least` (or it ended)."""
    deadline = time.time() + timeout
    path = pathlib.Path(workdir) / "metrics.jsonl"
    before = path.read_text() if path.exists() else None  # records of the killed run, until truncated
    while time.time() < deadline and proc.poll() is None:
        if path.exists() and path.read_text() != before:
            steps = [json.loads(l)["step"] for l in path.read_text().splitlines() if '"train"' in l]
            if steps and steps[-1] >= at_least:
                return
        time.sleep(0.02)


def latest_checkpoint(workdir) -> int:
    root = pathlib.Path(workdir) / "checkpoints"
    return max([int(p.name) for p in root.iterdir() if p.name.isdigit()] if root.exists() else [0])


@pytest.mark.slow
def test_killed_and_preempted_runs_end_bitwise_equal_to_an_uninterrupted_one(case, tmp_path):
    """The language model runs with AWD-LSTM's techniques on, the average kept from the first step and
    window lengths drawn, so its average, its drawn lengths' position and its AR/TAR sums must resume too; it
    meets every signal. The classifier (its own batch order and metric sums, tail averaging on from its second
    epoch) is killed once and preempted once."""
    signals = ((signal.SIGKILL, signal.SIGKILL, signal.SIGTERM, signal.SIGINT) if case.name == "lm"
               else (signal.SIGKILL, signal.SIGTERM))
    output = interrupt_and_compare(case, tmp_path, signals, AWD if case.name == "lm" else TAIL_AVERAGE)
    if case.name == "lm":
        assert all("ar" in r and "tar" in r for r in history(tmp_path / "reference", {"train"}))
    else:
        assert "averaging: on from step 30 (the end of epoch 1)" in output  # 240 examples in batches of 8


TAIL_AVERAGE = ["--config.train.averaging=epoch", "--config.train.average_start_epoch=1"]  # on from epoch 2 of 3
AWD = ["--config.model.locked_dropout=True", "--config.model.weight_drop=0.3", "--config.model.embed_row_dropout=0.1",
       "--config.model.hidden_dropout=0.1", "--config.train.ar=2", "--config.train.tar=1",
       "--config.train.averaging=always", "--config.train.variable_bptt=True", "--config.train.bptt_bucket=24",
       "--config.train.optimizer=sgd", "--config.train.learning_rate=1.0", "--config.train.weight_decay=1e-4"]


def interrupt_and_compare(case, tmp_path, signals, extra=()):
    """Run `case.cli` once through, and once interrupted by `signals` at random steps and resumed: the
    histories and final parameters are equal, and rerunning the finished run changes nothing. Returns the
    uninterrupted run's output."""
    reference = tmp_path / "reference"
    out = subprocess.run(case.cli(reference, *extra), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    reference_output = out.stdout

    interrupted = tmp_path / "interrupted"
    rng = random.Random(0)
    kills = 0
    for sig in signals:
        proc = subprocess.Popen(case.cli(interrupted, *extra), cwd=REPO, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        # Somewhere in the next `reach` steps after any resume, so that every signal lands before the end.
        wait_for_step(interrupted, latest_checkpoint(interrupted) + rng.randrange(3, case.reach()), proc)
        proc.send_signal(sig)  # SIGKILL leaves the workdir's lock behind in no form: the next process takes it
        stdout, _ = proc.communicate(timeout=60)
        if sig in (signal.SIGTERM, signal.SIGINT):  # the first Ctrl-C saves like SIGTERM
            assert proc.returncode == 0  # preempted (or already finished): a clean exit either way
            if "preempted: checkpoint of step" in stdout:  # (the workdir's own path has "preempted" in it)
                kills += 1
        elif sig == signal.SIGKILL and proc.returncode == -signal.SIGKILL:
            kills += 1
    assert kills == len(signals)  # the run was really interrupted each time (not finished before the signal)
    out = subprocess.run(case.cli(interrupted, *extra), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]

    assert history(interrupted) == history(reference)
    for a, b in zip(params_of(interrupted), params_of(reference)):
        np.testing.assert_array_equal(a, b)
    # Rerunning the finished run changes nothing and says so.
    again = subprocess.run(case.cli(interrupted, *extra), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "the run is complete" in again.stdout, again.stderr[-2000:]
    assert history(interrupted) == history(reference)
    return reference_output


def _poison(monkeypatch, case, poison):
    module, name = case.loss_name()
    original = getattr(module, name)

    def poisoned(*args, **options):
        value, (carry, sums) = original(*args, **options)
        nan = jnp.where((args[-2]["tokens"] == poison).any(), jnp.nan, 0.0)
        return value + nan, (carry, {**sums, "nll_sum": sums["nll_sum"] + nan})
    monkeypatch.setattr(module, name, poisoned)


@pytest.mark.slow
def test_a_nonfinite_step_stops_the_run_naming_it_or_is_skipped(case, tmp_path, monkeypatch):
    config = case.config()
    if case.name == "lm":
        config.data.corpus = str(case.root / "poisoned.txt")
    else:
        config.data.corpus = str(case.root / "poisoned_reviews")
    poison, expected = case.poison_id(config, tmp_path / "run")
    assert 5 < expected < 30
    _poison(monkeypatch, case, poison)

    with pytest.raises(UserError, match=f"non-finite loss or gradient at step {expected}; "
                                        f"the last good checkpoint is step {(expected - 1) // 5 * 5}"):
        train_lib.train_and_evaluate(config, tmp_path / "run")
    steps = sorted(int(p.name) for p in (tmp_path / "run" / "checkpoints").iterdir() if p.name.isdigit())
    assert steps[-1] == (expected - 1) // 5 * 5  # nothing saved at or after the bad step
    good = load_run(tmp_path / "run")  # and the last good one is intact
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree_util.tree_leaves(good.params))

    config.train.skip_nonfinite = True
    results = train_lib.train_and_evaluate(config, tmp_path / "skip")
    assert np.isfinite(results["valid"]["loss"]) and results["step"] == 30
    train_records = history(tmp_path / "skip", {"train"})
    assert all(np.isfinite(r["loss"]) for r in train_records)


@pytest.mark.slow
def test_the_time_budget_stops_the_run_at_a_log_step(case, tmp_path, capsys):
    config = case.config(max_steps=0, epochs=3, time_budget_minutes=1e-9)
    results = train_lib.train_and_evaluate(config, tmp_path / "run")
    assert "stopped: reached train.time_budget_minutes=1e-09" in capsys.readouterr().out
    assert results["step"] == 5  # the first log step: the clock is read (and agreed on) there
    assert latest_checkpoint(tmp_path / "run") == 5


def test_the_time_budget_is_process_zeros_clock(monkeypatch):
    """Several processes: process 0's answer, broadcast, decides for all (the clocks differ)."""
    config = base_config()
    config.train.time_budget_minutes = 10.0
    monkeypatch.setattr(train_lib.jax, "process_count", lambda: 2)
    answers = []

    def broadcast(value):
        answers.append(bool(value))
        return np.array(True)  # process 0 is over its budget
    monkeypatch.setattr(train_lib.multihost_utils, "broadcast_one_to_all", broadcast)
    assert train_lib.stop_reason(config, 3, seconds=1.0) == "reached train.time_budget_minutes=10.0"
    assert answers == [False]  # this process's own clock said no
    assert train_lib.stop_reason(config, 3, seconds=1.0, check_clock=False) is None  # no sync off log steps


@pytest.mark.slow
def test_metric_sums_pending_at_a_checkpoint_survive_a_resume(case, tmp_path):
    """A run stopped between two log steps saves the unlogged sums; resumed, it logs what an uninterrupted
    run logs."""
    train_lib.train_and_evaluate(case.config(max_steps=12, checkpoint_every=0), tmp_path / "whole")
    train_lib.train_and_evaluate(case.config(max_steps=7, checkpoint_every=0), tmp_path / "parts")
    assert latest_checkpoint(tmp_path / "parts") == 7
    meta = json.loads((tmp_path / "parts" / "checkpoints" / "7" / "meta" / "metadata").read_text())
    assert meta["pending"]["steps"] == 2 and meta["position"] == 7
    train_lib.train_and_evaluate(case.config(max_steps=12, checkpoint_every=0), tmp_path / "parts")
    assert history(tmp_path / "parts", {"train"}) == history(tmp_path / "whole", {"train"})


@pytest.mark.slow
def test_the_same_seed_gives_the_same_curve(case, tmp_path):
    runs = [train_lib.train_and_evaluate(case.config(max_steps=10), tmp_path / f"run{i}") for i in range(2)]
    assert history(tmp_path / "run0") == history(tmp_path / "run1")
    assert runs[0]["test"] == runs[1]["test"]


@pytest.mark.slow
@pytest.mark.parametrize("cell", [{"cell": "mingru"}, {"cell": "mogrifier", "mogrifier_rounds": 3, "mogrifier_rank": 2}],
                         ids=["mingru", "mogrifier"])
def test_a_new_cell_resumes_bitwise_equal_to_an_uninterrupted_run(tmp_path, cell):
    """The parallel scan's cell and the Mogrifier's extra matrices: a run stopped at step 10 and resumed
    to 20 ends with the same parameters and history as one run to 20."""
    case = TaskCase("lm", tmp_path)
    (tmp_path / "pigs.txt").write_text(TEXT)

    def config(steps):
        c = case.config(max_steps=steps)
        c.model.update(dropout=0.2, **cell)
        return c

    train_lib.train_and_evaluate(config(20), tmp_path / "straight")
    train_lib.train_and_evaluate(config(10), tmp_path / "resumed")
    train_lib.train_and_evaluate(config(20), tmp_path / "resumed")
    assert history(tmp_path / "resumed", {"train"}) == history(tmp_path / "straight", {"train"})
    for a, b in zip(params_of(tmp_path / "resumed"), params_of(tmp_path / "straight")):
        np.testing.assert_array_equal(a, b)


def _tree_digest(folder: pathlib.Path) -> dict:
    import hashlib
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_finetune_starts_from_the_best_checkpoint_and_leaves_the_original_alone(tmp_path):
    """AWD-LSTM's finetune.py as train.init_from: the new run's first parameters are the original's best
    (averaged) ones, averaging is on from its first step, the original's files are not touched; its own
    workdir, a missing run and another vocabulary are one-line errors before anything is written."""
    case = TaskCase("lm", tmp_path)
    (tmp_path / "pigs.txt").write_text(TEXT)
    original = tmp_path / "original"
    train_lib.train_and_evaluate(case.config(max_steps=10, averaging="always", epochs=2), original)
    before = _tree_digest(original / "checkpoints")
    best = load_run(original, "best").params

    config = case.config(max_steps=10, averaging="always", init_from=str(original))
    task = lm.LanguageModelTask(config, tmp_path / "tuned", train_lib.sharding.make_mesh())
    start = train_lib.finetune_start(config, tmp_path / "tuned", task)
    for a, b in zip(jax.tree_util.tree_leaves(start), jax.tree_util.tree_leaves(best)):
        np.testing.assert_array_equal(a, b)
    results = train_lib.train_and_evaluate(config, tmp_path / "tuned")
    assert results["step"] == 10 and np.isfinite(results["test"]["loss"])
    assert _tree_digest(original / "checkpoints") == before

    # Its own workdir: the saved config (no init_from) refuses it first.
    for init_from, workdir, message in [(original, original, "use another --workdir"),
                                        (tmp_path / "nothing", tmp_path / "a", "no finished run in"),
                                        (original, tmp_path / "b", "another vocabulary")]:
        bad = case.config(max_steps=10, averaging="always", init_from=str(init_from))
        if message == "another vocabulary":
            (tmp_path / "other.txt").write_text(TEXT.upper())
            bad.data.corpus = str(tmp_path / "other.txt")
        with pytest.raises(UserError, match=message):
            train_lib.train_and_evaluate(bad, workdir)
        assert workdir == original or not workdir.exists()
    assert _tree_digest(original / "checkpoints") == before
