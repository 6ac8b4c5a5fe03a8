"""rnnlm/scoring.py and `rnnlm score`: lines alone against a direct computation, carried against eval."""

import json
import math
import subprocess
import sys

import jax
import numpy as np
import pytest

from rnnlm.config import base_config
from rnnlm.runs import load_run
from rnnlm.train import train_and_evaluate

WORDS = "the cat sat on a mat and dog ran to big red house".split()


@pytest.fixture(scope="module")
def word_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("word_run")
    rng = np.random.default_rng(0)
    folder = root / "corpus"
    folder.mkdir()
    for split, count in (("train", 300), ("valid", 20), ("test", 23)):
        lines = [" ".join(rng.choice(WORDS, rng.integers(1, 9))) for _ in range(count)]
        (folder / f"{split}.txt").write_text("\n".join(lines) + "\n")
    config = base_config()
    config.data.update(corpus=str(folder), tokenizer="word")
    config.model.update(embed_size=8, hidden_size=12, num_layers=2)
    config.train.update(batch_size=4, bptt=8, max_steps=30, log_every=10, checkpoint_every=0, learning_rate=1e-2)
    config.eval.update(batch_size=1, bptt=7)
    config.sample.length = 0
    train_and_evaluate(config, root / "run")
    return root / "run", folder


def direct_log_prob(run, line):
    """log p of a line read after one <eos> from the zero state, from the full logits in numpy."""
    ids = run.tokenizer.encode(line + "\n")
    inputs = np.concatenate([[run.tokenizer.index["<eos>"]], ids[:-1]])[None]
    logits, _ = run.model.apply({"params": run.params}, inputs, run.model.initial_carry(1))
    logits = np.asarray(logits[0], np.float64)
    logp = logits - logits.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    return logp[np.arange(len(ids)), ids]


@pytest.mark.slow
def test_each_line_alone_equals_a_direct_computation_whatever_its_batch(word_run):
    run = load_run(word_run[0])
    lines = ["the cat sat", "a big red house on the mat and the dog ran to the cat", "dog", "mat mat mat mat"] * 5
    records = run.score(lines, per_token=True)
    for line, record in zip(lines, records):
        expected = direct_log_prob(run, line)
        np.testing.assert_allclose(record["log_prob"], expected.sum(), rtol=1e-5)
        assert record["tokens"] == len(line.split()) + 1  # the words and the line's end
        np.testing.assert_allclose([bits for _, bits in record["surprisal"]], -expected / math.log(2), rtol=1e-4)
        assert [name for name, _ in record["surprisal"]] == line.split() + ["<eos>"]
        np.testing.assert_allclose(record["perplexity"], math.exp(-record["log_prob"] / record["tokens"]), rtol=1e-9)
    alone = run.score(["dog"])[0]["log_prob"]
    np.testing.assert_allclose(alone, records[2]["log_prob"], rtol=1e-6)  # batch neighbours change nothing


def test_carried_totals_equal_eval_on_the_same_text(word_run):
    workdir, folder = word_run
    run = load_run(workdir)
    lines = (folder / "test.txt").read_text().splitlines()
    records = run.score(lines, carry=True)
    metrics = run.evaluate("test")
    tokens = sum(r["tokens"] for r in records)
    assert tokens == len(run.tokenizer.encode((folder / "test.txt").read_text())) - 1
    np.testing.assert_allclose(-sum(r["log_prob"] for r in records) / tokens, metrics["loss"], rtol=1e-5)
    assert records[0]["tokens"] == len(lines[0].split())  # its first word is context only


@pytest.mark.slow
def test_the_command_reads_standard_input_and_writes_jsonl(word_run):
    workdir, _ = word_run
    out = subprocess.run([sys.executable, "-m", "rnnlm", "score", "--workdir", str(workdir), "--text-file", "-"],
                         input="the cat\nred house\n", capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    records = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["text"] for r in records] == ["the cat", "red house"] and all(r["log_prob"] < 0 for r in records)
    empty = subprocess.run([sys.executable, "-m", "rnnlm", "score", "--workdir", str(workdir), "--text-file", "-"],
                           input="", capture_output=True, text=True, timeout=120)
    assert empty.returncode == 2 and empty.stderr.strip() == "rnnlm: error: -: no lines to score"
