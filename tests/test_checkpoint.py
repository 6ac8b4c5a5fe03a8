"""rnnlm/checkpoint.py: the one restore order (a damaged step set aside, the previous one used), a failed
write stopping the run, old steps pruned and the best kept."""

import hashlib
import json
import pathlib
import subprocess
import sys

import orbax.checkpoint as ocp
import pytest

from rnnlm import cli
from rnnlm import train as train_lib
from rnnlm.checkpoint import Checkpoints
from rnnlm.config import base_config
from rnnlm.errors import UserError

pytestmark = pytest.mark.slow  # every test here trains end to end

TEXT = "".join(f"{i} little pigs went to market; {i * 7 % 13} came home.\n" for i in range(300))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "pigs.txt"
    path.write_text(TEXT)
    return path


def history(workdir):
    return [json.loads(l) for l in (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()]


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
def test_damaged_latest_checkpoint_is_set_aside_and_the_previous_one_used(tmp_path, corpus, damage, capsys, caplog):
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
    assert Checkpoints(tmp_path / "run").latest_step() == 15

    capsys.readouterr()
    assert cli.main(["eval", "--workdir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rnnlm: error: checkpoint 15") and "\n" not in err
    assert "tensorstore_spec" not in err and len(err) < 500
    if damage == "truncate":  # in a fresh process: no late asyncio traceback after the one line
        out = subprocess.run([sys.executable, "-m", "rnnlm", "eval", "--workdir", str(tmp_path / "run")],
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 2 and out.stderr.count("\n") == 1 and "Traceback" not in out.stderr, out.stderr

    config.train.max_steps = 20
    results = train_lib.train_and_evaluate(config, tmp_path / "run")
    assert results["step"] == 20
    out = capsys.readouterr().out
    assert "resumed from step 10" in out
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "checkpoint step" in r.getMessage()]
    assert len(warnings) == 1 and "\n" not in warnings[0] and len(warnings[0]) < 600, warnings
    assert [p.name.split("-")[0] for p in (tmp_path / "run" / "checkpoints-damaged").iterdir()] == ["15"]


def test_unwritable_checkpoint_stops_the_run(tmp_path, corpus, monkeypatch):
    def full_disk(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ocp.CheckpointManager, "save", full_disk)
    with pytest.raises(UserError, match="cannot write the checkpoint of step 5 .*No space left on device"):
        train_lib.train_and_evaluate(tiny_config(corpus), tmp_path / "run")


def test_a_failed_asynchronous_write_names_its_own_step(tmp_path, corpus, monkeypatch):
    """Orbax raises an asynchronous save's failure at the next save: the step named must be the failed one."""
    real_save = ocp.CheckpointManager.save

    def save(self, step, *args, **kwargs):
        self.started = getattr(self, "started", []) + [step]
        return real_save(self, step, *args, **kwargs)

    def wait_until_finished(self):
        if getattr(self, "started", None):
            raise ValueError('RESOURCE_EXHAUSTED: Error writing "x/0": Failed to write 7 bytes to file 7: '
                             "No space left on device [os_error_code='28'] [tensorstore_spec='{...}']")

    monkeypatch.setattr(ocp.CheckpointManager, "save", save)
    monkeypatch.setattr(ocp.CheckpointManager, "wait_until_finished", wait_until_finished)
    with pytest.raises(UserError) as error:
        train_lib.train_and_evaluate(tiny_config(corpus), tmp_path / "run")
    assert str(error.value) == (f"cannot write the checkpoint of step 5 to {tmp_path / 'run' / 'checkpoints'}: "
                                "RESOURCE_EXHAUSTED: ...: Failed to write 7 bytes to file 7: No space left on device")


def test_a_run_stopped_mid_epoch_offers_its_final_validation_as_the_best_and_a_rerun_is_a_no_op(tmp_path, corpus):
    config = tiny_config(corpus, max_steps=12, checkpoint_every=0)  # an epoch has ~230 steps: none ends
    results = train_lib.train_and_evaluate(config, tmp_path / "run")
    reader = Checkpoints(tmp_path / "run", read_only=True)
    assert reader.best_step() == 12 == results["step"]  # `--checkpoint best` is the final state, validated
    reader.close()
    records = history(tmp_path / "run")
    assert [r["step"] for r in records if r["split"] == "valid"] == [12]
    assert results["valid"]["loss"] == next(r["loss"] for r in records if r["split"] == "valid")
    again = train_lib.train_and_evaluate(config, tmp_path / "run")
    assert again["complete"] and again["test"] == {k: v for k, v in results["test"].items()}
    assert history(tmp_path / "run") == records  # nothing appended


def test_a_language_model_whose_best_checkpoint_is_not_its_last_reports_both(tmp_path, corpus, monkeypatch):
    """valid and test are scored at the best checkpoint (as AWD-LSTM and the classifier), the final
    parameters' scores kept under "final"; `rnnlm eval` of each checkpoint gives the same numbers."""
    from rnnlm.runs import load_run
    config = tiny_config(corpus, max_steps=0, epochs=2, batch_size=16, bptt=32, checkpoint_every=0)
    # Which epoch validates best is up to the data; the earliest checkpoint is declared the best instead.
    monkeypatch.setattr(Checkpoints, "best_step", lambda self: min(self.manager.all_steps()))
    results = train_lib.train_and_evaluate(config, tmp_path / "run")
    first = results["best_step"]
    assert 0 < first < results["step"]
    for split in ("valid", "test"):
        assert results[split]["loss"] == pytest.approx(load_run(tmp_path / "run", str(first)).evaluate(split)["loss"], rel=1e-6)
        final = load_run(tmp_path / "run", "latest").evaluate(split)["loss"]
        assert results["final"][split]["loss"] == pytest.approx(final, rel=1e-6)
        assert abs(results[split]["loss"] - final) > 1e-4  # two different parameter sets were scored
    records = history(tmp_path / "run")
    assert [r["split"] for r in records[-4:]] == ["valid", "test", "valid_best", "test_best"]
    assert records[-1]["best_step"] == first
    again = train_lib.train_and_evaluate(config, tmp_path / "run")  # a finished run reports the best's again
    assert again["complete"] and again["test"] == results["test"] and again["valid"] == results["valid"]


def test_old_checkpoints_are_pruned_and_the_best_kept(tmp_path, corpus):
    config = tiny_config(corpus, max_steps=0, epochs=3, batch_size=16, checkpoint_every=20, keep_checkpoints=2)
    train_lib.train_and_evaluate(config, tmp_path / "run")
    checkpoints = tmp_path / "run" / "checkpoints"
    steps = sorted(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit())
    valid = {r["step"]: r["loss"] for r in history(tmp_path / "run") if r["split"] == "valid"}
    best = min(valid, key=valid.get)
    assert steps[-2:] == sorted(steps)[-2:] and best in steps and len(steps) <= 3
    assert not [p for p in checkpoints.iterdir() if "tmp" in p.name]  # atomic: no half-written steps left
