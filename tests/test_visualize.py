"""Every plot and page command on one tiny trained run: non-empty, valid files; TensorBoard events; bad input."""

import html.parser
import json
import pathlib
import struct

import matplotlib.image
import pytest

from rnnlm import cli
from rnnlm.config import base_config
from rnnlm.train import train_and_evaluate
from rnnlm.workdir import MetricLog

TEXT = 'He said "go (now) [quickly]" and left.\nShe said "stay {here}".\n' * 40


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("visualize")
    (root / "text.txt").write_text(TEXT)
    config = base_config()
    config.data.corpus = str(root / "text.txt")
    config.data.tokenizer = "char"
    config.model.update(embed_size=8, hidden_size=12, num_layers=2, cell="lstm")
    config.train.update(batch_size=2, bptt=16, max_steps=6, log_every=2, checkpoint_every=0, learning_rate=1e-2)
    config.eval.batch_size = 2
    config.sample.length = 0
    train_and_evaluate(config, root / "run")
    return root / "run"


def assert_png(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(path)
    assert image.shape[0] > 50 and image.shape[1] > 50 and image.std() > 0  # not blank


class Spans(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.open, self.spans, self.rows = [], 0, 0

    def handle_starttag(self, tag, attrs):
        if tag not in ("meta", "br"):
            self.open.append(tag)
        self.spans += tag == "span"
        self.rows += ("class", "row") in attrs

    def handle_endtag(self, tag):
        assert self.open.pop() == tag  # well nested


def parse_html(path):
    parser = Spans()
    parser.feed(path.read_text(encoding="utf-8"))
    assert parser.open == []
    return parser


def test_plot_one_and_several_runs(run, tmp_path):
    assert cli.main(["plot", "--workdir", str(run)]) == 0
    assert_png(run / "curves.png")
    assert cli.main(["plot", "--workdir", str(run), "--workdir", str(run.parent), "--out", str(tmp_path / "both.png")]) == 0
    assert_png(tmp_path / "both.png")


def test_visualize_page_and_png(run, tmp_path):
    text = 'She said "go (now)".\n'
    assert cli.main(["visualize", "--workdir", str(run), "--text", text, "--units", "0,11", "--layer", "0",
                     "--out", str(tmp_path)]) == 0
    page = parse_html(tmp_path / "activations.html")
    rows = 1 + 2 * (1 + 3)  # surprisal; per unit: h and the input/forget/output gates
    assert page.rows == rows and page.spans == rows * len(text)
    assert "forget gate[11]" in (tmp_path / "activations.html").read_text()
    assert_png(tmp_path / "activations.png")
    assert cli.main(["visualize", "--workdir", str(run), "--state", "c", "--max-chars", "30",
                     "--out", str(tmp_path / "default")]) == 0
    assert parse_html(tmp_path / "default" / "activations.html").rows == 1 + 8 * 4  # the 8 most variable units


def test_units_table_and_page(run, tmp_path):
    assert cli.main(["units", "--workdir", str(run), "--top", "3", "--out", str(tmp_path)]) == 0
    found = json.loads((tmp_path / "units.json").read_text())["units"]
    assert set(found) == {"inside_quotes", "line_position", "bracket_depth"}
    assert all(len(v) == 3 and all(-1 <= u["r"] <= 1 for u in v) for v in found.values())
    assert all(abs(v[0]["r"]) >= abs(v[-1]["r"]) for v in found.values())
    assert "| line_position | 1 |" in (tmp_path / "units.md").read_text()
    assert parse_html(tmp_path / "units.html").rows == 1 + 3 * (1 + 3)


def test_gradient_study_files(run, tmp_path):
    assert cli.main(["study", "gradients", "--workdir", str(run), "--lags", "12", "--windows", "3",
                     "--out", str(tmp_path)]) == 0
    curves = json.loads((tmp_path / "gradients.json").read_text())["curves"]
    assert [c["state"] for c in curves] == ["trained", "initial"]
    assert all(len(c["norms"]) == 12 and c["norms"][0] > 0 for c in curves)
    assert "| lstm H=12 | trained |" in (tmp_path / "gradients.md").read_text()
    assert_png(tmp_path / "gradients.png")


@pytest.mark.parametrize("args,message", [
    (["plot", "--workdir", "/nonexistent/run"], "workdir not found"),
    (["visualize", "--workdir", "RUN", "--units", "12"], "unit 12 does not exist; layer 1 has units 0..11"),
    (["visualize", "--workdir", "RUN", "--units", "a,b"], "--units must be comma-separated"),
    (["visualize", "--workdir", "RUN", "--text", "zzz\u00e9"], "characters not in the vocabulary"),
    (["visualize", "--workdir", "RUN", "--layer", "2"], "layer 2 does not exist"),
    (["units", "--workdir", "RUN", "--feature", "vowels"], "unknown feature 'vowels'"),
    (["study", "gradients", "--workdir", "RUN", "--layer", "5"], "layer 5 does not exist"),
    (["visualize", "--workdir", "/nonexistent/run"], "is not a training run"),
])
def test_bad_input_is_one_line_and_exit_2(run, args, message, capsys):
    assert cli.main([str(run) if a == "RUN" else a for a in args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rnnlm: error: ") and message in err and err.count("\n") == 1


def test_missing_metrics_is_a_user_error(tmp_path, capsys):
    (tmp_path / "metrics.jsonl").write_text("")
    assert cli.main(["plot", "--workdir", str(tmp_path)]) == 2
    assert "holds no records" in capsys.readouterr().err


def read_events(path) -> list:
    """The events of one TFRecord file, checking every record's CRC (an independent reader)."""
    from tensorboardX.proto.event_pb2 import Event
    from tensorboardX.record_writer import masked_crc32c
    data, events, offset = pathlib.Path(path).read_bytes(), [], 0
    while offset < len(data):
        header = data[offset:offset + 8]
        (length,) = struct.unpack("<Q", header)
        (header_crc,) = struct.unpack("<I", data[offset + 8:offset + 12])
        payload = data[offset + 12:offset + 12 + length]
        (payload_crc,) = struct.unpack("<I", data[offset + 12 + length:offset + 16 + length])
        if header_crc != masked_crc32c(header) or payload_crc != masked_crc32c(payload):
            raise ValueError(f"{path}: bad CRC at byte {offset}")
        events.append(Event.FromString(payload))
        offset += 16 + length
    return events


def test_tensorboard_events_match_the_json_log(run):
    files = sorted(run.glob("events.out.tfevents.*"))
    assert len(files) == 1
    events = read_events(files[0])
    assert events[0].file_version == "brain.Event:2"
    scalars = {(e.step, v.tag): v.simple_value for e in events[1:] for v in e.summary.value}
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for record in records:
        assert scalars[(record["step"], f"{record['split']}/loss")] == pytest.approx(record["loss"], rel=1e-6)
    assert {tag for _, tag in scalars} >= {"train/loss", "train/grad_norm", "train/learning_rate", "test/perplexity"}



def test_tensorboard_resume_purges_the_dropped_steps(tmp_path):
    log = MetricLog(tmp_path / "metrics.jsonl")
    for step in (1, 2, 3):
        log.write({"step": step, "split": "train", "loss": float(step)})
    resumed = MetricLog(tmp_path / "metrics.jsonl")
    resumed.truncate_after(2)
    resumed.write({"step": 3, "split": "train", "loss": 30.0})
    log.events.close()
    resumed.events.close()
    first, second = sorted(tmp_path.glob("events.out.tfevents.*"), key=lambda p: p.name.rsplit(".", 1)[-1])
    assert [e.step for e in read_events(first) if e.summary.value] == [1, 2, 3]
    events = read_events(second)
    starts = [e.step for e in events if e.session_log.status == e.session_log.START]
    assert starts == [3]  # TensorBoard hides the first file's events from step 3 on
    assert events[-1].summary.value[0].simple_value == 30.0
    assert [json.loads(line)["loss"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2, 30]
    with pytest.raises(ValueError, match="bad CRC"):
        data = bytearray(first.read_bytes())
        data[20] ^= 0xFF
        first.write_bytes(bytes(data))
        read_events(first)


@pytest.mark.parametrize("sizes", [(1000, 1010, 1020), (1000, 8000, 64000)])
def test_sweep_plot_at_equal_and_at_growing_size(tmp_path, sizes):
    """Rows of about equal size are drawn side by side, growing sizes against a parameter axis: both valid PNGs."""
    from rnnlm.plots import sweep_plot
    groups = [{"overrides": {"model.cell": f"c{i}"}, "params": p, "valid ppl": {"mean": 5.0 + i, "std": 0.1, "n": 2}}
              for i, p in enumerate(sizes)]
    groups.append({"overrides": {"model.cell": "failed"}, "params": 10})  # a point without a result is left out
    assert_png(sweep_plot(groups, tmp_path / "results.png", "sweep"))
