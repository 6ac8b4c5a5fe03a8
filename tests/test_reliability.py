"""Reliability: exact resume after SIGKILL, SIGTERM preemption, non-finite losses, damaged checkpoints, disk errors."""

import hashlib
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
import orbax.checkpoint as ocp
import pytest

import rnnlm.train as train_lib
from rnnlm import decoder_loss
from rnnlm.config import base_config
from rnnlm.data.batching import make_streams
from rnnlm.errors import UserError
from rnnlm.inference import load_run

REPO = pathlib.Path(__file__).resolve().parent.parent
TEXT = "".join(f"{i} little pigs went to market; {i * 7 % 13} came home.\n" for i in range(300))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "pigs.txt"
    path.write_text(TEXT)
    return path


def command(workdir, corpus, *extra):
    return [sys.executable, "-m", "rnnlm", "train", "--config", "experiments/default.py:tiny", "--workdir", str(workdir),
            f"--config.data.corpus={corpus}", "--config.train.epochs=5", "--config.train.max_steps=0",
            "--config.model.hidden_size=64", "--config.train.batch_size=8", "--config.train.bptt=24",
            "--config.train.log_every=5", "--config.train.checkpoint_every=7", "--config.eval.batch_size=4",
            "--config.model.dropout=0.2", "--config.sample.prompt=1 ",
            "--config.sample.length=20", *extra]


def history(workdir):
    records = [json.loads(l) for l in (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()]
    for r in records:
        r.pop("tokens_per_sec", None)
    return records


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


def test_killed_and_preempted_runs_end_bitwise_equal_to_an_uninterrupted_one(tmp_path, corpus):
    reference = tmp_path / "reference"
    out = subprocess.run(command(reference, corpus), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]

    interrupted = tmp_path / "interrupted"
    rng = random.Random(0)
    kills = 0
    for sig in (signal.SIGKILL, signal.SIGKILL, signal.SIGTERM):
        proc = subprocess.Popen(command(interrupted, corpus), cwd=REPO, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        # Somewhere in the next ~100 of the ~300 steps (5 epochs), after any resume.
        wait_for_step(interrupted, latest_checkpoint(interrupted) + rng.randrange(3, 100), proc)
        proc.send_signal(sig)
        stdout, _ = proc.communicate(timeout=60)
        if sig == signal.SIGTERM:
            assert proc.returncode == 0  # preempted (or already finished): a clean exit either way
            if "preempted" in stdout:
                kills += 1
                assert "checkpoint of step" in stdout
        elif sig == signal.SIGKILL and proc.returncode == -signal.SIGKILL:
            kills += 1
    assert kills >= 2  # the run was really interrupted (not finished before the signal)
    out = subprocess.run(command(interrupted, corpus), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]

    assert history(interrupted) == history(reference)
    for a, b in zip(params_of(interrupted), params_of(reference)):
        np.testing.assert_array_equal(a, b)


def tiny_config(corpus, **train):
    config = base_config()
    config.data.corpus = str(corpus)
    config.data.tokenizer = "char"
    config.model.update(embed_size=8, hidden_size=16, num_layers=1)
    config.train.update(batch_size=4, bptt=16, epochs=1, max_steps=30, log_every=5, checkpoint_every=5)
    config.train.update(train)
    config.eval.batch_size = 2
    config.sample.length = 0
    return config


def test_nonfinite_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    text = TEXT[:181] + "#" + TEXT[181:]  # one '#', early in the first train stream
    corpus = tmp_path / "poisoned.txt"
    corpus.write_text(text)
    config = tiny_config(corpus)
    original = decoder_loss.window_nll
    poison_id = {}

    def poisoned_nll(model, params, features, targets, weights, **kwargs):
        poisoned = (targets == poison_id["id"]).any()
        return jnp.where(poisoned, jnp.nan, original(model, params, features, targets, weights, **kwargs))

    monkeypatch.setattr(decoder_loss, "window_nll", poisoned_nll)
    # The '#' id depends on the fitted vocabulary; the step on the stream layout.
    from rnnlm.workdir import prepare_data
    tok, ids = prepare_data(config, tmp_path / "run")
    poison_id["id"] = tok.index["#"]
    streams = make_streams(ids["train"], 4, 16)
    expected = int(np.nonzero(streams.targets == poison_id["id"])[1][0] // 16) + 1
    assert 5 < expected < 30

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


def tree_digest(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(pathlib.Path(root).rglob("*")) if p.is_file()}


def flip_bytes(step_dir):
    """Invert one byte in every 64 of every array data file of the step.

    Every array is hit, whatever order the asynchronous writer laid them out in
    (16 bytes in the middle of a file sometimes hit only optimizer state, which
    `eval` rightly does not read)."""
    for data in (step_dir / "state").rglob("ocdbt.process_0/d/*"):
        payload = bytearray(data.read_bytes())
        for i in range(0, len(payload), 64):
            payload[i] ^= 0xFF
        data.write_bytes(bytes(payload))


@pytest.mark.parametrize("damage", ["flip", "truncate", "missing", "silent"])
def test_damaged_latest_checkpoint_is_set_aside_and_the_previous_one_used(tmp_path, corpus, damage, capsys):
    config = tiny_config(corpus, max_steps=15)
    train_lib.train_and_evaluate(config, tmp_path / "run")
    checkpoints = tmp_path / "run" / "checkpoints"
    latest = checkpoints / "15"
    if damage == "flip":
        flip_bytes(latest)
    elif damage == "truncate":
        for p in (latest / "state").rglob("ocdbt.process_0/d/*"):
            p.write_bytes(p.read_bytes()[:10])
    elif damage == "missing":
        for p in (latest / "state").rglob("ocdbt.process_0/d/*"):
            p.unlink()
    else:  # arrays that decode but are not the ones written: only the fingerprint can tell
        meta = latest / "meta" / "metadata"
        saved = json.loads(meta.read_text())
        saved["fingerprint"] = {k: hashlib.sha256(v.encode()).hexdigest() for k, v in saved["fingerprint"].items()}
        meta.write_text(json.dumps(saved))
    (checkpoints / "20.orbax-checkpoint-tmp-1234").mkdir()  # a save that was killed half-way
    assert train_lib.Checkpoints(tmp_path / "run").latest_step() == 15

    from rnnlm import cli
    capsys.readouterr()
    assert cli.main(["eval", "--workdir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rnnlm: error: checkpoint 15") and "\n" not in err

    config.train.max_steps = 20
    results = train_lib.train_and_evaluate(config, tmp_path / "run")
    assert results["step"] == 20
    out = capsys.readouterr().out
    assert "resumed from step 10" in out
    assert [p.name.split("-")[0] for p in (tmp_path / "run" / "checkpoints-damaged").iterdir()] == ["15"]


def test_unwritable_checkpoint_stops_the_run(tmp_path, corpus, monkeypatch):
    def full_disk(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ocp.CheckpointManager, "save", full_disk)
    with pytest.raises(UserError, match="cannot write the checkpoint of step 5 .*No space left on device"):
        train_lib.train_and_evaluate(tiny_config(corpus), tmp_path / "run")


def test_old_checkpoints_are_pruned_and_the_best_kept(tmp_path, corpus):
    config = tiny_config(corpus, max_steps=0, epochs=3, checkpoint_every=7, keep_checkpoints=2)
    train_lib.train_and_evaluate(config, tmp_path / "run")
    checkpoints = tmp_path / "run" / "checkpoints"
    steps = sorted(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit())
    valid = {r["step"]: r["loss"] for r in history(tmp_path / "run") if r["split"] == "valid"}
    best = min(valid, key=valid.get)
    assert steps[-2:] == sorted(steps)[-2:] and best in steps and len(steps) <= 3
    assert not [p for p in checkpoints.iterdir() if "tmp" in p.name]  # atomic: no half-written steps left


def test_same_seed_same_curve(tmp_path, corpus):
    runs = [train_lib.train_and_evaluate(tiny_config(corpus, max_steps=10), tmp_path / f"run{i}") for i in range(2)]
    assert history(tmp_path / "run0") == history(tmp_path / "run1")
    assert runs[0]["test"] == runs[1]["test"]


def test_metric_log_survives_a_line_torn_by_a_kill(tmp_path):
    from rnnlm.workdir import MetricLog
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 5, "split": "train", "loss": 1.0}\n{"step": 10, "split": "valid", "loss": 0.9}\n'
                    '{"step": 15, "split": "test", "loss": 0.8}\n{"step": 20, "spl')
    log = MetricLog(path)
    log.truncate_after(15)
    assert [json.loads(l)["step"] for l in path.read_text().splitlines()] == [5, 10]
    log.close()
