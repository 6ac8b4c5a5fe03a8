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
    config.speed.update(unroll=2, eval_unroll=4, fold_embedding=False, wavefront=False, reference=True,
                        linear_scan="parallel")
    config.train.learning_rate = 0.5
    reconcile_config(config, tmp_path)  # how, not what: allowed, and the new values written
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["speed"] == {"eval_unroll": 4, "fold_embedding": False, "reference": True, "unroll": 2,
                              "wavefront": False, "linear_scan": "parallel"}
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


def test_the_same_data_by_another_path_resumes_and_other_data_is_refused(tmp_path, monkeypatch):
    from rnnlm.workdir import load_data, save_data
    text = "".join(f"line {i} of the little book.\n" for i in range(200))
    (tmp_path / "books").mkdir()
    (tmp_path / "books" / "book.txt").write_text(text)
    config = base_config()
    config.data.corpus, config.data.tokenizer = str(tmp_path / "books" / "book.txt"), "char"
    run = tmp_path / "run"
    tokenizer, ids, _ = load_data(config, run)
    run.mkdir()
    reconcile_config(config, run)
    save_data(run, tokenizer, ids)
    monkeypatch.chdir(tmp_path)
    relative = base_config()
    relative.data.corpus, relative.data.tokenizer = "books/book.txt", "char"
    reconcile_config(relative, run)  # the README's relative form: the same data, resumed
    assert json.loads((run / "config.json").read_text())["data"]["corpus"] == "books/book.txt"
    (tmp_path / "moved").mkdir()
    (tmp_path / "books" / "book.txt").rename(tmp_path / "moved" / "book.txt")
    relative.data.corpus = str(tmp_path / "moved" / "book.txt")
    reconcile_config(relative, run, write=False)  # a moved folder: the same
    (tmp_path / "moved" / "book.txt").write_text(text.replace("little", "large"))
    with pytest.raises(UserError, match=r"differs from it \(its train split\); give the run's data, e\.g\. "
                                        r"--config\.data\.corpus=books/book\.txt"):
        reconcile_config(relative, run, write=False)


@pytest.mark.slow
def test_the_workdir_lock_has_one_holder_and_dies_with_it(tmp_path):
    import signal
    import subprocess
    import sys
    from rnnlm.workdir import WorkdirLock
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from rnnlm.workdir import WorkdirLock; "
                               f"lock = WorkdirLock(__import__('pathlib').Path({str(tmp_path)!r})); "
                               "print('held', flush=True); time.sleep(120)"], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(UserError, match=rf"is in use by another rnnlm process \(pid {holder.pid}\)"):
        WorkdirLock(tmp_path)
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    with WorkdirLock(tmp_path):  # nothing stale after a SIGKILL
        pass
