"""rnnlm/tasks/lm.py: the language model trains, scores every token of a split with its state carried,
and reports per word and character."""

import collections
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnlm import fast, sharding
from rnnlm.config import base_config
from rnnlm.loss import token_nll
from rnnlm.models import LanguageModel, init_params
from rnnlm.tasks.lm import Evaluator, window_loss
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


@pytest.mark.slow
def test_a_tiny_model_overfits_a_tiny_text(tmp_path):
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
    assert abs(results["valid"]["bits_per_char"] - results["valid"]["loss"] / np.log(2)) < 1e-9


@pytest.mark.slow
def test_the_evaluator_scores_every_token_with_the_state_carried_across_windows():
    """The split's total NLL, window by window over 3 streams, equals each stream's contiguous
    sequence scored in one call of the reference model from a zero state."""
    model = LanguageModel(vocab_size=7, embed_size=6, hidden_size=6, num_layers=2, cell="lstm")
    params = init_params(model, jax.random.PRNGKey(0))
    ids = np.random.default_rng(0).integers(0, 7, size=58).astype(np.int32)  # 57 pairs: 19 per stream
    got = Evaluator(model, sharding.make_mesh(1), batch_size=3, bptt=4)(params, ids, char_level=True)
    reference = model.clone(speed=fast.Speed(reference=True))
    streams = jnp.asarray(ids[:57].reshape(3, 19)), jnp.asarray(ids[1:].reshape(3, 19))  # each row contiguous
    logits, _ = jax.jit(lambda p: reference.apply({"params": p}, streams[0], reference.initial_carry(3)))(params)
    total = float(token_nll(logits, streams[1]).sum())
    np.testing.assert_allclose(got["loss"], total / 57, rtol=1e-5)
    np.testing.assert_allclose(got["perplexity"], np.exp(total / 57), rtol=1e-5)


def test_the_loss_scale_of_each_setting():
    """token_mean divides the window's summed NLL by its weighted tokens, time_sum by its streams."""
    model = LanguageModel(vocab_size=7, embed_size=4, hidden_size=4, num_layers=1)
    params = init_params(model, jax.random.PRNGKey(0))
    batch = {"tokens": jnp.ones((2, 3), jnp.int32), "targets": jnp.zeros((2, 3), jnp.int32),
             "weights": jnp.array([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])}
    carry = model.initial_carry(2)
    mean, (_, sums) = window_loss(model, "token_mean", params, carry, batch, jax.random.PRNGKey(0))
    total, _ = window_loss(model, "time_sum", params, carry, batch, jax.random.PRNGKey(0))
    assert float(sums["tokens"]) == 4.0
    np.testing.assert_allclose(float(mean), float(sums["nll_sum"]) / 4, rtol=1e-6)
    np.testing.assert_allclose(float(total), float(sums["nll_sum"]) / 2, rtol=1e-6)



@pytest.mark.slow
def test_an_ensemble_mixes_every_tokens_probability(char_run, tmp_path, capsys):
    """Two seeds of one character model: each member's figure is its own evaluation's, and the ensemble's loss
    is the mean of the two models' probabilities of each token, computed from whole streams read by
    rnnlm.scoring (another compiled path) in the evaluation's layout, built here by hand."""
    import math
    import shutil
    from rnnlm import cli
    from rnnlm.config import load_config
    from rnnlm.runs import load_run
    from rnnlm.scoring import stream_log_probs
    from rnnlm.tasks.lm import evaluate_ensemble
    from rnnlm.workdir import prepare_data
    config = load_config(char_run / "config.json")
    config.seed = 1
    train_and_evaluate(config, tmp_path / "other")
    runs = [load_run(char_run), load_run(tmp_path / "other")]
    members, ensemble = evaluate_ensemble(runs, "valid")
    for run, metrics in zip(runs, members):
        assert metrics["loss"] == pytest.approx(run.evaluate("valid")["loss"], rel=1e-5)
    ids = prepare_data(config, char_run)[1]["valid"]
    streams, per_stream = config.eval.batch_size, math.ceil((len(ids) - 1) / config.eval.batch_size)
    inputs, targets = ids[:-1], ids[1:]
    logps = []
    for run in runs:
        logp = [stream_log_probs(run.model, run.params, inputs[None, b * per_stream:(b + 1) * per_stream],
                                 targets[None, b * per_stream:(b + 1) * per_stream])[0] for b in range(streams)]
        logps.append(np.concatenate(logp))
    mixed = np.log((np.exp(logps[0]) + np.exp(logps[1])) / 2)
    assert ensemble["loss"] == pytest.approx(-mixed.mean(), rel=1e-5)
    assert ensemble["loss"] < (members[0]["loss"] + members[1]["loss"]) / 2  # mixing helps when members differ
    assert abs(members[0]["loss"] - members[1]["loss"]) > 1e-3
    capsys.readouterr()
    assert cli.main(["eval", "--workdir", str(char_run), "--workdir", str(tmp_path / "other"), "--split", "valid"]) == 0
    assert f"valid, ensemble of 2: loss {ensemble['loss']:.4f}" in capsys.readouterr().out
    shutil.copytree(tmp_path / "other", tmp_path / "renamed")  # the same weights over a tokenizer with two symbols swapped
    spec = json.loads((tmp_path / "renamed" / "tokenizer.json").read_text())
    spec["symbols"][1], spec["symbols"][2] = spec["symbols"][2], spec["symbols"][1]
    (tmp_path / "renamed" / "tokenizer.json").write_text(json.dumps(spec))
    assert cli.main(["eval", "--workdir", str(char_run), "--workdir", str(tmp_path / "renamed")]) == 2
    err = capsys.readouterr().err
    assert "different tokenizers" in err and len(err.strip().splitlines()) == 1
