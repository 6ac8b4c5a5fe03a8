"""rnnlm/config.py: the schema, fields that moved, and experiments loaded by path from any directory."""

import json
import os
import pathlib

import pytest

from rnnlm import cli
from rnnlm.config import EXPERIMENTS_DIR, base_config, experiment_config, load_config, resolve_experiment
from rnnlm.errors import UserError


def test_every_field_has_a_comment_saying_what_it_does():
    source = (EXPERIMENTS_DIR.parent / "rnnlm" / "config.py").read_text()
    for section, fields in base_config().items():
        names = fields.keys() if hasattr(fields, "keys") else [None]
        for name in names:
            assignment = f"c.{section}.{name} = " if name else f"c.{section} = "
            line = next(l for l in source.splitlines() if l.strip().startswith(assignment))
            assert "  # " in line, line


def test_experiments_load_by_path_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_experiment("ptb_small") == str(EXPERIMENTS_DIR / "ptb_small.py")
    assert resolve_experiment("experiments/ptb_small.py:tiny") == str(EXPERIMENTS_DIR / "ptb_small.py") + ":tiny"
    medium = experiment_config("ptb_medium")  # builds on ptb_small by path, not by import
    assert medium.model.hidden_size == 650 and medium.train.optimizer == "sgd"
    masking = experiment_config("ablations/masking.py", "tiny")
    assert masking.task == "classify" and masking.model.pooling == "last"
    with pytest.raises(UserError, match="experiment config not found: nope"):
        resolve_experiment("nope")


def test_a_moved_field_names_its_new_place(capsys):
    assert cli.main(["train", "--config", "experiments/default.py:tiny", "--config.model.unroll=2"]) == 2
    assert "config field 'model.unroll' is now 'speed.unroll'" in capsys.readouterr().err


def test_load_config_keeps_unknown_old_runs_readable(tmp_path):
    saved = {"model": {"unroll": 3, "fold_embedding": False}, "seed": 4}
    (tmp_path / "config.json").write_text(json.dumps(saved))
    config = load_config(tmp_path / "config.json")
    assert config.speed.unroll == 3 and config.speed.fold_embedding is False and config.seed == 4
    assert config.model.cell == "lstm"  # the rest at today's defaults
    assert os.path.isdir(EXPERIMENTS_DIR)


def test_experiments_resolve_from_any_directory_and_refuse_unknown_arguments(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for given in ("experiments/ablations/cell_type.py:char", "cell_type.py:char", "experiments/default.py", "default"):
        path = resolve_experiment(given)
        assert pathlib.Path(path.split(".py")[0] + ".py").is_file(), given
    with pytest.raises(UserError, match=r"cell_type.py: unknown experiment argument 'chr'; choose one of char, ptb"):
        resolve_experiment("experiments/ablations/cell_type.py:chr")
    with pytest.raises(UserError, match="unknown experiment argument 'tny'"):
        experiment_config("default", "tny")


def _experiment_points():
    from rnnlm.config import load_experiment_module
    for path in sorted(EXPERIMENTS_DIR.rglob("*.py")):
        module = load_experiment_module(path)
        if not hasattr(module, "get_config"):  # a benchmark script, not an experiment
            continue
        for arg in (None,) + tuple(getattr(module, "ARGS", ())):
            yield pytest.param(path, arg, id=f"{path.relative_to(EXPERIMENTS_DIR)}:{arg or ''}")


@pytest.mark.parametrize("path,arg", list(_experiment_points()))
def test_every_experiment_and_argument_gives_a_valid_config(path, arg):
    """Each shipped experiment file, under each argument it declares, passes the checks `rnnlm train` makes
    before anything runs (a Mogrifier rank wider than a :tiny model's width, say, would fail here)."""
    from rnnlm.config import validate
    validate(experiment_config(str(path), arg))
