"""Plots to PNG: training curves from metrics.jsonl, sweep results, and the two studies' figures.

    rnnlm plot --workdir runs/ptb_small                         # -> runs/ptb_small/curves.png
    rnnlm plot --workdir runs/a --workdir runs/b --out ab.png   # runs overlaid
    rnnlm plot --workdir runs/ablation_cell_type_char           # a sweep: every run in it

Matplotlib runs with the Agg backend: no display is needed.
"""

from __future__ import annotations

import pathlib

from rnnlm.errors import UserError
from rnnlm.workdir import read_metrics


def pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def expand_runs(workdirs, marker: str = "metrics.jsonl") -> list[pathlib.Path]:
    """Each workdir that holds `marker`, or, for a sweep directory, its runs that do (sorted)."""
    runs = []
    for workdir in map(pathlib.Path, workdirs):
        if not workdir.is_dir():
            raise UserError(f"workdir not found: {workdir}")
        if (workdir / marker).exists():
            runs.append(workdir)
            continue
        inner = sorted(p for p in workdir.iterdir() if (p / marker).exists())
        if not inner:
            raise UserError(f"no {marker} in {workdir} nor in its subdirectories (not a run or a sweep)")
        runs.extend(inner)
    return runs


def run_labels(runs: list[pathlib.Path]) -> list[str]:
    names = [r.name for r in runs]
    return [n if names.count(n) == 1 else str(r) for n, r in zip(names, runs)]


def training_curves(workdirs, out) -> pathlib.Path:
    """Loss (train line, validation dots), gradient norm and learning rate against step; one colour per run."""
    runs = expand_runs(workdirs)
    plt = pyplot()
    panels = [("loss", "loss (nats/token): line train, dots valid"), ("grad_norm", "gradient norm"),
              ("learning_rate", "learning rate")]
    rows = -(-len(runs) // 3)  # the legend sits below the panels, three runs to a row
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.8 + 0.25 * rows), layout="constrained")
    palette = plt.get_cmap("tab10" if len(runs) <= 10 else "tab20")
    for index, (run, label) in enumerate(zip(runs, run_labels(runs))):
        records = read_metrics(run)
        color = palette(index % palette.N)
        train = [r for r in records if r.get("split") == "train"]
        valid = [r for r in records if r.get("split") == "valid"]
        for ax, (key, _) in zip(axes, panels):
            points = [(r["step"], r[key]) for r in train if key in r]
            if points:
                ax.plot(*zip(*points), color=color, lw=1.2, label=label if key == "loss" else None)
        if valid:
            axes[0].plot([r["step"] for r in valid], [r["loss"] for r in valid], "o--", color=color, ms=4)
    for ax, (key, title) in zip(axes, panels):
        ax.set_xlabel("step")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if key in ("grad_norm", "learning_rate"):  # both span decades (a schedule's decay, spikes)
            ax.set_yscale("log")
    fig.legend(loc="outside lower center", ncol=min(3, len(runs)), fontsize="small", frameon=False)
    return save_figure(fig, out)


def validation_seconds(run: pathlib.Path) -> list[tuple[float, dict]]:
    """(training seconds, record) of a run's validation records. Runs since train_seconds was logged read
    it; older ones estimate it from the train records' rates (tokens per record: the steps since the last
    record x batch x bptt of the run's config)."""
    from rnnlm.config import load_config
    records = read_metrics(run)
    valid = [r for r in records if r.get("split") == "valid"]
    if all("train_seconds" in r for r in valid):
        return [(r["train_seconds"], r) for r in valid]
    config = load_config(run / "config.json")
    per_step = config.train.batch_size * config.train.bptt
    clock, last_step, at_step = 0.0, 0, {}
    for r in records:
        if r.get("split") == "train" and r.get("tokens_per_sec"):
            clock += (r["step"] - last_step) * per_step / r["tokens_per_sec"]
            last_step = r["step"]
            at_step[r["step"]] = clock
    return [(at_step[r["step"]], r) for r in valid if r["step"] in at_step]


def quality_against_time(workdirs, out, title: str = "perplexity against training time") -> pathlib.Path:
    """Validation perplexity against training wall time (minutes), one curve per run, log scale; a finished
    run's test perplexity is a star at its last validation's time."""
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter
    runs = expand_runs(workdirs)
    curves = [(run, label, [(t, r) for t, r in validation_seconds(run) if "perplexity" in r])
              for run, label in zip(runs, run_labels(runs))]
    if not any(points for _, _, points in curves):
        raise UserError("no validation perplexity to plot against time in "
                        + ", ".join(str(run) for run in runs) + " (a classifier, or no validation yet)")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2), layout="constrained")
    for run, label, points in curves:
        if not points:
            continue
        line, = ax.plot([t / 60 for t, _ in points], [r["perplexity"] for _, r in points], "o-", ms=3,
                        label=f"{label}: valid")
        test = [r for r in read_metrics(run) if r.get("split") in ("test", "test_best")]  # the best's, when kept
        if test:
            ax.plot(points[-1][0] / 60, test[-1]["perplexity"], "*", ms=11, color=line.get_color(),
                    label=f"{label}: test {test[-1]['perplexity']:.2f}")
    ax.set_xlabel("training time (minutes)")
    ax.set_ylabel("perplexity (log scale)")
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_minor_locator(LogLocator(subs=(1.0, 1.2, 1.5, 2.0, 3.0, 4.0, 5.0, 7.0)))
    ax.yaxis.set_major_formatter(ScalarFormatter())
    low, high = ax.get_ylim()
    # Minor labels only where the curves span less than a decade; beyond it they would overlap.
    ax.yaxis.set_minor_formatter(ScalarFormatter() if high / low < 10 else NullFormatter())
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")
    return save_figure(fig, out)


def sweep_plot(groups: list[dict], out, title: str) -> pathlib.Path:
    """Validation perplexity against parameters, one point per sweep row (error bars over seeds).

    When every row has about the same parameter count (a comparison at equal
    size, like the cell ablation) the rows are placed side by side instead.
    """
    plt = pyplot()
    groups = [g for g in groups if "valid ppl" in g]
    params = [g["params"] for g in groups]
    if params and max(params) <= 1.05 * min(params):
        return _equal_size_plot(plt, groups, out, title)
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for g in groups:
        m = g["valid ppl"]
        ax.errorbar(g["params"], m["mean"], yerr=m["std"] if m["n"] > 1 else None, fmt="o", capsize=3)
        ax.annotate(_point_label(g), (g["params"], m["mean"]), textcoords="offset points", xytext=(5, 4), fontsize=8)
    if max(params) > 3 * min(params):
        ax.set_xscale("log")
    ax.margins(x=0.25, y=0.1)
    ax.set_xlabel("parameters")
    ax.set_ylabel("validation perplexity")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    return save_figure(fig, out)


def _point_label(g: dict) -> str:
    return ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in g["overrides"].items())


def _equal_size_plot(plt, groups: list[dict], out, title: str) -> pathlib.Path:
    fig, ax = plt.subplots(figsize=(max(6.5, 1.3 * len(groups)), 4.5))
    for x, g in enumerate(groups):
        m = g["valid ppl"]
        ax.errorbar(x, m["mean"], yerr=m["std"] if m["n"] > 1 else None, fmt="o", capsize=4, color=f"C{x % 10}")
    ax.set_xticks(range(len(groups)), [_point_label(g).replace(", ", "\n") for g in groups], fontsize=8)
    ax.set_xlim(-0.5, len(groups) - 0.5)
    ax.set_ylabel("validation perplexity")
    ax.set_title(f"{title} ({min(g['params'] for g in groups):,}-{max(g['params'] for g in groups):,} parameters)")
    ax.grid(alpha=0.3, axis="y")
    return save_figure(fig, out)


def lag_plot(curves: list[dict], out, title: str) -> pathlib.Path:
    """Gradient norm against lag, log scale: solid = trained, dashed = freshly initialised."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = {}
    for curve in curves:
        color = colors.setdefault(curve["label"], f"C{len(colors) % 10}")
        ax.plot(range(len(curve["norms"])), curve["norms"], "-" if curve["state"] == "trained" else "--",
                color=color, label=f"{curve['label']} ({curve['state']})")
    ax.set_yscale("log")
    ax.set_xlabel("lag k (steps back from the loss)")
    ax.set_ylabel("‖∂ loss_t / ∂ h_(t-k)‖ (geometric mean)")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")
    return save_figure(fig, out)


def success_plot(rates: dict, distances: list[int], out, title: str, chance: float) -> pathlib.Path:
    """Success rate against distance, one line per cell; rates = {cell: [(mean, std) per distance]}."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    ax.axhline(chance, ls=":", color="gray", label="constant answer")
    for cell, values in rates.items():
        means = [m for m, _ in values]
        stds = [s for _, s in values]
        ax.errorbar(distances, means, yerr=stds, marker="o", capsize=3, label=cell)
    ax.set_xscale("log")
    ax.set_xlabel("distance between the marked numbers (steps)")
    ax.set_ylabel("success rate (|error| < 0.04)")
    ax.set_ylim(-0.03, 1.03)
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    return save_figure(fig, out)


def step_time_plot(rows: list[dict], out, title: str) -> pathlib.Path:
    """Microseconds per token against the window length T, one line per cell and implementation:
    solid = a train step, dashed = evaluation. rows: benchmark results of one shape at several T."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True)
    lines: dict[tuple, list] = {}
    for row in rows:
        lines.setdefault((row["cell"], row["impl"], row["shape"]["hidden"]), []).append(row)
    for i, ((cell, impl, hidden), points) in enumerate(sorted(lines.items())):
        points.sort(key=lambda r: r["shape"]["seq_len"])
        lengths = [r["shape"]["seq_len"] for r in points]
        for ax, key in zip(axes, ("train_tokens_per_s", "eval_tokens_per_s")):
            ax.plot(lengths, [1e6 / r[key]["median"] for r in points], marker="o", color=f"C{i % 10}",
                    ls="-" if impl == "rnnlm" else "--", label=f"{cell} H={hidden} ({impl})")
    for ax, what in zip(axes, ("train step", "evaluation")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("window length T (tokens per step kept: B x T fixed)")
        ax.set_ylabel(f"µs per token, {what} (median)")
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize="small")
    fig.suptitle(title)
    return save_figure(fig, out)


def save_figure(fig, out) -> pathlib.Path:
    out = pathlib.Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    fig.savefig(out, dpi=110)
    pyplot().close(fig)
    return out
