"""rnnlm/bench/: the side-by-side benchmark runs end to end on tiny shapes. Not a timed test: no speed is asserted."""

import dataclasses
import json
import types

import pytest

from rnnlm.bench import impls, report, rnnlm_impl, run, shapes, timing
from rnnlm import cli
from rnnlm.errors import UserError

THROUGHPUTS = ["train_tokens_per_s", "eval_tokens_per_s", "sample_b2_tokens_per_s"]


def _impls():
    # torch only where it is importable; --torch-threads 1 keeps a busy CI machine from OpenMP stalls.
    return "rnnlm,flax" + (",torch" if impls.available("torch") else "")


@pytest.mark.slow
def test_tiny_benchmark_writes_table_and_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert run.main(["--tiny", "--configs", "char", "--cells", "lstm", "--impls", _impls(), "--reps", "1",
                     "--steps", "2", "--sample-length", "4", "--sample-batches", "2", "--no-memory",
                     "--torch-threads", "1", "--out", str(out)]) == 0

    doc = json.loads(out.read_text())
    names = _impls().split(",")
    assert [row["impl"] for row in doc["results"]] == names
    for row in doc["results"]:
        assert (row["config"], row["cell"], row["shape"]) == ("char", "lstm", vars(shapes.get_shape("char", True)))
        for key in THROUGHPUTS:
            assert row[key]["min"] > 0 and row[key]["min"] <= row[key]["median"] <= row[key]["max"]
        assert row["compile"]["first_call_s"] > 0 and row["compile_s"] >= 0
        assert row["train_gflops"] > 0 and row["train_fraction_of_peak"] > 0
        assert row["flops_per_token"]["train"] == 3 * row["flops_per_token"]["forward"] > 0
        if row["impl"] == "rnnlm":  # the tiny vocabulary (50) is wider than its embedding (16): nothing folded
            assert row["executed_flops_per_token"] == row["flops_per_token"]
        if "torch" in names:
            assert row["ratio_to_torch"]["train_tokens_per_s"] > 0
    assert all(g > 0 for g in doc["matmul_peak_gflops"].values())
    assert doc["targets"] == []  # set for the real shapes only

    table = capsys.readouterr().out
    lines = [line for line in table.splitlines() if line.startswith("|")]
    assert lines[0].startswith("| config | cell | impl | train tok/s | eval tok/s | sample b=2 tok/s |")
    assert len(lines) == 2 + len(names)
    assert all(line.count("|") == lines[0].count("|") for line in lines)
    assert table == report.markdown(doc)
    assert run.main(["--report", str(out)]) == 0  # the markdown again from the JSON alone
    assert capsys.readouterr().out == table


@pytest.mark.slow
def test_memory_figure_worker(tmp_path, capsys):
    out = tmp_path / "memory.json"
    assert run.main(["--tiny", "--memory-figure", "--configs", "char", "--cells", "gru", "--impls", "rnnlm",
                     "--seq-lens", "8", "--out", str(out)]) == 0
    (point,) = json.loads(out.read_text())["memory_figure"]
    assert (point["impl"], point["cell"], point["seq_len"]) == ("rnnlm", "gru", 8)
    assert point["rss_before_mb"] > 0 and point["peak_rss_delta_mb"] >= 0  # a tiny step may fit in free pages
    assert "| char | gru | rnnlm |" in capsys.readouterr().out


def test_flops_count_matches_hand_count():
    shape = shapes.get_shape("ptb_small")
    # 2 layers of [200] @ [200, 800] twice (input, recurrent), then [200] @ [200, 10000].
    assert shapes.forward_flops_per_token(shape, "lstm") == 2 * (2 * 2 * 200 * 800) + 2 * 200 * 10_000


def test_rnnlm_counts_the_flops_it_saves_by_folding_the_embedding():
    """Character shapes: the first layer's [65, 128] @ [128, G*512] input table once per call (with its two
    gradient products in training) instead of every token's [128] @ [128, G*512] product (and its two
    gradients); a GRU's evaluation reads each row through a 65-wide one-hot product, an LSTM's gathers it."""
    char = shapes.get_shape("char")
    for cell, gates, one_hot in (("lstm", 4, 0), ("gru", 3, 2 * 65 * 3 * 512)):
        width = gates * 512
        want = {"train": shapes.train_flops_per_token(char, cell) - 3 * 2 * 128 * width
                + 3 * 2 * 65 * 128 * width / (64 * 128),
                "forward": shapes.forward_flops_per_token(char, cell) - 2 * 128 * width
                + 2 * 65 * 128 * width / (128 * 128) + one_hot}
        bench = types.SimpleNamespace(shape=char, model=rnnlm_impl.make_model(char, cell))
        assert rnnlm_impl.RnnlmBench.executed_flops_per_token(bench) == pytest.approx(want)
    # Word vocabularies are wider than the embedding, and dropout on the embedding rules the table out in training.
    ptb = shapes.get_shape("ptb_small")
    bench = types.SimpleNamespace(shape=ptb, model=rnnlm_impl.make_model(ptb, "gru"))
    assert rnnlm_impl.RnnlmBench.executed_flops_per_token(bench) == {
        "forward": shapes.forward_flops_per_token(ptb, "gru"), "train": shapes.train_flops_per_token(ptb, "gru")}
    bench = types.SimpleNamespace(shape=char, model=rnnlm_impl.make_model(char, "gru", dropout=0.1))
    assert rnnlm_impl.RnnlmBench.executed_flops_per_token(bench) == pytest.approx(
        {"train": shapes.train_flops_per_token(char, "gru"), "forward": want["forward"]})


def test_bad_names_are_refused_in_one_line(tmp_path, capsys):
    with pytest.raises(UserError, match="unknown benchmark config"):
        run.main(["--tiny", "--configs", "nope", "--out", str(tmp_path / "x.json")])
    assert cli.main(["bench", "--tiny", "--cells", "lstm,tree", "--out", str(tmp_path / "x.json")]) == 2
    assert "rnnlm: error: unknown cell(s) tree" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def _row(impl, train, eval_, train_gflops, eval_gflops):
    return {"config": "ptb_small", "cell": "lstm", "impl": impl, "train_tokens_per_s": timing.summary(train),
            "eval_tokens_per_s": timing.summary(eval_), "train_gflops": train_gflops, "eval_gflops": eval_gflops}


def test_paired_ratios_and_targets_against_the_probe():
    # Repetition 3 was slow for both sides (6 and 3 tokens/s): the ratio of medians is 10 / 8 and the
    # per-repetition ratios are 1.25, 1.2 and 2.0; the cell shows the first and the range of the others.
    mine = _row("rnnlm", [10.0, 12.0, 6.0], [30.0, 30.0, 30.0], 120.0, 100.0)
    torch = _row("torch", [8.0, 10.0, 3.0], [20.0, 10.0, 20.0], 100.0, 50.0)
    doc = {"results": [mine, torch], "matmul_peak_gflops": {"jax": 200.0}}
    report.add_ratios(doc["results"], ["train_tokens_per_s", "eval_tokens_per_s"])
    assert mine["ratio_to_torch"]["train_tokens_per_s"] == pytest.approx(10.0 / 8.0)
    assert mine["paired_ratio_to_torch"]["train_tokens_per_s"] == pytest.approx(
        {"median": 1.25, "min": 1.2, "max": 2.0})
    assert "paired_ratio_to_torch" not in torch
    assert "×1.25 (1.20–2.00)" in report._throughput(mine, "train_tokens_per_s")

    targets = {t["metric"]: t for t in report.target_rows(doc)}
    # train: 1.3 x PyTorch's 100 GFLOP/s asks for 130 = 65% of the probe; at the probe, 2x is reachable.
    assert targets["train"]["needed_gflops"] == pytest.approx(130.0)
    assert targets["train"]["needed_fraction_of_probe"] == pytest.approx(0.65)
    assert targets["train"]["ceiling"] == pytest.approx(2.0)
    # An implementation that executes a quarter fewer FLOPs than the model's count can go 4/3 further.
    mine.update(flops_per_token={"train": 12.0, "forward": 4.0}, executed_flops_per_token={"train": 9.0, "forward": 4.0})
    targets_folded = {t["metric"]: t for t in report.target_rows(doc)}
    assert targets_folded["train"]["ceiling"] == pytest.approx(2.0 * 12.0 / 9.0)
    assert targets_folded["train"]["needed_fraction_of_probe"] == pytest.approx(0.65 * 9.0 / 12.0)
    assert targets_folded["eval"]["ceiling"] == pytest.approx(targets["eval"]["ceiling"])
    del mine["flops_per_token"], mine["executed_flops_per_token"]
    # eval: ratio 1.5 meets 1.5; with PyTorch at 150 GFLOP/s the ceiling would be 1.33, out of reach.
    assert targets["eval"]["ratio"] == pytest.approx(1.5)
    doc["targets"] = report.target_rows(doc)
    table = report.target_table(doc)
    assert "| ptb_small | lstm | train 1.3x | 100 | 130 (65%) | 120 | ×1.25 (1.20–2.00) | ×2.00 | no |" in table
    assert table.splitlines()[-1].endswith("| yes |")
    # The same row against a faster PyTorch (150 GFLOP/s): 1.5x would need 112% of the probe.
    mine["eval_tokens_per_s"] = timing.summary([24.0] * 3)
    torch["eval_gflops"] = 150.0
    report.add_ratios(doc["results"], ["train_tokens_per_s", "eval_tokens_per_s"])
    doc["targets"] = report.target_rows(doc)
    assert report.target_table(doc).splitlines()[-1].endswith("| ×1.33 | out of reach |")


@pytest.mark.parametrize("cell", sorted(shapes.GATES))
def test_param_count_is_the_models_and_equal_params_matches_the_lstm(cell):
    """The analytic count against the parameters rnnlm's model really has, at a shape and at its equal-parameter
    width; the latter within one unit's worth of the LSTM's count."""
    from rnnlm.models import count_params
    shape = shapes.get_shape("char", True)
    matched = shapes.equal_params(shape, cell)
    for s in (shape, matched):
        assert shapes.param_count(s, cell) == count_params(rnnlm_impl.make_model(s, cell))
    one_unit = shapes.param_count(dataclasses.replace(matched, hidden=matched.hidden + 1), cell) - shapes.param_count(matched, cell)
    assert abs(shapes.param_count(matched, cell) - shapes.param_count(shape, "lstm")) <= one_unit
    assert (matched.hidden > shape.hidden) == (cell in ("gru", "mingru", "minlstm"))


@pytest.mark.slow
def test_a_cell_only_rnnlm_has_is_benchmarked_alone_at_equal_parameters(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert run.main(["--tiny", "--configs", "char_t512", "--cells", "mingru", "--impls", _impls(), "--equal-params",
                     "--reps", "1", "--steps", "1", "--sample-length", "2", "--sample-batches", "1", "--no-memory",
                     "--torch-threads", "1", "--out", str(out)]) == 0
    (row,) = json.loads(out.read_text())["results"]
    assert (row["impl"], row["cell"]) == ("rnnlm", "mingru")
    assert row["shape"]["hidden"] == shapes.equal_params(shapes.get_shape("char_t512", True), "mingru").hidden
    assert f"| char_t512 | mingru H={row['shape']['hidden']} | rnnlm |" in capsys.readouterr().out
    assert run.main(["--report", str(out), "--figure", str(tmp_path / "t.png")]) == 0
    assert (tmp_path / "t.png").stat().st_size > 1000
    doc = json.loads(out.read_text())
    doc["results"][0]["config"] = "char"
    out.write_text(json.dumps(doc))
    with pytest.raises(UserError, match="has no char_t<T> rows to plot"):
        run.main(["--report", str(out), "--figure", str(tmp_path / "u.png")])
