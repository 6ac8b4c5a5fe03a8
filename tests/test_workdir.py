"""rnnlm/workdir.py: a rerun's config against the saved one, the data cache, the metric log and its reader."""

import json
import os

import pytest

from rnnlm.config import base_config
from rnnlm.errors import UserError
from rnnlm.workdir import MetricLog, existing_run, read_metrics, reconcile_config


def test_a_resumed_run_may_change_the_speed_section_but_not_the_model(tmp_path):
    config = base_config()
    reconcile_config(config, tmp_path)
    config.speed.update(unroll=2, eval_unroll=4, fold_embedding=False, wavefront=False, reference=True)
    config.train.learning_rate = 0.5
    reconcile_config(config, tmp_path)  # how, not what: allowed, and the new values written
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["speed"] == {"eval_unroll": 4, "fold_embedding": False, "reference": True, "unroll": 2,
                              "wavefront": False}
    for field, value in (("model.hidden_size", 300), ("train.bptt", 7), ("data.tokenizer", "word"), ("task", "classify")):
        changed = base_config()
        section, _, key = field.rpartition(".")
        (changed[section] if section else changed)[key] = value
        with pytest.raises(UserError, match=f"holds a run with {field}="):
            reconcile_config(changed, tmp_path, write=False)


def test_a_config_saved_before_the_speed_section_reads_its_fields_there(tmp_path):
    """config.json of the code before: model.unroll, eval_unroll, fold_embedding, wavefront; a rerun with
    today's config and the same values is the same run."""
    saved = base_config().to_dict()
    speed = saved.pop("speed")
    saved["model"].update(unroll=1, eval_unroll=2, fold_embedding=True, wavefront=False)
    saved["data"]["split"] = list(saved["data"]["split"])
    (tmp_path / "config.json").write_text(json.dumps(saved))
    config = base_config()
    config.speed.wavefront = False
    reconcile_config(config, tmp_path, write=False)  # nothing frozen differs
    from rnnlm.config import load_config
    loaded = load_config(tmp_path / "config.json")
    assert "unroll" not in loaded.model and loaded.speed.wavefront is False and speed["unroll"] == loaded.speed.unroll


def test_metric_log_survives_a_line_torn_by_a_kill(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 5, "split": "train", "loss": 1.0}\n{"step": 10, "split": "valid", "loss": 0.9}\n'
                    '{"step": 15, "split": "test", "loss": 0.8}\n{"step": 20, "spl')
    log = MetricLog(path)
    log.truncate_after(15)
    assert [json.loads(l)["step"] for l in path.read_text().splitlines()] == [5, 10]
    log.close()
    assert [r["loss"] for r in read_metrics(tmp_path)] == [1.0, 0.9]


def test_the_metric_reader_and_run_check_name_what_is_missing(tmp_path):
    with pytest.raises(UserError, match="no metrics.jsonl"):
        read_metrics(tmp_path)
    (tmp_path / "metrics.jsonl").write_text("")
    with pytest.raises(UserError, match="holds no records yet"):
        read_metrics(tmp_path)
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\nnot json\n')
    with pytest.raises(UserError, match="metrics.jsonl:2 is not a JSON record"):
        read_metrics(tmp_path)
    with pytest.raises(UserError, match="is not a training run: config.json is missing"):
        existing_run(tmp_path)


def test_a_workdir_in_a_directory_without_write_permission_is_refused(tmp_path, monkeypatch):
    from rnnlm.workdir import check_writable
    check_writable(tmp_path / "new" / "run")  # nothing exists yet under a writable directory: fine
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # as for a user without rights (root has them all)
    with pytest.raises(UserError, match=r"is not writable \(permission denied\)"):
        check_writable(tmp_path / "new" / "run")


def test_files_written_atomically_get_the_mode_open_would_give(tmp_path):
    from rnnlm.workdir import write_atomically
    write_atomically(tmp_path / "config.json", b"{}")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "config.json").stat().st_mode & 0o777 == 0o666 & ~umask  # not the temp file's 0600
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]
