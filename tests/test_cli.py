"""rnnlm/cli.py: the commands end to end (train, resume, eval, generate), and every bad input the issues name:
one line, a non-zero exit, nothing changed on disk."""

import argparse
import hashlib
import json
import math
import pathlib
import subprocess
import sys

import pytest

from conftest import data_dir
from rnnlm import cli
from rnnlm.data import corpora


def digest(root):
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(pathlib.Path(root).rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    run = root / "run"
    assert cli.main(["train", "--config", "experiments/default.py:tiny", "--workdir", str(run),
                     "--config.train.max_steps=3", "--config.sample.length=0"]) == 0
    (root / "empty.txt").write_text("")
    (root / "latin1.txt").write_bytes("café au lait\n".encode("latin-1"))
    with open(root / "huge.txt", "wb") as f:  # sparse: 3 GiB on paper, nothing on disk
        f.truncate(3 << 30)
    (root / "cls_train.txt").write_text("0 a good film\n1 a bad film\n")
    (root / "cls_badlabel.txt").write_text("0 good\n7 weird\n")
    (root / "cls_nolabel.txt").write_text("0 good\nlovely\n")
    (root / "tsv_train.tsv").write_text("label\tsentence\n0\ta good film\n1\ta bad film\n")
    (root / "tsv_noheader.tsv").write_text("0\ta good film\n1\ta bad film\n")
    (root / "tsv_notab.tsv").write_text("label\tsentence\n0\tgood\n1 lovely\n")
    (root / "tsv_badlabel.tsv").write_text("label\tsentence\n0\tgood\n7\tweird\n")
    (root / "bad.model").write_bytes(b"\x00not a SentencePiece model")
    (root / "a_file").write_text("not a directory\n")
    (root / "no_checkpoint").mkdir()
    (root / "no_checkpoint" / "config.json").write_text("{}")
    bad_ptb = root / "bad_data" / "ptb"
    bad_ptb.mkdir(parents=True)
    for entry in corpora.CORPORA["ptb"].files:
        (bad_ptb / entry.name).write_bytes((data_dir() / "ptb" / entry.name).read_bytes()[:-2] + b"x\n")
    return root


TRAIN = ["train", "--config", "experiments/default.py:tiny", "--workdir", "{root}/run"]
FRESH = ["train", "--config", "experiments/default.py:tiny", "--workdir", "{root}/fresh"]
CLASSIFY = ["train", "--config", "experiments/sst2_lstm.py:tiny", "--workdir", "{root}/fresh"]
LABELLED = lambda train, valid, test: [f"--config.data.{split}_path={{root}}/{name}"
                                       for split, name in (("train", train), ("valid", valid), ("test", test))]
CASES = {
    "missing corpus file": (FRESH + ["--config.data.corpus={root}/missing.txt"], "path not found"),
    "empty corpus file": (FRESH + ["--config.data.corpus={root}/empty.txt"], "is empty"),
    "non-UTF-8 corpus": (FRESH + ["--config.data.corpus={root}/latin1.txt"], "not valid UTF-8"),
    "oversized corpus": (FRESH + ["--config.data.corpus={root}/huge.txt"], "3.0 GiB; the limit is 2 GiB"),
    "checksum mismatch": (FRESH + ["--config.data.corpus=ptb", "--config.data.data_dir={root}/bad_data"],
                          "checksum mismatch"),
    "unknown corpus": (TRAIN + ["--config.data.corpus=pennbank"], "unknown corpus 'pennbank'"),
    "unknown cell": (TRAIN + ["--config.model.cell=lstn"], "unknown cell 'lstn'"),
    "negative mogrifier rounds": (TRAIN + ["--config.model.cell=mogrifier", "--config.model.mogrifier_rounds=-1"],
                                  "model.mogrifier_rounds must not be negative"),
    "mogrifier rank above the widths": (TRAIN + ["--config.model.cell=mogrifier", "--config.model.mogrifier_rank=100000"],
                                        "model.mogrifier_rank must be in"),
    "unknown linear scan": (TRAIN + ["--config.speed.linear_scan=fast"], "unknown speed.linear_scan 'fast'"),
    "word dropout of one": (TRAIN + ["--config.model.word_dropout=1.0"], "model.word_dropout must be in [0, 1)"),
    "unknown tokenizer": (TRAIN + ["--config.data.tokenizer=bytes"], "unknown data.tokenizer 'bytes'"),
    "unknown optimizer": (TRAIN + ["--config.train.optimizer=adagrad"], "unknown train.optimizer"),
    "unknown config key": (TRAIN + ["--config.model.hiden_size=3"], "unknown config field 'model.hiden_size'"),
    "badly typed value": (TRAIN + ["--config.model.hidden_size=big"], "invalid literal for int"),
    "unknown experiment": (["train", "--config", "experiments/nope.py"], "experiment config not found"),
    "unknown experiment argument": (["train", "--config", "experiments/default.py:tny", "--workdir", "{root}/fresh"],
                                    "default.py: unknown experiment argument 'tny'; choose one of tiny (or none)"),
    "a model that cannot fit": (FRESH + ["--config.model.hidden_size=100000"], "the model does not fit"),
    "workdir that is a file": (["train", "--config", "experiments/default.py:tiny", "--workdir", "{root}/a_file"],
                               "a_file is a file, not a directory"),
    "workdir under a file": (["train", "--config", "experiments/default.py:tiny", "--workdir", "{root}/a_file/run"],
                             "a_file is a file, not a directory"),
    # /sys refuses new directories even to root (for whom os.access says every directory is writable):
    # "cannot create it" as root, "is not writable" for other users
    "workdir that cannot be created": (["train", "--config", "experiments/default.py:tiny", "--workdir",
                                        "/sys/rnnlm_test_run"], "--workdir /sys/rnnlm_test_run: "),
    "split that is not numbers": (FRESH + ["--config.data.split=abc"], "got 'abc'"),
    "zero hidden size": (TRAIN + ["--config.model.hidden_size=0"], "model.hidden_size must be positive"),
    "negative bptt": (TRAIN + ["--config.train.bptt=-5"], "train.bptt must be positive"),
    "dropout of 1": (TRAIN + ["--config.model.dropout=1.0"], "model.dropout must be in [0, 1)"),
    "bad split": (FRESH + ["--config.data.corpus={root}/run/tokenizer.json", "--config.data.split=(0.5,0.6,0.1)"],
                  "three positive fractions summing to 1"),
    "changed model on resume": (TRAIN + ["--config.model.num_layers=3"], "holds a run with model.num_layers=2"),
    "out-of-vocabulary prompt": (["generate", "--workdir", "{root}/run", "--prompt", "naïve ☃"], "not in the vocabulary"),
    "out-of-vocabulary sample prompt": (TRAIN + ["--config.sample.prompt=☃"], "not in the vocabulary"),
    "zero length": (["generate", "--workdir", "{root}/run", "--length", "0"], "must be positive"),
    "negative temperature": (["generate", "--workdir", "{root}/run", "--temperature", "-1"], "temperature must be a number >= 0"),
    "sample top-p above 1 in training": (TRAIN + ["--config.sample.top_p=2"], "sample.top-p must be in (0, 1], got 2"),
    "NaN temperature": (["generate", "--workdir", "{root}/run", "--temperature", "nan"], "temperature must be a number"),
    "top-p above 1": (["generate", "--workdir", "{root}/run", "--top-p", "1.5"], "top-p must be in (0, 1]"),
    "workdir without checkpoint": (["generate", "--workdir", "{root}/no_checkpoint"], "tokenizer.json is missing"),
    "workdir that does not exist": (["eval", "--workdir", "{root}/nowhere"], "is not a training run"),
    "unknown checkpoint step": (["eval", "--workdir", "{root}/run", "--checkpoint", "999"], "no checkpoint '999'"),
    "unknown split": (["eval", "--workdir", "{root}/run", "--split", "dev"], "invalid choice: 'dev'"),
    "unknown command": (["trian"], "invalid choice: 'trian'"),
    "stray argument": (["eval", "--workdir", "{root}/run", "extra"], "unexpected argument 'extra'"),
    "empty labelled file": (CLASSIFY + LABELLED("empty.txt", "cls_train.txt", "cls_train.txt"), "empty.txt is empty"),
    "label outside the known classes": (CLASSIFY + LABELLED("cls_train.txt", "cls_train.txt", "cls_badlabel.txt"),
                                        "cls_badlabel.txt:2: label '7' is not one of the classes seen in train (0, 1)"),
    "line with no label": (CLASSIFY + LABELLED("cls_nolabel.txt", "cls_train.txt", "cls_train.txt"),
                           "cls_nolabel.txt:2: expected 'LABEL sentence', got only 'lovely'"),
    "TSV without a header": (CLASSIFY + LABELLED("tsv_noheader.tsv", "tsv_train.tsv", "tsv_train.tsv"),
                             "tsv_noheader.tsv:1: expected a tab-separated header row naming the columns 'label' and 'sentence'"),
    "TSV row without a tab": (CLASSIFY + LABELLED("tsv_train.tsv", "tsv_notab.tsv", "tsv_train.tsv"),
                              "tsv_notab.tsv:3: expected 2 tab-separated fields (label, sentence), got 1"),
    "TSV label outside the known classes": (CLASSIFY + LABELLED("tsv_train.tsv", "tsv_train.tsv", "tsv_badlabel.tsv"),
                                            "tsv_badlabel.tsv:3: label '7' is not one of the classes seen in train"),
    "unknown data format": (CLASSIFY + ["--config.data.format=csv"], "unknown data.format 'csv'"),
    "unknown pooling": (CLASSIFY + ["--config.model.pooling=avg"], "unknown model.pooling 'avg'"),
    "not a SentencePiece model": (FRESH + ["--config.data.tokenizer=sentencepiece", "--config.data.spm_model={root}/bad.model"],
                                  "bad.model is not a SentencePiece model"),
    "predict with a language model": (["predict", "--workdir", "{root}/run", "hello"], "predict needs a classifier run"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input(files, capsys, name):
    args, message = CASES[name]
    args = [a.replace("{root}", str(files)) for a in args]
    before = digest(files / "run")
    capsys.readouterr()
    assert cli.main(args) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("rnnlm: error: ") and "\n" not in err, err
    assert message in err
    assert digest(files / "run") == before  # nothing in the existing run changed
    assert not (files / "fresh").exists()  # and no new run directory was started


def test_help_shows_the_config_interface_and_every_option_says_what_it_does(capsys):
    for command in ("train", "sweep", "compile-check"):
        with pytest.raises(SystemExit):
            cli.main([command, "--help"])
        out = capsys.readouterr().out
        assert "--config FILE[:ARG]" in out and "--config.SECTION.FIELD=VALUE" in out, command
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    undocumented = []
    for name, sub in commands.choices.items():
        for nested in [a for a in sub._actions if isinstance(a, argparse._SubParsersAction)]:
            undocumented += [f"{name} {n} {o.option_strings}" for n, s in nested.choices.items()
                             for o in s._actions if o.option_strings and not o.help]
        undocumented += [f"{name} {a.option_strings}" for a in sub._actions if a.option_strings and not a.help]
    assert undocumented == []


def test_a_workdir_another_process_trains_in_is_refused(files, capsys):
    from rnnlm.workdir import WorkdirLock
    before = digest(files / "run")
    with WorkdirLock(files / "run"):  # as a training process holds it
        capsys.readouterr()
        assert cli.main([a.replace("{root}", str(files)) for a in TRAIN] + ["--config.train.max_steps=4"]) == 2
    err = capsys.readouterr().err.strip()
    assert "is in use by another rnnlm process" in err and "\n" not in err
    assert {k: v for k, v in digest(files / "run").items() if k != ".lock"} == {
        k: v for k, v in before.items() if k != ".lock"}


@pytest.mark.slow
def test_real_process_exit_status(files):
    """The same, through the installed entry point in a fresh process (no traceback, status 2)."""
    out = subprocess.run([sys.executable, "-m", "rnnlm", "generate", "--workdir", str(files / "run"), "--prompt", "☃"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "Traceback" not in out.stderr


def run_cli(*args):
    return cli.main([str(a) for a in args])


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_python_dash_m_entry_point():
    out = subprocess.run([sys.executable, "-m", "rnnlm", "corpora"], capture_output=True, text=True, check=True).stdout
    assert "ptb" in out and "tinyshakespeare" in out and "default" in out
