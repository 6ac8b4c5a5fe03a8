"""Training: overfitting a tiny text, learning-rate schedules, and the CLI end to end."""

import collections
import json
import math
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rnnlm import cli
from rnnlm.config import base_config
from rnnlm.decoder_loss import window_nll
from rnnlm.errors import UserError
from rnnlm.models import LanguageModel
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


@pytest.mark.parametrize("tie", [False, True])
def test_chunked_losses_equal_one_pass_over_all_logits(tie):
    """rnnlm/decoder_loss.py: eval (lax.map) and train (fused VJP) in time chunks, padded with zero weights,
    give the loss and gradients of optax's cross-entropy over the whole window's logits."""
    model = LanguageModel(vocab_size=11, embed_size=8, hidden_size=8 if tie else 6, num_layers=1, cell="lstm",
                          tie_weights=tie)
    params = model.init({"params": jax.random.PRNGKey(0)}, jnp.zeros((1, 1), jnp.int32), model.initial_carry(1))["params"]
    rng = np.random.default_rng(0)
    features = jnp.asarray(rng.normal(size=(3, 7, model.hidden_size)), jnp.float32)
    targets = jnp.asarray(rng.integers(0, 11, (3, 7)), jnp.int32)
    weights = jnp.asarray(rng.random((3, 7)) > 0.3, jnp.float32)

    def reference(params, features):
        logits = model.apply({"params": params}, features, method=model.decode)
        return (optax.softmax_cross_entropy_with_integer_labels(logits, targets) * weights).sum()
    # Scaled by 1e3 the logits reach the thousands: exp overflows unless a shift of at least the row's
    # maximum comes off first (evaluation shifts by the target's logit and must fall back to the maximum
    # there). The third case is hard for the training shift (`_fused_forward`: the product's row max plus
    # part of the bias): the bias spans 88, and every row's two largest logits, 5 apart, sit in the
    # columns of the smallest biases while the product peaks there. A shift with the bias's whole max
    # would sit 83 and 88 above them and flush the second to zero (a ~0.7% probability).
    bias = jnp.concatenate([jnp.array([-38.0, -43.0]), jnp.linspace(-10.0, 45.0, 9)])
    worst = {**params, "decoder_bias": bias}
    if tie:
        worst["embedding"] = worst["embedding"].at[:2].set(30.0)
    else:
        worst["decoder"] = worst["decoder"].at[:, :2].set(30.0)
    cases = [(params, features), (params, 1e3 * features), (worst, jnp.abs(features) + 0.5)]
    wants = [jax.value_and_grad(reference, argnums=(0, 1))(p, f) for p, f in cases]
    for chunk_logits in (3 * 11 * 2, 3 * 11 * 3, 10**6):  # 4 chunks of 2 steps, 3 of 3 (7 steps: padded), or 1
        for train in (False, True):
            def chunked(params, features):
                return window_nll(model, params, features, targets, weights, train=train, chunk_logits=chunk_logits)
            compiled = jax.jit(jax.value_and_grad(chunked, argnums=(0, 1)))
            for (p, f), (want, want_grads) in zip(cases, wants):
                got, grads = compiled(p, f)
                np.testing.assert_allclose(float(got), float(want), rtol=1e-5)
                for g, w in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(want_grads)):
                    # Float32 error is relative to a leaf's scale: the training loss subtracts the one-hot
                    # term from separately summed products, so where a row's or column's gradient cancels
                    # to ~0 what is left is rounding of the size of its terms (the weight, 30, here).
                    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6 * max(1.0, float(np.abs(w).max())))


def test_a_resumed_run_may_change_unrolling_but_not_the_model(tmp_path):
    from rnnlm.workdir import reconcile_config

    config = base_config()
    reconcile_config(config, tmp_path)
    config.model.unroll, config.model.eval_unroll, config.model.fold_embedding, config.model.wavefront = 2, 4, False, False
    reconcile_config(config, tmp_path)  # speed only: allowed, and the new values written
    assert '"eval_unroll": 4' in (tmp_path / "config.json").read_text()
    assert '"fold_embedding": false' in (tmp_path / "config.json").read_text()
    assert '"wavefront": false' in (tmp_path / "config.json").read_text()
    config.model.hidden_size += 1
    with pytest.raises(UserError, match="model.hidden_size"):
        reconcile_config(config, tmp_path)
