"""Side-by-side speed and memory benchmark: rnnlm vs. PyTorch vs. a plain Flax `nn.RNN`.

The full table (every config and cell, all implementations, interleaved repetitions):

    python -m rnnlm.bench --out bench.json        # or: rnnlm bench --out bench.json

The memory figure (peak RSS of one train step vs. sequence length, one fresh
process per point):

    python -m rnnlm.bench --memory-figure --configs ptb_medium --out bench_memory.json

Besides the main table (medians, ranges, ratios to PyTorch with the range of
the per-repetition ratios), a full run prints the project's speed targets
against the matmul probe: what each asks for and the best ratio reachable at
the probe's rate (`report.TARGETS`, `report.target_rows`).

`--tiny` shrinks every shape so either runs in seconds (what the tests do). On a
machine busy with other work add `--torch-threads 1`: PyTorch's OpenMP threads
spin-wait for each other and stall badly when the cores are oversubscribed.

Modules: `shapes` (the configs, the FLOP count, the shared data); one module
per implementation (`rnnlm_impl`, `flax_impl`, `torch_impl`, each a class with
`train(steps)`, `evaluate(steps)` and `sample(batch, length)` that block until
done) and `impls` (them by name, torch optional); `timing` (timers, matmul peak
probes); `memory` (the per-process peak RSS worker); `report` (markdown and
JSON); `run` (the command line).
"""
