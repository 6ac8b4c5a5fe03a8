"""rnnlm/sharding.py: data parallelism on fake CPU devices and on two processes with JAX's distributed runtime."""

import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest

from rnnlm.runs import load_run

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent


@pytest.fixture(scope="module")
def device_runs():
    out = subprocess.run([sys.executable, str(HERE / "sharding_worker.py"), "1", "4", "awd1", "awd8",
                          "methods1", "methods4"],
                         capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


@pytest.mark.slow
@pytest.mark.parametrize("devices", ["4", "awd8"])  # 8 devices: one stream each
def test_same_losses_and_parameters_on_1_4_8_devices(device_runs, devices):
    """awd8: with AWD-LSTM's techniques on, the masks (weight drop's, the locked ones) are the same on
    every device, the drawn windows' masks and scales are split with the batch, the average matches."""
    one, many = device_runs["awd1" if devices.startswith("awd") else "1"], device_runs[devices]
    assert len(many["devices"]) == int(devices.removeprefix("awd"))  # the batch really was split
    np.testing.assert_allclose(many["losses"], one["losses"], rtol=1e-5)
    np.testing.assert_allclose(many["eval_loss"], one["eval_loss"], rtol=1e-5)
    for a, b in zip(many["params"], one["params"]):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_evaluation_methods_and_a_mixture_of_softmaxes_agree_on_1_and_4_devices(device_runs):
    """Dynamic evaluation (4 streams, each rule), the cache, both together, and a mixture of softmaxes'
    training: the same numbers whether the streams sit on one device or four."""
    one, four = device_runs["methods1"], device_runs["methods4"]
    assert len(four["devices"]) == 4
    np.testing.assert_allclose(four["mos_losses"], one["mos_losses"], rtol=1e-5)
    for method in ("static", "rms", "sgd", "cache", "both"):
        np.testing.assert_allclose(four[method], one[method], rtol=1e-5, err_msg=method)
    assert one["cache"] < one["static"] and one["sgd"] != one["static"]  # each method changed the score


@pytest.mark.slow
def test_each_stream_keeps_its_carry_across_devices(device_runs):
    for a, b in zip(device_runs["4"]["carry"], device_runs["1"]["carry"]):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
    # Streams differ from one another, so a permutation of rows would have been caught.
    h = np.asarray(device_runs["1"]["carry"][-1])
    assert len({tuple(np.round(row, 5)) for row in h}) == h.shape[0]


@pytest.mark.slow
def test_batch_must_divide_by_devices(tmp_path):
    env = dict(os.environ, JAX_NUM_CPU_DEVICES="4", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-m", "rnnlm", "train", "--config", "experiments/default.py:tiny",
                          "--config.train.batch_size=6", "--workdir", str(tmp_path / "w")],
                         capture_output=True, text=True, timeout=120, cwd=REPO, env=env)
    assert out.returncode == 2
    assert out.stderr.strip() == "rnnlm: error: train.batch_size=6 does not divide by the 4 devices of the mesh"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train_command(workdir, corpus, *extra):
    return [sys.executable, "-m", "rnnlm", "train", "--config", "experiments/default.py:tiny",
            "--workdir", str(workdir), f"--config.data.corpus={corpus}", "--config.train.max_steps=6", "--config.train.checkpoint_every=3",
            "--config.model.dropout=0.1", "--config.sample.length=5", "--config.eval.batch_size=4",
            "--config.sample.prompt=the ", "--config.train.time_budget_minutes=600", *extra]  # the budget: a sync per log step


@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path):
    """2 processes x 2 CPU devices (gloo) == 1 process x 4 devices; the result restores in one process."""
    env = dict(os.environ, JAX_NUM_CPU_DEVICES="2", JAX_PLATFORMS="cpu")
    # A short corpus: every eval window is a cross-process step, slow over gloo.
    corpus = tmp_path / "text.txt"
    corpus.write_text("".join(f"line {i}: the cat sat on the mat.\n" for i in range(200)))
    port = _free_port()
    workers = [subprocess.Popen(_train_command(tmp_path / "multi", corpus, "--coordinator", f"127.0.0.1:{port}",
                                               "--num-processes", "2", "--process-id", str(i)),
                                cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for i in range(2)]
    try:
        outputs = [w.communicate(timeout=240) for w in workers]
    finally:
        for w in workers:
            w.kill()
    for w, (_, err) in zip(workers, outputs):
        assert w.returncode == 0, err[-3000:]
    assert "test: loss" in outputs[0][0] and "test: loss" not in outputs[1][0]  # one process reports

    single_env = dict(os.environ, JAX_NUM_CPU_DEVICES="4", JAX_PLATFORMS="cpu")
    single = subprocess.run(_train_command(tmp_path / "single", corpus), cwd=REPO, env=single_env,
                            capture_output=True, text=True, timeout=240)
    assert single.returncode == 0, single.stderr[-3000:]

    multi_run, single_run = load_run(tmp_path / "multi"), load_run(tmp_path / "single")
    assert multi_run.step == single_run.step == 6
    import jax
    for a, b in zip(jax.tree_util.tree_leaves(multi_run.params), jax.tree_util.tree_leaves(single_run.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
    read = lambda run: [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    multi_losses = [r["loss"] for r in read(tmp_path / "multi") if r["split"] == "train"]
    single_losses = [r["loss"] for r in read(tmp_path / "single") if r["split"] == "train"]
    np.testing.assert_allclose(multi_losses, single_losses, rtol=1e-5)
