"""rnnlm/plots.py: training curves of one and several runs, sweep plots, missing metrics."""

import pytest

from conftest import assert_png
from rnnlm import cli

@pytest.mark.slow  # trains end to end (the char_run fixture)
def test_plot_one_and_several_runs(char_run, tmp_path):
    assert cli.main(["plot", "--workdir", str(char_run), "--out", str(tmp_path / "one.png")]) == 0
    assert_png(tmp_path / "one.png")
    assert cli.main(["plot", "--workdir", str(char_run), "--workdir", str(char_run.parent),
                     "--out", str(tmp_path / "both.png")]) == 0
    assert_png(tmp_path / "both.png")


def test_missing_metrics_is_a_user_error(tmp_path, capsys):
    (tmp_path / "metrics.jsonl").write_text("")
    assert cli.main(["plot", "--workdir", str(tmp_path)]) == 2
    assert "holds no records" in capsys.readouterr().err


@pytest.mark.parametrize("sizes", [(1000, 1010, 1020), (1000, 8000, 64000)])
def test_sweep_plot_at_equal_and_at_growing_size(tmp_path, sizes):
    """Rows of about equal size are drawn side by side, growing sizes against a parameter axis: both valid PNGs."""
    from rnnlm.plots import sweep_plot
    groups = [{"overrides": {"model.cell": f"c{i}"}, "params": p, "valid ppl": {"mean": 5.0 + i, "std": 0.1, "n": 2}}
              for i, p in enumerate(sizes)]
    groups.append({"overrides": {"model.cell": "failed"}, "params": 10})  # a point without a result is left out
    assert_png(sweep_plot(groups, tmp_path / "results.png", "sweep"))



def test_quality_against_time_reads_logged_seconds_or_estimates_them(tmp_path, monkeypatch):
    import json
    from rnnlm.config import base_config, config_json
    from rnnlm.plots import quality_against_time, validation_seconds
    new, old = tmp_path / "new", tmp_path / "old"
    for run in (new, old):
        run.mkdir()
        config = base_config()
        config.train.update(batch_size=2, bptt=5)
        (run / "config.json").write_text(config_json(config))
    logged = [{"step": 10, "split": "train", "loss": 5.0, "tokens_per_sec": 100.0, "train_seconds": 1.5},
              {"step": 10, "split": "valid", "loss": 4.0, "perplexity": 54.6, "train_seconds": 1.5},
              {"step": 10, "split": "test", "loss": 3.9, "perplexity": 49.4}]  # drawn as a star
    (new / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in logged))
    older = [{"step": 10, "split": "train", "loss": 5.0, "tokens_per_sec": 50.0},
             {"step": 20, "split": "train", "loss": 4.5, "tokens_per_sec": 25.0},
             {"step": 20, "split": "valid", "loss": 4.0, "perplexity": 54.6}]
    (old / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in older))
    assert [t for t, _ in validation_seconds(new)] == [1.5]
    assert [t for t, _ in validation_seconds(old)] == [10 * 10 / 50.0 + 10 * 10 / 25.0]  # steps x B x T / rate
    drawn = {}
    import matplotlib.figure
    save = matplotlib.figure.Figure.savefig
    def record_legend(fig, *args, **kwargs):  # what the figure's legend names, read at the moment it is saved
        drawn["labels"] = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
        return save(fig, *args, **kwargs)
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", record_legend)
    assert_png(quality_against_time([new, old], tmp_path / "q.png"))
    monkeypatch.undo()
    assert drawn["labels"] == ["new: valid", "new: test 49.40", "old: valid"]  # the star only where a test record is

    # The command line, and a run with nothing to plot against time: one line, exit 2, no image.
    assert cli.main(["plot", "--time", "--workdir", str(new), "--out", str(tmp_path / "cli.png")]) == 0
    assert_png(tmp_path / "cli.png")
    empty = tmp_path / "classifier"
    empty.mkdir()
    (empty / "config.json").write_text(config_json(base_config()))
    (empty / "metrics.jsonl").write_text(json.dumps({"step": 5, "split": "valid", "loss": 0.6, "accuracy": 0.7}) + "\n")
    assert cli.main(["plot", "--time", "--workdir", str(empty), "--out", str(tmp_path / "none.png")]) == 2
    assert not (tmp_path / "none.png").exists()
