"""rnnlm/sweep.py: overrides, parameter matching, the seed table, and a 2-point tiny sweep through the CLI."""

import json
import statistics

import jax
import pytest

from rnnlm import cli, sweep
from rnnlm.config import base_config
from rnnlm.errors import UserError
from rnnlm.models import init_params, language_model_from_config

EXPERIMENT = '''
from rnnlm import sweep
from rnnlm.config import base_config

def get_config(arg=None):
    config = base_config()
    config.name = "tiny_sweep"
    config.data.corpus = {corpus!r}
    config.data.tokenizer = "char"
    config.model.update(embed_size=8, hidden_size=8, num_layers=1)
    config.train.update(batch_size=2, bptt=8, max_steps=3, log_every=1, checkpoint_every=0)
    config.eval.batch_size = 2
    config.sample.length = 0
    return config

def get_sweep(arg=None):
    return sweep.product(sweep.axis("train.learning_rate", [0.01]), sweep.axis("seed", [0, 1]))
'''


def test_product_and_axis():
    points = sweep.product(sweep.axis("model.cell", ["rnn", "lstm"]), sweep.axis("seed", [0, 1, 2]))
    assert len(points) == 6
    assert points[0] == {"model.cell": "rnn", "seed": 0} and points[-1] == {"model.cell": "lstm", "seed": 2}
    merged = sweep.product([{"model.cell": "gru", "model.hidden_size": 7}], [{"seed": 1}])
    assert merged == [{"model.cell": "gru", "model.hidden_size": 7, "seed": 1}]


def test_with_seeds_replaces_the_seed_axis_and_keeps_the_order():
    points = sweep.product(sweep.axis("model.cell", ["rnn", "lstm"]), sweep.axis("seed", [0, 1, 2]))
    assert sweep.with_seeds(points, [5]) == [{"model.cell": "rnn", "seed": 5}, {"model.cell": "lstm", "seed": 5}]
    no_seed_axis = sweep.axis("model.cell", ["gru"])
    assert sweep.with_seeds(no_seed_axis, [0, 1]) == [{"model.cell": "gru", "seed": 0}, {"model.cell": "gru", "seed": 1}]
    # Seeds vary slowest (every point once before any point twice); each name keeps the seed where the sweep put it.
    two = sweep.with_seeds(points, [5, 6])
    assert [(p["model.cell"], p["seed"]) for p in two] == [("rnn", 5), ("lstm", 5), ("rnn", 6), ("lstm", 6)]
    assert [sweep.point_name(p) for p in two] == ["cell=rnn,seed=5", "cell=lstm,seed=5", "cell=rnn,seed=6", "cell=lstm,seed=6"]
    seed_first = sweep.product(sweep.axis("seed", [0, 1]), sweep.axis("model.cell", ["rnn", "lstm"]))
    assert sweep.with_seeds(seed_first, [0, 1]) == seed_first
    assert [sweep.point_name(p) for p in sweep.with_seeds(seed_first, [0, 1])] == [sweep.point_name(p) for p in seed_first]
    with pytest.raises(UserError, match="--seeds"):
        sweep.with_seeds(points, [])


def test_apply_overrides_checks_fields_and_types():
    config = base_config()
    config.lock()
    changed = sweep.apply_overrides(config, {"model.cell": "gru", "train.learning_rate": 1})
    assert changed.model.cell == "gru" and changed.train.learning_rate == 1.0
    assert config.model.cell == "lstm"  # the base is left alone
    with pytest.raises(UserError, match="unknown config field 'model.hiden_size'"):
        sweep.apply_overrides(config, {"model.hiden_size": 3})
    with pytest.raises(UserError, match="model.hidden_size"):
        sweep.apply_overrides(config, {"model.hidden_size": "big"})
    assert sweep.point_name({"model.cell": "gru", "seed": 0}) == "cell=gru,seed=0"
    assert sweep.point_name({"model.dropout": 0.5, "train.dropout": 0.1}) == "model.dropout=0.5,train.dropout=0.1"
    assert "/" not in sweep.point_name({"data.corpus": "a/b.txt"})


@pytest.mark.slow
@pytest.mark.parametrize("cell,tie,embed", [("rnn", False, 12), ("gru", True, 12), ("gru_cho", True, 20)])
def test_model_params_counts_the_model_the_config_builds(cell, tie, embed):
    config = base_config()
    config.model.update(cell=cell, embed_size=embed, hidden_size=20, num_layers=2, tie_weights=tie)
    params = init_params(language_model_from_config(config, vocab_size=33), jax.random.PRNGKey(0))
    assert sweep.model_params(config, 33) == sum(x.size for x in jax.tree_util.tree_leaves(params))


def test_matched_hidden_size_is_nearest():
    config = base_config()
    config.model.update(cell="lstm", embed_size=16, hidden_size=64, num_layers=1)
    target = sweep.model_params(config, 50)
    for cell in ("rnn", "gru"):
        size = sweep.matched_hidden_size(config, 50, cell, target)
        c = config.copy_and_resolve_references()
        c.model.cell = cell

        def gap(h):
            c.model.hidden_size = h
            return abs(sweep.model_params(c, 50) - target)
        assert gap(size) <= min(gap(size - 1), gap(size + 1))
    assert sweep.matched_hidden_size(config, 50, "rnn", target) > 100  # an RNN layer is 4x cheaper per unit


def _result(name, overrides, valid, params=100, status="finished"):
    return sweep.RunResult(name, overrides, "/x", status, params=params, step=5,
                           valid=None if valid is None else {"perplexity": valid},
                           test=None if valid is None else {"perplexity": valid + 1})


def test_seeds_are_merged_into_mean_and_std_and_the_choice_is_stated():
    results = [_result("a0", {"model.hidden_size": 64, "seed": 0}, 120.0, params=10),
               _result("a1", {"model.hidden_size": 64, "seed": 1}, 126.0, params=10),
               _result("b0", {"model.hidden_size": 256, "seed": 0}, 118.0, params=40),
               _result("b1", {"model.hidden_size": 256, "seed": 1}, 119.0, params=40),
               _result("c0", {"model.hidden_size": 512, "seed": 0}, None, params=90, status="failed")]
    groups = sweep.group_runs(results)
    assert [g["overrides"] for g in groups] == [{"model.hidden_size": 64}, {"model.hidden_size": 256},
                                                {"model.hidden_size": 512}]
    assert groups[0]["valid ppl"]["mean"] == pytest.approx(123.0)
    assert groups[0]["valid ppl"]["std"] == pytest.approx(statistics.stdev([120.0, 126.0]))  # sample std
    assert groups[1]["test ppl"]["mean"] == pytest.approx(119.5)
    best, chosen = sweep.choose(groups)
    assert best["overrides"] == {"model.hidden_size": 256}
    assert chosen is best  # 123 > 118.5 + 0.71: the small model is not within one std
    groups[1]["valid ppl"]["std"] = 6.0
    assert sweep.choose(groups)[1]["overrides"] == {"model.hidden_size": 64}
    table = sweep.results_markdown("t", groups)
    assert "| 64 | 2 | 10 | 5 | 123.000 ± 4.243 |" in table
    assert "0 (1 failed)" in table and "Best by mean validation perplexity: **model.hidden_size=256**" in table


def test_tokenizers_are_chosen_and_reported_by_per_word_perplexity():
    """Per-token perplexities of a char and a word model are not comparable; the choice and its line use per word."""
    metric = lambda mean: {"mean": mean, "std": 0.0, "n": 1}
    groups = [{"overrides": {"data.tokenizer": "char"}, "runs": ["c"], "failed": 0, "params": 5, "steps": 1,
               "valid ppl": metric(3.6), "valid word ppl": metric(1027.0)},
              {"overrides": {"data.tokenizer": "word"}, "runs": ["w"], "failed": 0, "params": 9, "steps": 1,
               "valid ppl": metric(187.0), "valid word ppl": metric(187.0)}]
    assert sweep.choose(groups)[0]["overrides"] == {"data.tokenizer": "word"}
    assert "Best by mean validation per-word perplexity: **data.tokenizer=word** (187.00," in sweep.results_markdown("t", groups)


def text_config(tmp_path):
    """A locked config reading a small text file: what the fake-training sweep tests run on."""
    corpus = tmp_path / "text.txt"
    corpus.write_text("abc def\n" * 50)
    config = base_config()
    config.data.corpus = str(corpus)
    config.lock()
    return config


def test_a_failed_point_is_reported_and_the_others_still_run(tmp_path):
    config, calls = text_config(tmp_path), []

    def fake_train(c, run_dir):
        from rnnlm.workdir import prepare_data
        calls.append(c.seed)
        run_dir.mkdir(parents=True)
        prepare_data(c, run_dir)
        if c.seed == 0:
            raise UserError("non-finite training loss at step 3")
        return {"step": 3, "valid": {"perplexity": 5.0}, "test": {"perplexity": 6.0}}

    with pytest.raises(UserError, match="1 of 2 sweep runs failed"):
        sweep.run_sweep(config, sweep.axis("seed", [0, 1]), tmp_path / "sweep", train_fn=fake_train)
    assert calls == [0, 1]
    saved = json.loads((tmp_path / "sweep" / "results.json").read_text())
    assert [r["status"] for r in saved["runs"]] == ["failed", "finished"]
    assert "non-finite" in saved["runs"][0]["error"]


def test_a_preempted_point_stops_the_sweep_without_a_result(tmp_path, capsys):
    """SIGTERM during a point: train_and_evaluate returns {"step", "preempted"}; the sweep says how to resume."""
    config, calls = text_config(tmp_path), []

    def fake_train(c, run_dir):
        calls.append(c.seed)
        run_dir.mkdir(parents=True)
        return {"step": 7, "preempted": True}

    assert sweep.run_sweep(config, sweep.axis("seed", [0, 1]), tmp_path / "sweep", train_fn=fake_train) == []
    assert calls == [0]
    assert "seed=0: stopped at step 7, its checkpoint written; rerun the same command" in capsys.readouterr().out
    assert not (tmp_path / "sweep" / "seed=0" / sweep.RESULT_FILE).exists()


def test_a_file_without_get_sweep_is_refused(capsys):
    assert cli.main(["sweep", "--config", "experiments/default.py:tiny"]) == 2
    assert "defines no get_sweep()" in capsys.readouterr().err


@pytest.mark.slow
def test_tiny_sweep_runs_skips_finished_points_and_writes_the_table(tmp_path, capsys, monkeypatch):
    corpus = tmp_path / "text.txt"
    corpus.write_text('the "quick" brown (fox) jumps\nover the lazy dog\n' * 30)
    experiment = tmp_path / "tiny_sweep.py"
    experiment.write_text(EXPERIMENT.format(corpus=str(corpus)))
    workdir = tmp_path / "sweep"
    command = ["sweep", "--config", str(experiment), "--workdir", str(workdir)]

    assert cli.main(command) == 0
    runs = sorted(p.name for p in workdir.iterdir() if p.is_dir())
    assert runs == ["learning_rate=0.01,seed=0", "learning_rate=0.01,seed=1"]
    saved = json.loads((workdir / "results.json").read_text())
    valid = [r["valid"]["perplexity"] for r in saved["runs"]]
    assert valid[0] != valid[1]  # the seeds differ
    table = (workdir / "results.md").read_text()
    row = f"| 0.01 | 2 | {saved['runs'][0]['params']:,} | 3 | {statistics.fmean(valid):.3f} ± {statistics.stdev(valid):.3f} |"
    assert row in table
    assert (workdir / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Rerun: both points are finished, nothing trains.
    import rnnlm.train
    calls = []
    real = rnnlm.train.train_and_evaluate
    monkeypatch.setattr(rnnlm.train, "train_and_evaluate", lambda c, w: calls.append(w) or real(c, w))
    capsys.readouterr()
    assert cli.main(command) == 0
    assert calls == [] and capsys.readouterr().out.count("finished earlier, skipped") == 2
    assert json.loads((workdir / "results.json").read_text())["groups"] == saved["groups"]

    # An unfinished point (no result file) runs again: train_and_evaluate resumes it from its checkpoint.
    (workdir / runs[1] / sweep.RESULT_FILE).unlink()
    assert cli.main(command) == 0
    assert [p.name for p in calls] == [runs[1]]
    assert (workdir / runs[1] / sweep.RESULT_FILE).exists()

    # --seeds replaces the seed axis: seed 1 alone is finished, so nothing trains; a bad list is refused.
    capsys.readouterr()
    assert cli.main(command + ["--seeds", "1"]) == 0
    assert len(calls) == 1 and capsys.readouterr().out.count("finished earlier, skipped") == 1
    assert cli.main(command + ["--seeds", "one"]) == 2 and "--seeds" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("experiment, arg", [("cell_type", "char"), ("cell_type", "ptb_tiny"), ("cell_type", "char_wall"),
                                             ("hidden_size", None),
                                             ("masking", "tiny"), ("tokenizer", "tiny"),
                                             ("awd", None), ("awd", "short")])
def test_every_ablation_lists_its_points(experiment, arg):
    """get_sweep of the real settings (nothing trains): each point's overrides apply to its config."""
    from rnnlm.config import EXPERIMENTS_DIR, load_experiment_module
    path = EXPERIMENTS_DIR / "ablations" / f"{experiment}.py"
    points = sweep.load_sweep(f"{path}:{arg}" if arg else str(path), load_experiment_module(path).get_config(arg))
    assert len(points) >= 2
    config = load_experiment_module(path).get_config(arg)
    for point in points:
        sweep.apply_overrides(config, point)
    if experiment == "awd":  # a budget of steps, not of the clock: a busy machine must not change a figure
        assert config.train.time_budget_minutes == 0 and config.train.epochs == (1 if arg == "short" else 8)
