"""The benchmark's results as markdown tables (stdout) and a JSON document (--out).

Throughput cells read `median [min–max] ×r (lo–hi)`, r = this implementation's
median over PyTorch's for the same config and cell: above 1 is faster than
PyTorch; for compile time and memory, below 1 is less than PyTorch. (lo–hi) is
the range of the per-repetition ratios: each repetition times the
implementations back to back, so their ratio cancels the slow drifts of a
shared machine that the medians carry, and the range shows how far one run's
ratio can be trusted.

A second table puts the project's speed targets (`TARGETS`) against the matmul
peak probe: the rate in GFLOP/s a target asks for (the target times PyTorch's
rate), and the ratio rnnlm would reach if every FLOP it executes ran at JAX's
probe rate. A target above that ceiling cannot be met in this precision
without beating the probe itself. The GFLOP/s columns count the model's FLOPs
(the same for every implementation); where rnnlm executes fewer (its folded
embedding, `executed_flops_per_token`), the ceiling counts those.
"""

from __future__ import annotations

import json
import pathlib
import statistics

BASELINE = "torch"
# The speed targets of rnnlm's performance issue: tokens/s over PyTorch's, per metric and config.
TARGETS = {"train": {"ptb_small": 1.3, "char": 1.3, "ptb_medium": 1.0},
           "eval": {"ptb_small": 1.5, "char": 1.5, "ptb_medium": 1.5}}


def number(x) -> str:
    if x is None:
        return "—"
    if abs(x) >= 1e6:
        return f"{x / 1e6:.2f}M"
    if abs(x) >= 1e4:
        return f"{x / 1e3:.1f}k"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.3g}"


def _ratio(row: dict, key: str) -> str:
    ratio = row.get("ratio_to_torch", {}).get(key)
    return "" if ratio is None or row["impl"] == BASELINE else f" ×{ratio:.2f}"


def _range(paired: dict | None) -> str:
    """' (lo–hi)' of per-repetition ratios, or nothing where there are none."""
    return "" if paired is None else f" ({paired['min']:.2f}–{paired['max']:.2f})"


def _throughput(row: dict, key: str) -> str:
    s = row[key]
    return (f"{number(s['median'])} [{number(s['min'])}–{number(s['max'])}]"
            f"{_ratio(row, key)}{_range(row.get('paired_ratio_to_torch', {}).get(key))}")


def add_ratios(rows: list[dict], keys: list[str]) -> None:
    """In place: ratio_to_torch[key] = median(row) / median(torch row of the same config and cell), and
    paired_ratio_to_torch[key] = median, min and max of the per-repetition ratios (sample i of both rows
    comes from repetition i)."""
    def value(row, key):
        v = row.get(key)
        return v["median"] if isinstance(v, dict) else v

    baselines = {(r["config"], r["cell"]): r for r in rows if r["impl"] == BASELINE}
    for row in rows:
        base = baselines.get((row["config"], row["cell"]))
        if base is None:
            continue
        row["ratio_to_torch"] = {k: value(row, k) / value(base, k) for k in keys
                                 if value(row, k) is not None and value(base, k)}
        if row is base:
            continue
        row["paired_ratio_to_torch"] = {}
        for k in keys:
            mine, theirs = row.get(k), base.get(k)
            if isinstance(mine, dict) and isinstance(theirs, dict) and len(mine["samples"]) == len(theirs["samples"]):
                ratios = sorted(a / b for a, b in zip(mine["samples"], theirs["samples"]))
                row["paired_ratio_to_torch"][k] = {"median": statistics.median(ratios),
                                                   "min": ratios[0], "max": ratios[-1]}


def target_rows(doc: dict, impl: str = "rnnlm") -> list[dict]:
    """For each TARGETS entry that this run measured: what it asks of the machine, and where `impl` is.

    needed_gflops = target × PyTorch's rate (model FLOPs); ceiling = JAX's probe rate / PyTorch's
    rate × saved, the ratio `impl` would reach with every FLOP of its step at the probe's rate, where
    saved = the model's FLOPs / those `impl` executes (1 unless it reports `executed_flops_per_token`);
    the share of the probe that the target needs is also counted in executed FLOPs.
    """
    probe = doc.get("matmul_peak_gflops", {}).get("jax")
    rows = {(r["config"], r["cell"], r["impl"]): r for r in doc["results"]}
    out = []
    for metric, per_config in TARGETS.items():
        for (config, cell, name), row in rows.items():
            base = rows.get((config, cell, BASELINE))
            if name != impl or base is None or config not in per_config or not probe:
                continue
            target, torch_rate = per_config[config], base[f"{metric}_gflops"]
            key, flops_key = f"{metric}_tokens_per_s", "train" if metric == "train" else "forward"
            saved = 1.0
            if "executed_flops_per_token" in row:
                saved = row["flops_per_token"][flops_key] / row["executed_flops_per_token"][flops_key]
            out.append({"config": config, "cell": cell, "metric": metric, "target": target,
                        "torch_gflops": torch_rate, "needed_gflops": target * torch_rate,
                        "needed_fraction_of_probe": target * torch_rate / saved / probe,
                        "gflops": row[f"{metric}_gflops"], "ratio": row["ratio_to_torch"][key],
                        "paired": row.get("paired_ratio_to_torch", {}).get(key),
                        "ceiling": probe / torch_rate * saved})
    return out


def target_table(doc: dict) -> str:
    header = ["config", "cell", "target", "PyTorch GFLOP/s", "target needs (share of JAX probe in executed FLOPs)", "rnnlm GFLOP/s",
              "rnnlm now (per-rep range)", "ceiling at the probe", "met"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for t in doc.get("targets", []):
        cells = [t["config"], t["cell"], f"{t['metric']} {t['target']}x", number(t["torch_gflops"]),
                 f"{number(t['needed_gflops'])} ({100 * t['needed_fraction_of_probe']:.0f}%)", number(t["gflops"]),
                 f"×{t['ratio']:.2f}{_range(t['paired'])}", f"×{t['ceiling']:.2f}",
                 "yes" if t["ratio"] >= t["target"] else ("out of reach" if t["ceiling"] < t["target"] else "no")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main_table(doc: dict) -> str:
    sample_keys = [f"sample_b{b}_tokens_per_s" for b in doc["settings"]["sample_batches"]]
    header = (["config", "cell", "impl", "train tok/s", "eval tok/s"]
              + [f"sample b={b} tok/s" for b in doc["settings"]["sample_batches"]]
              + ["compile s", "step peak RSS MB", "train GFLOP/s (% peak)"])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in doc["results"]:
        peak = row.get("train_fraction_of_peak")
        gflops = f"{number(row['train_gflops'])} ({100 * peak:.0f}%)" if peak else number(row["train_gflops"])
        memory = row.get("peak_rss_delta_mb")
        cell = row["cell"] + (f" H={row['shape']['hidden']}" if doc["settings"].get("equal_params") else "")
        cells = ([row["config"], cell, row["impl"], _throughput(row, "train_tokens_per_s"),
                  _throughput(row, "eval_tokens_per_s")] + [_throughput(row, k) for k in sample_keys]
                 + [number(row["compile_s"]) + _ratio(row, "compile_s"),
                    number(memory) + (_ratio(row, "peak_rss_delta_mb") if memory is not None else ""), gflops])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def memory_table(doc: dict) -> str:
    seq_lens = doc["settings"]["seq_lens"]
    header = ["config", "cell", "impl"] + [f"T={t} MB" for t in seq_lens]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    groups: dict[tuple, dict] = {}
    for point in doc["memory_figure"]:
        groups.setdefault((point["config"], point["cell"], point["impl"]), {})[point["seq_len"]] = point
    for (config, cell, impl), points in groups.items():
        values = [number(points[t]["peak_rss_delta_mb"]) if t in points else "—" for t in seq_lens]
        lines.append("| " + " | ".join([config, cell, impl] + values) + " |")
    return "\n".join(lines)


def markdown(doc: dict) -> str:
    env, settings = doc["environment"], doc["settings"]
    title = (f"## rnnlm benchmark — {env['device']}, {env['cpu_count']} CPU cores"
             f"{', tiny shapes' if settings['tiny'] else ''}")
    parts = [title]
    if doc.get("results"):
        parts.append(f"{settings['reps']} interleaved repetitions of {settings['steps']} train/eval steps and "
                     f"{settings['sample_length']} sampled tokens; median [min–max] ×(median / PyTorch's) "
                     "(range of the per-repetition ratios).")
        parts.append(main_table(doc))
        probes = ", ".join(f"{name} {number(g)} GFLOP/s" for name, g in doc["matmul_peak_gflops"].items())
        # On NVIDIA GPUs JAX's float32 matmuls run as TF32 by default (and the benchmark lets PyTorch's do so).
        precision = "float32 inputs, TF32 arithmetic" if env.get("jax_backend") == "gpu" else "fp32"
        parts.append(f"Matmul peak probe ({settings['peak_size']}² {precision}): {probes}. "
                     "compile s: first train call minus a steady one. step peak RSS: growth of VmHWM "
                     "during one steady train step, in a fresh process.")
        if doc.get("targets"):
            parts.append("### Speed targets against the matmul probe\n\nGFLOP/s of the model's matmuls "
                         "(the FLOP count above). ceiling: the ratio to PyTorch with every FLOP of rnnlm's "
                         "step at JAX's probe rate, counting the FLOPs rnnlm executes (fewer where it folds "
                         "the embedding into the first layer); a target above it is out of reach without "
                         "beating the probe.")
            parts.append(target_table(doc))
    if doc.get("memory_figure"):
        parts.append("### Peak RSS of one train step vs. sequence length (MB, fresh process per point)")
        parts.append(memory_table(doc))
    return "\n\n".join(parts) + "\n"


def write_json(doc: dict, path) -> None:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")
