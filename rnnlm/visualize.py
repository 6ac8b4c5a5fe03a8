"""Inside the network, per token: hidden units, gates and surprisal as an HTML page and a PNG.

    rnnlm visualize --workdir runs/shakespeare_char --text "ROMEO: ..." --units 3,17 [--layer -1] [--state h|c]
    rnnlm units --workdir runs/shakespeare_char [--feature inside_quotes|line_position|bracket_depth] [--top 5]

`visualize` colours every character of the text once per row, as in Karpathy et al.
(2015): red/blue for a hidden unit's positive/negative value, green for a gate's
activation (LSTM input/forget/output, GRU reset/update), orange for the model's
surprisal of that token in bits. Without `--units` it shows the 8 units that vary
most over the text; without `--text`, the start of the validation split.

`units` correlates every unit of every layer (h, and c for an LSTM) with simple
features of a character text and writes a table and a page of the best ones.
Outputs go to `<workdir>/visualize/` unless `--out` says otherwise.
"""

from __future__ import annotations

import dataclasses
import html
import json
import pathlib

import numpy as np

from rnnlm.errors import UserError
from rnnlm.studies import activations


@dataclasses.dataclass
class Row:
    label: str
    values: np.ndarray  # [T]; NaN = nothing to show
    kind: str  # "signed": [-s, s] red/blue; "gate": [0, 1] green; "magnitude": [0, max] orange

    @property
    def scale(self) -> float:
        finite = np.abs(self.values[np.isfinite(self.values)])
        top = float(finite.max()) if finite.size else 1.0
        return 1.0 if self.kind == "gate" or top == 0 else max(top, 1.0 if self.kind == "signed" else 0.0)


def parse_units(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(u) for u in text.split(",") if u.strip()]
    except ValueError:
        raise UserError(f"--units must be comma-separated unit indices, got {text!r}") from None


def activation_rows(result: activations.Trace, layer: int, state: str, units: list[int] | None,
                    count: int = 8) -> list[Row]:
    """Surprisal, then per unit its state and (for gated cells) its gates."""
    series = result.series(layer, state)
    hidden = series.shape[1]
    if units is None:  # the most variable units: the ones with something to show
        units = sorted(np.argsort(-series.std(axis=0))[:count].tolist())
    for unit in units:
        if not 0 <= unit < hidden:
            raise UserError(f"unit {unit} does not exist; layer {layer} has units 0..{hidden - 1}")
    gates = [k for k in result.layers[layer] if k.endswith("_gate")]
    rows = [Row("surprisal (bits)", result.surprisal, "magnitude")]
    for unit in units:
        rows.append(Row(f"layer {layer} {state}[{unit}]", series[:, unit], "signed"))
        rows += [Row(f"  {gate.replace('_', ' ')}[{unit}]", result.layers[layer][gate][:, unit], "gate")
                 for gate in gates]
    return rows


# --- rendering ------------------------------------------------------------------

def _color(value: float, row: Row, scale: float) -> str:
    if not np.isfinite(value):
        return "transparent"
    alpha = min(abs(value) / scale, 1.0)
    if row.kind == "gate":
        return f"rgba(0,150,60,{alpha:.3f})"
    if row.kind == "magnitude":
        return f"rgba(255,140,0,{alpha:.3f})"
    return f"rgba(220,50,47,{alpha:.3f})" if value > 0 else f"rgba(38,110,210,{alpha:.3f})"


def render_html(title: str, tokens: list[str], rows: list[Row], out, note: str = "") -> pathlib.Path:
    """One block per row; every token a span coloured by the row's value (hover for the number)."""
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
             "body{font-family:sans-serif;margin:1.5em} .row{margin:0.6em 0} .label{font-size:0.85em;color:#444}"
             ".text{font-family:monospace;white-space:pre-wrap;line-height:1.5;border:1px solid #ddd;padding:4px}"
             "</style></head><body>", f"<h2>{html.escape(title)}</h2>",
             "<p>red/blue: a unit's positive/negative value; green: gate activation in [0, 1]; "
             f"orange: surprisal, -log2 p(token | text before) in bits. {html.escape(note)}</p>"]
    for row in rows:
        scale = row.scale
        spans = []
        for token, value in zip(tokens, row.values):
            shown = html.escape(token).replace("\n", "↵\n")
            number = "" if not np.isfinite(value) else f"{value:.3f}"
            spans.append(f"<span style='background:{_color(value, row, scale)}' title='{number}'>{shown}</span>")
        parts.append(f"<div class='row'><div class='label'>{html.escape(row.label)} "
                     f"(full colour = {scale:.3g})</div><div class='text'>{''.join(spans)}</div></div>")
    parts.append("</body></html>")
    return _write(out, "\n".join(parts))


PNG_TOKENS = 100  # a wider grid is unreadable on a page; the HTML page shows every token


def render_png(title: str, tokens: list[str], rows: list[Row], out, max_tokens: int = PNG_TOKENS) -> pathlib.Path:
    """The first `max_tokens` tokens as a grid: one row per series, each cell labelled with its token."""
    from rnnlm.plots import pyplot, save_figure
    plt = pyplot()
    shown = [t.replace("\n", "↵")[:4] for t in tokens[:max_tokens]]
    width = max(len(t) for t in shown) * 0.09 + 0.06
    fig, axes = plt.subplots(len(rows), 1, figsize=(len(shown) * width + 2.5, 0.42 * len(rows) + 0.9), squeeze=False)
    maps = {"signed": "RdBu_r", "gate": "Greens", "magnitude": "Oranges"}
    for ax, row in zip(axes[:, 0], rows):
        scale = row.scale
        low = -scale if row.kind == "signed" else 0.0
        values = np.ma.masked_invalid(row.values[:len(shown)][None])
        ax.imshow(values, cmap=maps[row.kind], vmin=low, vmax=scale, aspect="auto")
        for x, (token, value) in enumerate(zip(shown, row.values)):
            dark = np.isfinite(value) and abs(value) / scale > 0.6  # white text on dark cells
            ax.text(x, 0, token, ha="center", va="center", fontsize=7, family="monospace",
                    color="white" if dark else "black")
        ax.set_yticks([0], [row.label.strip()], fontsize=7)
        ax.set_xticks([])
    axes[0, 0].set_title(title, fontsize=9)
    return save_figure(fig, out)


def _write(out, text: str) -> pathlib.Path:
    out = pathlib.Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    return out


# --- the commands ----------------------------------------------------------------

def visualize(workdir, text: str | None, units: list[int] | None, layer: int, state: str, out_dir=None,
              max_chars: int = 400, checkpoint: str = "latest") -> list[pathlib.Path]:
    from rnnlm.runs import load_run
    run = load_run(workdir, checkpoint)
    text, ids = activations.text_and_ids(run, text, max_chars)
    result = activations.trace(run.model, run.params, ids, run.tokenizer)
    layer = layer % len(result.layers) if -len(result.layers) <= layer < len(result.layers) else layer
    rows = activation_rows(result, layer, state, units)
    out_dir = pathlib.Path(out_dir or pathlib.Path(workdir) / "visualize")
    title = f"{run.config.model.cell} {run.workdir.name}, step {run.step}: layer {layer} {state}"
    shown = min(len(result.tokens), PNG_TOKENS)
    png_title = title + (f" (the first {shown} of {len(result.tokens)} tokens; the HTML page has all)"
                         if shown < len(result.tokens) else "")
    return [render_html(title, result.tokens, rows, out_dir / "activations.html"),
            render_png(png_title, result.tokens, rows, out_dir / "activations.png", max_tokens=PNG_TOKENS)]


def find_units(workdir, features: list[str], top: int, text: str | None, out_dir=None,
               max_chars: int = 20000, checkpoint: str = "latest") -> tuple[str, list[pathlib.Path]]:
    """The units most correlated with each feature: (markdown table, [units.md, units.json, units.html])."""
    from rnnlm.runs import load_run
    unknown = [f for f in features if f not in activations.FEATURES]
    if unknown:
        raise UserError(f"unknown feature {unknown[0]!r}; choose one of {', '.join(activations.FEATURES)}")
    run = load_run(workdir, checkpoint)
    if run.tokenizer.kind != "char":
        raise UserError(f"the features are defined on characters; {workdir} uses a {run.tokenizer.kind} tokenizer")
    text, ids = activations.text_and_ids(run, text, max_chars)
    result = activations.trace(run.model, run.params, ids, run.tokenizer)
    values = activations.text_features("".join(result.tokens))
    # A feature that never changes over the text (no quotes in it, say) correlates with nothing.
    found = {name: activations.unit_correlations(result, values[name], top) if values[name].std() > 0 else []
             for name in features}

    lines = [f"# Units most correlated with text features: {run.workdir} (step {run.step}, {len(ids):,} characters)",
             "", "| feature | rank | layer | state | unit | Pearson r |", "|---|---|---|---|---|---|"]
    for name, units in found.items():
        lines += [f"| {name} | {rank} | {u['layer']} | {u['state']} | {u['unit']} | {u['r']:+.3f} |"
                  for rank, u in enumerate(units, 1)] or [f"| {name} | — | constant over this text | | | |"]
    lines += ["", f"Show one: rnnlm visualize --workdir {workdir} --layer L --state S --units U"]
    table = "\n".join(lines) + "\n"

    shown = slice(0, min(len(ids), 600))
    rows = [Row("surprisal (bits)", result.surprisal[shown], "magnitude")]
    for name, units in found.items():
        if not units:
            continue  # constant over the text
        rows.append(Row(f"feature: {name}", values[name][shown], "magnitude"))
        rows += [Row(f"  layer {u['layer']} {u['state']}[{u['unit']}] r={u['r']:+.2f}",
                     result.layers[u["layer"]][u["state"]][shown, u["unit"]], "signed") for u in units]
    out_dir = pathlib.Path(out_dir or pathlib.Path(workdir) / "visualize")
    paths = [_write(out_dir / "units.md", table),
             _write(out_dir / "units.json", json.dumps({"workdir": str(workdir), "step": run.step,
                                                        "characters": len(ids), "units": found}, indent=1)),
             render_html(f"Units by feature: {run.workdir.name}", result.tokens[shown], rows, out_dir / "units.html",
                         note="Rows below each feature: its most correlated units.")]
    return table, paths
