"""rnnlm/visualize.py: the activation page and PNG, the units table, and their bad input."""

import html.parser
import json

import pytest

from conftest import assert_png
from rnnlm import cli

pytestmark = pytest.mark.slow  # every test here trains end to end


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


def test_visualize_page_and_png(char_run, tmp_path):
    text = 'She said "go (now)".\n'
    assert cli.main(["visualize", "--workdir", str(char_run), "--text", text, "--units", "0,11", "--layer", "0",
                     "--out", str(tmp_path)]) == 0
    page = parse_html(tmp_path / "activations.html")
    rows = 1 + 2 * (1 + 3)  # surprisal; per unit: h and the input/forget/output gates
    assert page.rows == rows and page.spans == rows * len(text)
    assert "forget gate[11]" in (tmp_path / "activations.html").read_text()
    assert_png(tmp_path / "activations.png")
    assert cli.main(["visualize", "--workdir", str(char_run), "--state", "c", "--max-chars", "30",
                     "--out", str(tmp_path / "default")]) == 0
    assert parse_html(tmp_path / "default" / "activations.html").rows == 1 + 8 * 4  # the 8 most variable units


def test_units_table_and_page(char_run, tmp_path):
    assert cli.main(["units", "--workdir", str(char_run), "--top", "3", "--out", str(tmp_path)]) == 0
    found = json.loads((tmp_path / "units.json").read_text())["units"]
    assert set(found) == {"inside_quotes", "line_position", "bracket_depth"}
    assert all(len(v) == 3 and all(-1 <= u["r"] <= 1 for u in v) for v in found.values())
    assert all(abs(v[0]["r"]) >= abs(v[-1]["r"]) for v in found.values())
    assert "| line_position | 1 |" in (tmp_path / "units.md").read_text()
    assert parse_html(tmp_path / "units.html").rows == 1 + 3 * (1 + 3)


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
def test_bad_input_is_one_line_and_exit_2(char_run, args, message, capsys):
    assert cli.main([str(char_run) if a == "RUN" else a for a in args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rnnlm: error: ") and message in err and err.count("\n") == 1
