"""rnnlm/tasks/classify.py: the classifier end to end through the CLI, its metrics and its model selection."""

import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnlm import cli
from rnnlm.config import base_config, validate
from rnnlm.errors import UserError
from rnnlm.loss import token_nll
from rnnlm.models import Classifier, init_params
from rnnlm.tasks.classify import (adversarial_perturbation, batch_loss, classification_metrics, format_confusion,
                                  selection_score)


# --- the CLI end to end --------------------------------------------------------------------

@pytest.fixture(scope="module")
def seed_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("seed") / "run"
    assert cli.main(["train", "--config", "experiments/seed_classifier.py", "--workdir", str(workdir)]) == 0
    return workdir


@pytest.mark.slow
def test_seed_classifier_reaches_full_train_accuracy(seed_run, capsys):
    records = [json.loads(line) for line in (seed_run / "metrics.jsonl").read_text().splitlines()]
    valid = [r for r in records if r["split"] == "valid"]  # valid = train = the three sentences
    assert len(valid) == 10 and valid[-1]["accuracy"] == 1.0
    train = [r for r in records if r["split"] == "train"]
    assert train[-1]["loss"] < train[0]["loss"]
    capsys.readouterr()
    assert cli.main(["eval", "--workdir", str(seed_run), "--split", "train"]) == 0
    out = capsys.readouterr().out
    assert "train: accuracy 100.00% of 3" in out and "confusion matrix" in out
    assert cli.main(["predict", "--workdir", str(seed_run), "a dull and boring film , i hated it", "x " * 12]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("1\t") and "(truncated to 10 words)" in lines[1]
    probabilities = [float(p.split("=")[1]) for p in lines[0].split("\t")[1].split()]
    assert len(probabilities) == 3 and abs(sum(probabilities) - 1) < 2e-3


@pytest.mark.slow
def test_an_ensemble_scores_the_mean_of_its_members_probabilities(seed_run, char_run, tmp_path, capsys):
    """`rnnlm eval --workdir A --workdir B`: the members' own figures, then the mean of their probabilities,
    checked against the two runs' `predict` (a separate compiled path) averaged by hand."""
    from rnnlm.config import EXPERIMENTS_DIR, load_experiment_module
    from rnnlm.runs import load_run
    SENTENCES = load_experiment_module(EXPERIMENTS_DIR / "seed_classifier.py").SENTENCES
    other = tmp_path / "other"  # another seed, trained less, so the members disagree in their probabilities
    assert cli.main(["train", "--config", "experiments/seed_classifier.py", "--workdir", str(other),
                     "--config.seed=1", "--config.train.epochs=3"]) == 0
    capsys.readouterr()
    assert cli.main(["eval", "--workdir", str(seed_run), "--workdir", str(other), "--split", "train"]) == 0
    out = capsys.readouterr().out.splitlines()
    labels = [int(line.split()[0]) for line in SENTENCES]
    texts = [line.split(" ", 1)[1] for line in SENTENCES]
    each = [np.array([list(p["probabilities"].values()) for p in load_run(w).predict(texts)]) for w in (seed_run, other)]
    mean = (each[0] + each[1]) / 2
    for line, probabilities in zip(out, each):  # each member's line first
        assert float(line.split("loss ")[1].split()[0]) == pytest.approx(
            -np.mean(np.log(probabilities[np.arange(3), labels])), abs=1e-4)
    ensemble = out[2]
    assert ensemble.startswith("train, ensemble of 2: accuracy")
    assert float(ensemble.split("loss ")[1].split()[0]) == pytest.approx(
        -np.mean(np.log(mean[np.arange(3), labels])), abs=1e-4)
    assert f"{np.mean(mean.argmax(1) == labels):.2%} of 3" in ensemble
    assert not np.allclose(each[0], each[1], atol=1e-2)  # a real mixture, not one model twice
    for extra, message in ((["--workdir", str(seed_run)], "repeated"), (["--workdir", str(char_run)], "language model"),
                           (["--workdir", str(other), "--cache"], "takes no --dynamic")):
        assert cli.main(["eval", "--workdir", str(seed_run), *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_resume_and_counted_bad_lines(tmp_path, capsys):
    """A user folder with empty lines and an over-long sentence: counted and logged; the run resumes."""
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "train.txt").write_text("pos a good film\n\nneg a bad film\npos " + "very " * 30 + "good\n")
    (folder / "valid.txt").write_text("pos good\nneg bad\n")
    (folder / "test.txt").write_text("neg bad bad\n")
    args = ["train", "--config", "experiments/sst2_lstm.py:tiny", "--workdir", str(tmp_path / "run"),
            f"--config.data.corpus={folder}", "--config.data.maxlen=8", "--config.train.batch_size=2",
            "--config.data.bucket_by_length=False", "--config.model.bidirectional=False",
            "--config.train.max_steps=4", "--config.train.epochs=3", "--config.eval.batch_size=2"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "train: 1 sentence(s) truncated to maxlen=8 (post), 1 empty line(s) skipped" in out
    data = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert data["split"] == "data" and data["train_truncated"] == 1 and data["train_empty_lines"] == 1
    assert cli.main(args[:-3] + ["--config.train.max_steps=6", "--config.train.epochs=3",
                                 "--config.eval.batch_size=2"]) == 0
    assert "resumed from step 4 (epoch 3, batch 0)" in capsys.readouterr().out


def test_metrics_and_confusion_by_hand():
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    labels = np.array([0, 1, 1, 1])
    m = classification_metrics(probabilities, labels)
    assert m["accuracy"] == 0.75 and m["examples"] == 4 and m["confusion"] == [[1, 0], [1, 2]]
    np.testing.assert_allclose(m["loss"], -np.mean(np.log([0.9, 0.8, 0.4, 0.7])))
    assert format_confusion(m["confusion"], ["neg", "pos"]).splitlines()[2].split() == ["pos", "1", "2"]


def test_the_best_checkpoint_has_the_best_valid_accuracy_and_loss_breaks_ties():
    assert selection_score({"accuracy": 0.9, "loss": 3.0}) < selection_score({"accuracy": 0.89, "loss": 0.1})
    assert selection_score({"accuracy": 0.9, "loss": 0.2}) < selection_score({"accuracy": 0.9, "loss": 0.3})


# --- adversarial training on the embedded words (Miyato et al. 2017) ------------------------------------------

def test_the_adversarial_perturbation_is_epsilon_along_each_examples_gradient():
    grad = np.random.default_rng(0).normal(size=(3, 4, 5)).astype(np.float32)
    grad[2] = 0.0  # a filler row: no gradient, no perturbation
    r = np.asarray(adversarial_perturbation(jnp.asarray(grad), 0.7))
    for b in range(2):
        np.testing.assert_allclose(r[b], 0.7 * grad[b] / np.sqrt((grad[b] ** 2).sum()), rtol=1e-6)
    assert np.all(r[2] == 0.0)


@pytest.fixture(scope="module")
def adversarial_setup():
    """A bi-LSTM classifier without dropout and a batch in which every real token id occurs once, so that moving
    the embedded word at (b, t) is moving embedding row tokens[b, t]: the reference below needs no perturbation
    argument. Row 1 ends in padding (masked), row 2 is a filler row (weight 0)."""
    model = Classifier(vocab_size=16, num_classes=3, embed_size=4, hidden_size=5, num_layers=1,
                       bidirectional=True, pooling="max")
    params = init_params(model, jax.random.PRNGKey(0))
    tokens = np.array([[2, 3, 4, 5], [6, 7, 0, 0], [8, 9, 10, 11]], np.int32)
    batch = {"tokens": jnp.asarray(tokens), "mask": jnp.asarray(tokens != 0), "labels": jnp.array([0, 2, 1]),
             "weights": jnp.array([1.0, 1.0, 0.0])}
    return model, params, batch


def test_a_perturbation_moves_an_embedded_word_as_its_embedding_row_would(adversarial_setup):
    model, params, batch = adversarial_setup
    delta = np.zeros((3, 4, 4), np.float32)
    delta[0, 1] = [0.3, -0.2, 0.5, 0.1]
    delta[1, 3] = [9.0, 9.0, 9.0, 9.0]  # a padded step: the mask hides it
    moved = dict(params, embedding=params["embedding"].at[3].add(delta[0, 1]))
    got = model.apply({"params": params}, batch["tokens"], batch["mask"], perturbation=jnp.asarray(delta))
    want = model.apply({"params": moved}, batch["tokens"], batch["mask"])
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    assert not np.allclose(got[0], model.apply({"params": params}, batch["tokens"], batch["mask"])[0])


def test_the_adversarial_loss_and_its_gradient_by_hand(adversarial_setup):
    """Miyato et al.'s objective written out through the embedding table: the clean cross-entropy plus weight x
    the cross-entropy with each example's words moved by epsilon along its own loss gradient (held constant)."""
    model, params, batch = adversarial_setup
    epsilon, weight, tokens = 0.8, 0.5, np.asarray(batch["tokens"])

    def nll_sum(params):
        logits = model.apply({"params": params}, batch["tokens"], batch["mask"])
        return (token_nll(logits, batch["labels"]) * batch["weights"]).sum()

    row_grads = np.asarray(jax.grad(nll_sum)(params)["embedding"])
    g = row_grads[tokens] * (tokens != 0)[..., None]  # each real word's own row (it occurs once)
    norms = np.sqrt((g ** 2).sum(axis=(1, 2)))
    assert norms[0] > 0 and norms[1] > 0 and norms[2] == 0
    table = np.array(params["embedding"])
    for b in range(2):
        for t in range(4):
            if tokens[b, t]:
                table[tokens[b, t]] += epsilon * g[b, t] / norms[b]
    moved = dict(params, embedding=jnp.asarray(table))
    want = (nll_sum(params) + weight * nll_sum(moved)) / 2.0
    want_grads = jax.tree_util.tree_map(lambda a, b: (a + weight * b) / 2.0, jax.grad(nll_sum)(params),
                                        jax.grad(nll_sum)(moved))

    def loss(params):
        return batch_loss(model, True, params, None, batch, jax.random.PRNGKey(1), adversarial=epsilon,
                          adversarial_weight=weight)

    (got, (_, sums)), got_grads = jax.value_and_grad(loss, has_aux=True)(params)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert sums["adversarial_sum"] > sums["nll_sum"]  # the perturbation raises the loss it was aimed at
    for a, b in zip(jax.tree_util.tree_leaves(got_grads), jax.tree_util.tree_leaves(want_grads)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    plain = batch_loss(model, True, params, None, batch, jax.random.PRNGKey(1))
    assert "adversarial_sum" not in plain[1][1] and np.isclose(plain[0], nll_sum(params) / 2.0)


@pytest.mark.parametrize("changes, message", [
    ({"train.adversarial": -0.5}, "train.adversarial must not be negative"),
    ({"train.adversarial_weight": -1.0}, "train.adversarial_weight must not be negative"),
    ({"task": "lm", "train.adversarial": 0.5}, "train.adversarial perturbs a classifier's embedded words"),
])
def test_bad_adversarial_settings_are_one_line_errors(changes, message):
    config = base_config()
    config.task = "classify"
    for field, value in changes.items():
        if "." in field:
            section, key = field.split(".")
            config[section][key] = value
        else:
            config[field] = value
    with pytest.raises(UserError, match=re.escape(message)):
        validate(config)
