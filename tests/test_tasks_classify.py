"""rnnlm/tasks/classify.py: the classifier end to end through the CLI, its metrics and its model selection."""

import json

import numpy as np
import pytest

from rnnlm import cli
from rnnlm.tasks.classify import classification_metrics, format_confusion, selection_score


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
