"""rnnlm/runs.py: `rnnlm.load_run`, and workdirs written by the code before the one training loop (their
config.json with `model.unroll`, `model.fold_embedding`, `model.wavefront`; a classifier's meta with
`batch`) still resume, evaluate and generate."""

import json
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

import rnnlm
from rnnlm import cli, optim
from rnnlm.checkpoint import fingerprint
from rnnlm.config import base_config, load_config
from rnnlm.models import init_params
from rnnlm.tasks import classify, lm
from rnnlm.train import train_and_evaluate
from rnnlm.workdir import load_data, save_data, write_atomically

pytestmark = pytest.mark.slow  # every test here trains end to end

TEXT = "".join(f"line {i}: the cat sat on the mat.\n" for i in range(200))


@flax.struct.dataclass
class OldTrainState:  # rnnlm/train.py's TrainState before the one loop: the same fields, in this order
    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array


def old_config(config) -> dict:
    """config.json as the code before the `speed` section wrote it."""
    saved = config.to_dict()
    speed = saved.pop("speed")
    saved["model"].update(unroll=speed["unroll"], eval_unroll=speed["eval_unroll"],
                          fold_embedding=speed["fold_embedding"], wavefront=speed["wavefront"])
    saved["data"]["split"] = list(saved["data"]["split"])
    return saved


def write_old_checkpoint(workdir, step, state, carry, meta):
    manager = ocp.CheckpointManager(workdir / "checkpoints", item_names=("state", "carry", "meta"))
    meta = dict(meta, fingerprint={"params": fingerprint(state.params), "state": fingerprint(state)})
    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                               carry=ocp.args.StandardSave(carry), meta=ocp.args.JsonSave(meta)))
    manager.wait_until_finished()
    manager.close()


def old_state(model, config, steps_per_epoch):
    tx = optim.make_optimizer(config.train, config.train.max_steps or config.train.epochs * steps_per_epoch)
    params = init_params(model, jax.random.PRNGKey(1))
    return OldTrainState(step=jnp.asarray(7, jnp.int32), params=params, opt_state=tx.init(params),
                         rng=jax.random.PRNGKey(2))


@pytest.fixture(scope="module")
def old_lm_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("old")
    (root / "text.txt").write_text(TEXT)
    config = base_config()
    config.data.update(corpus=str(root / "text.txt"), tokenizer="char")
    config.model.update(embed_size=8, hidden_size=8, num_layers=2)
    config.train.update(batch_size=2, bptt=8, max_steps=7, log_every=5, checkpoint_every=0)
    config.eval.batch_size = 2
    config.sample.length = 5
    workdir = root / "run"
    workdir.mkdir()
    tokenizer, ids, _ = load_data(config, workdir)
    save_data(workdir, tokenizer, ids)
    write_atomically(workdir / "config.json", json.dumps(old_config(config), indent=2).encode())
    model = lm.build_model(config, workdir)[0]
    state = old_state(model, config, 100)
    carry = tuple(tuple(c + 0.25 for c in layer) for layer in model.initial_carry(2))
    write_old_checkpoint(workdir, 7, state, carry, {"epoch": 0, "window": 7, "train_seconds": 1.5,
                                                    "lr": {"rate": 0.002, "best_valid_loss": None}, "pending": None})
    return workdir, state


def test_load_run_is_the_python_api(old_lm_run):
    workdir, state = old_lm_run
    run = rnnlm.load_run(workdir)
    assert run.task == "lm" and run.step == 7 and run.config.speed.unroll == 1
    assert "unroll" not in run.config.model  # read at its new place
    for a, b in zip(jax.tree_util.tree_leaves(run.params), jax.tree_util.tree_leaves(state.params)):
        np.testing.assert_array_equal(a, b)
    metrics = run.evaluate("valid")
    assert metrics["loss"] > 0 and "word_perplexity" in metrics
    assert run.generate("line 1", length=5)[0].startswith("line 1")


def test_an_old_workdir_resumes_evaluates_and_generates(old_lm_run, tmp_path, capsys):
    import shutil
    workdir = tmp_path / "run"
    shutil.copytree(old_lm_run[0], workdir)
    config = load_config(workdir / "config.json")  # the saved run's own config, as a rerun would give it
    config.train.max_steps = 10
    config.speed.eval_unroll = 3  # a speed change on resume: allowed
    results = train_and_evaluate(config, workdir)
    out = capsys.readouterr().out
    assert results["step"] == 10 and "resumed from step 7 (epoch 1, window 7)" in out
    assert json.loads((workdir / "config.json").read_text())["speed"]["eval_unroll"] == 3
    assert cli.main(["eval", "--workdir", str(workdir), "--split", "test"]) == 0
    assert "(step 10," in capsys.readouterr().out
    assert cli.main(["generate", "--workdir", str(workdir), "--prompt", "line", "--length", "4"]) == 0
    assert capsys.readouterr().out.startswith("line")


def test_an_old_classifier_workdir_resumes_and_predicts(tmp_path, capsys):
    folder = tmp_path / "data"
    folder.mkdir()
    for split in ("train", "valid", "test"):
        (folder / f"{split}.txt").write_text("1 a good film\n0 a bad film\n1 good\n0 bad\n")
    config = base_config()
    config.task = "classify"
    config.data.update(corpus=str(folder))
    config.model.update(embed_size=4, hidden_size=4, num_layers=1)
    config.train.update(batch_size=2, max_steps=3, epochs=2, log_every=1, checkpoint_every=0)
    config.eval.batch_size = 2
    workdir = tmp_path / "run"
    workdir.mkdir()
    tokenizer, splits, _ = classify.load_classification_data(config, workdir)
    write_atomically(workdir / "tokenizer.json", json.dumps(tokenizer.to_dict()).encode())
    write_atomically(workdir / "config.json", json.dumps(old_config(config)).encode())
    model = classify.build_model(config, workdir)[0]
    state = old_state(model, config, 2)
    state = state.replace(step=jnp.asarray(1, jnp.int32))
    write_old_checkpoint(workdir, 1, state, {"none": jnp.zeros((1,), jnp.int32)},
                         {"epoch": 0, "batch": 1, "train_seconds": 0.5, "lr": {"rate": 0.002, "best_valid_loss": None},
                          "pending": {"nll_sum": 1.0, "correct": 1.0, "examples": 2.0, "grad_norm": 0.5, "steps": 1,
                                      "nonfinite": 0}})
    results = train_and_evaluate(config, workdir)
    assert results["step"] == 3 and "resumed from step 1 (epoch 1, batch 1)" in capsys.readouterr().out
    run = rnnlm.load_run(workdir, "best")
    assert run.task == "classify" and len(run.predict(["a good film"])) == 1


def _fake_run(root, name, task, records, step, seconds):
    run = root / name
    (run / "checkpoints" / str(step) / "meta").mkdir(parents=True)
    (run / "checkpoints" / str(step) / "meta" / "metadata").write_text(json.dumps({"train_seconds": seconds}))
    (run / "checkpoints" / f"{step + 5}.orbax-checkpoint-tmp-1").mkdir()  # a save killed half-way: not a step
    config = base_config()
    config.name, config.task = name, task
    (run / "config.json").write_text(config.to_json())
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + '{"torn')
    return run


def test_runs_lists_each_run_with_its_best_validation_test_time_and_state(tmp_path, capsys):
    from rnnlm.workdir import WorkdirLock
    lm_records = [{"step": 10, "split": "valid", "loss": 2.0}, {"step": 20, "split": "valid", "loss": 1.5},
                  {"step": 20, "split": "test", "loss": 1.6}]
    _fake_run(tmp_path / "sweep", "finished_lm", "lm", lm_records, step=20, seconds=90)
    _fake_run(tmp_path / "sweep", "stopped_lm", "lm", lm_records[:1], step=15, seconds=30)
    cls_records = [{"step": 5, "split": "valid", "loss": 0.6, "accuracy": 0.7},
                   {"step": 10, "split": "valid", "loss": 0.7, "accuracy": 0.8}]
    running = _fake_run(tmp_path, "running_classifier", "classify", cls_records, step=10, seconds=60)
    with WorkdirLock(running):
        assert cli.main(["runs", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2:] == [
        f"| {tmp_path}/running_classifier | running_classifier | classify | 10 | acc 80.00% |  | 1.0 | running |",
        f"| {tmp_path}/sweep/finished_lm | finished_lm | lm | 20 | loss 1.5000, ppl 4.48 | loss 1.6000, ppl 4.95 | 1.5 | finished |",
        f"| {tmp_path}/sweep/stopped_lm | stopped_lm | lm | 15 | loss 2.0000, ppl 7.39 |  | 0.5 | stopped |"]
    assert rnnlm.runs.run_summary(running)["state"] == "stopped"  # the lock released with its holder
    assert cli.main(["runs", str(tmp_path / "sweep" / "finished_lm" / "checkpoints")]) == 2


@pytest.mark.slow
def test_an_exported_run_reads_back_with_the_same_parameters_and_text(char_run, tmp_path, capsys):
    out = tmp_path / "exported"
    assert cli.main(["export", "--workdir", str(char_run), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]
    original, exported = rnnlm.load_run(char_run), rnnlm.load_run(out)
    assert exported.step == original.step
    for a, b in zip(jax.tree_util.tree_leaves(original.params), jax.tree_util.tree_leaves(exported.params)):
        np.testing.assert_array_equal(a, b)
    assert exported.generate("the", length=20, seed=3) == original.generate("the", length=20, seed=3)
    from safetensors.numpy import load_file  # plain tensors by path, for any framework
    assert load_file(str(out / "model.safetensors"))["layer_0/w_x"].shape == original.params["layer_0"]["w_x"].shape
    capsys.readouterr()
    assert cli.main(["export", "--workdir", str(char_run), "--out", str(out)]) == 2  # never over an export
    assert "exists and is not an empty directory" in capsys.readouterr().err


@pytest.mark.slow
def test_compare_prints_one_table_and_overlays_the_curves(char_run, tmp_path, capsys):
    from conftest import assert_png
    assert cli.main(["compare", str(char_run), str(char_run), "--out", str(tmp_path / "c.png")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| run | experiment |") and sum(str(char_run) in line for line in lines) == 2
    assert_png(tmp_path / "c.png")
