"""The benchmark's results as a markdown table (stdout) and a JSON document (--out).

Throughput cells read `median [min–max] ×r`, r = this implementation's median
over PyTorch's for the same config and cell: above 1 is faster than PyTorch;
for compile time and memory, below 1 is less than PyTorch.
"""

from __future__ import annotations

import json
import pathlib

BASELINE = "torch"


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


def _throughput(row: dict, key: str) -> str:
    s = row[key]
    return f"{number(s['median'])} [{number(s['min'])}–{number(s['max'])}]{_ratio(row, key)}"


def add_ratios(rows: list[dict], keys: list[str]) -> None:
    """ratio_to_torch[key] = median(row) / median(torch row of the same config and cell), in place."""
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
        cells = ([row["config"], row["cell"], row["impl"], _throughput(row, "train_tokens_per_s"),
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
                     f"{settings['sample_length']} sampled tokens; median [min–max] ×(median / PyTorch's).")
        parts.append(main_table(doc))
        probes = ", ".join(f"{name} {number(g)} GFLOP/s" for name, g in doc["matmul_peak_gflops"].items())
        # On NVIDIA GPUs JAX's float32 matmuls run as TF32 by default (and the benchmark lets PyTorch's do so).
        precision = "float32 inputs, TF32 arithmetic" if env.get("jax_backend") == "gpu" else "fp32"
        parts.append(f"Matmul peak probe ({settings['peak_size']}² {precision}): {probes}. "
                     "compile s: first train call minus a steady one. step peak RSS: growth of VmHWM "
                     "during one steady train step, in a fresh process.")
    if doc.get("memory_figure"):
        parts.append("### Peak RSS of one train step vs. sequence length (MB, fresh process per point)")
        parts.append(memory_table(doc))
    return "\n\n".join(parts) + "\n"


def write_json(doc: dict, path) -> None:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")
