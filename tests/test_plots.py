"""rnnlm/plots.py: training curves of one and several runs, sweep plots, missing metrics."""

import pytest

from conftest import assert_png
from rnnlm import cli

pytestmark = pytest.mark.slow  # every test here trains end to end


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

