"""rnnlm/studies/synthetic.py: the adding problem's labels, and its training and files."""

import json

import jax
import numpy as np
import pytest

from rnnlm import cli
from rnnlm.studies import synthetic


@pytest.mark.parametrize("distance", [1, 7, 30])
def test_adding_problem_labels(distance):
    inputs, targets, first = map(np.asarray, synthetic.adding_batch(jax.random.PRNGKey(distance), 200, distance, pad=5))
    assert inputs.shape == (200, distance + 5, 2) and targets.shape == (200,)
    values, markers = inputs[..., 0], inputs[..., 1]
    assert ((values >= 0) & (values < 1)).all()
    assert set(np.unique(markers)) == {0.0, 1.0} and (markers.sum(axis=1) == 2).all()
    for row in range(200):
        marked = np.flatnonzero(markers[row])
        assert marked[0] == first[row] < 5 and marked[1] - marked[0] == distance
        assert targets[row] == pytest.approx(values[row, marked].sum())
    assert len(np.unique(first)) == 5  # the first mark moves


@pytest.mark.slow
def test_adding_problem_training_and_study_files(tmp_path):
    out = tmp_path / "synthetic"
    assert cli.main(["study", "synthetic", "--cells", "gru", "--distances", "2", "--steps", "3", "--seeds", "2",
                     "--hidden", "4", "--out", str(out)]) == 0
    assert (out / "synthetic.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| gru |" in (out / "synthetic.md").read_text()
    runs = json.loads((out / "synthetic.json").read_text())["runs"]
    assert len(runs) == 1 and len(runs[0]["success"]) == 2 and all(0 <= s <= 1 for s in runs[0]["success"])
    assert cli.main(["study", "synthetic", "--cells", "tree", "--out", str(out)]) == 2
