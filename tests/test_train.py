"""Training: overfitting a tiny text, learning-rate schedules, and the CLI end to end."""

import collections
import json
import math
import subprocess
import sys

import numpy as np

from rnnlm import cli
from rnnlm.config import base_config
from rnnlm.optim import LearningRateController
from rnnlm.train import train_and_evaluate

TEXT = "the quick brown fox jumps over the lazy dog\n" * 120


def tiny_config(corpus, **train):
    config = base_config()
    config.data.corpus = str(corpus)
    config.data.tokenizer = "char"
    config.model.update(embed_size=16, hidden_size=48, num_layers=1)
    config.train.update(batch_size=4, bptt=32, epochs=50, max_steps=150, optimizer="adam",
                        learning_rate=1e-2, log_every=50, checkpoint_every=0)
    config.train.update(train)
    config.eval.batch_size = 2
    config.sample.update(length=44, temperature=0.0, prompt="the quick")
    return config


def test_tiny_model_overfits_tiny_text(tmp_path):
    corpus = tmp_path / "fox.txt"
    corpus.write_text(TEXT)
    counts = np.array(list(collections.Counter(TEXT).values()), np.float64)
    unigram_entropy = -(counts / counts.sum() * np.log(counts / counts.sum())).sum()  # nats per char

    results = train_and_evaluate(tiny_config(corpus), tmp_path / "run")
    assert results["valid"]["loss"] < 0.1 * unigram_entropy
    assert results["sample"].startswith("the quick brown fox jumps over the lazy dog")
    records = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train_losses = [r["loss"] for r in records if r["split"] == "train"]
    assert train_losses[-1] < train_losses[0] / 5
    assert all(r["grad_norm"] > 0 for r in records if r["split"] == "train")


def test_zaremba_and_plateau_schedules():
    c = base_config().train
    c.update(lr_schedule="zaremba", learning_rate=1.0, lr_decay=0.5, decay_start_epoch=4)
    zaremba = LearningRateController.from_config(c)
    assert [zaremba.start_epoch(e) for e in range(7)] == [1, 1, 1, 1, 0.5, 0.25, 0.125]
    c.update(lr_schedule="plateau", learning_rate=20.0, lr_decay=0.25)
    plateau = LearningRateController.from_config(c)
    rates = []
    for valid_loss in [5.0, 4.0, 4.5, 3.9, 3.9]:
        rates.append(plateau.start_epoch(len(rates)))
        plateau.end_epoch(valid_loss)
    assert rates == [20, 20, 20, 5, 5] and plateau.rate == 1.25
    restored = LearningRateController.from_config(c, plateau.to_dict())
    assert restored.rate == 1.25 and restored.best_valid_loss == 3.9
    c.lr_schedule = "cosine"
    assert LearningRateController.from_config(c).start_epoch(3) is None


def run_cli(*args):
    return cli.main([str(a) for a in args])


def test_cli_pulse_train_checkpoint_resume_eval_generate(tmp_path, capsys, caplog):
    """rnnlm train (stops at step 12) -> train again (resumes to 20) -> eval -> generate."""
    workdir = tmp_path / "run"
    tiny = ["--config", "experiments/default.py:tiny", "--workdir", workdir, "--config.model.cell=gru"]
    assert run_cli("train", *tiny, "--config.train.max_steps=12", "--config.train.checkpoint_every=5") == 0
    steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    assert steps == [5, 10, 12]
    first = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]

    assert run_cli("train", *tiny, "--config.train.max_steps=20", "--config.train.checkpoint_every=5") == 0
    out = capsys.readouterr().out
    assert "stopped: reached train.max_steps=20" in out and "sample:" in out
    assert "resumed from step 12" in out
    assert "config change on resume: train.max_steps: 12 -> 20" in caplog.text  # a safe change, logged
    records = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
    train_steps = [r["step"] for r in records if r["split"] == "train"]
    assert train_steps == [5, 10, 15, 20]  # resumed from 12, history kept
    assert [r for r in records if r["step"] <= 10] == [r for r in first if r["step"] <= 10]

    assert run_cli("eval", "--workdir", workdir, "--split", "valid") == 0
    out = capsys.readouterr().out
    assert out.startswith("valid: loss ") and "(step 20," in out
    loss = float(out.split()[2].rstrip(","))
    assert 0 < loss < math.log(200)

    assert run_cli("generate", "--workdir", workdir, "--prompt", "The ", "--length", "25", "--top-k", "5",
                   "--num-samples", "2", "--seed", "3") == 0
    samples = capsys.readouterr().out.splitlines()
    assert len([s for s in samples if s.startswith("The ")]) == 2


def test_changed_model_shape_is_refused_and_run_left_intact(tmp_path, capsys):
    workdir = tmp_path / "run"
    tiny = ["--config", "experiments/default.py:tiny", "--workdir", workdir, "--config.train.max_steps=2",
            "--config.sample.length=0"]
    assert run_cli("train", *tiny) == 0
    before = {p: p.read_bytes() for p in workdir.rglob("*") if p.is_file()}
    assert run_cli("train", *tiny, "--config.model.hidden_size=64") == 2
    assert "model.hidden_size=32" in capsys.readouterr().err
    assert before == {p: p.read_bytes() for p in workdir.rglob("*") if p.is_file()}
    assert run_cli("generate", "--workdir", workdir, "--prompt", "☃") == 2
    assert "not in the vocabulary" in capsys.readouterr().err


def test_python_dash_m_entry_point():
    out = subprocess.run([sys.executable, "-m", "rnnlm", "corpora"], capture_output=True, text=True, check=True).stdout
    assert "ptb" in out and "tinyshakespeare" in out and "default" in out


def test_chunked_eval_step_equals_the_whole_window_loss(monkeypatch):
    """The evaluator's decoder + loss in time chunks (padded, zero weights) = one pass over all logits."""
    import functools

    import jax
    import jax.numpy as jnp
    import optax

    from rnnlm import train as train_lib
    from rnnlm.models import LanguageModel

    model = LanguageModel(vocab_size=11, embed_size=6, hidden_size=8, num_layers=2, cell="lstm")
    params = model.init({"params": jax.random.PRNGKey(0)}, jnp.zeros((1, 1), jnp.int32), model.initial_carry(1))["params"]
    rng = np.random.default_rng(0)
    tokens, targets = (jnp.asarray(rng.integers(0, 11, (3, 7)), jnp.int32) for _ in range(2))
    weights = jnp.asarray(rng.random((3, 7)) > 0.3, jnp.float32)
    logits, want_carry = model.apply({"params": params}, tokens, model.initial_carry(3))
    want = (optax.softmax_cross_entropy_with_integer_labels(logits, targets) * weights).sum()
    batch = {"tokens": tokens, "targets": targets, "weights": weights}
    for chunk_logits in (3 * 11 * 2, 3 * 11 * 3, 10**6):  # 2 or 3 steps a chunk (7 steps: padded), or all 7
        monkeypatch.setattr(train_lib, "EVAL_CHUNK_LOGITS", chunk_logits)
        carry, nll, count = jax.jit(functools.partial(train_lib.eval_step, model=model))(
            params, model.initial_carry(3), batch)
        np.testing.assert_allclose(float(nll), float(want), rtol=1e-5)
        assert float(count) == float(weights.sum())
        for got, expected in zip(jax.tree_util.tree_leaves(carry), jax.tree_util.tree_leaves(want_carry)):
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
