"""The implementations by name, imported only when used (PyTorch is optional)."""

from __future__ import annotations

import importlib
import importlib.util

IMPLEMENTATIONS = {
    "rnnlm": ("rnnlm.bench.rnnlm_impl", "RnnlmBench"),
    "torch": ("rnnlm.bench.torch_impl", "TorchBench"),
    "flax": ("rnnlm.bench.flax_impl", "FlaxBench"),
}


# The cells each implementation has; rnnlm benchmarks every cell of `rnnlm.bench.shapes.GATES`.
CELLS = {"torch": ("lstm", "gru"), "flax": ("lstm", "gru")}


def supports(name: str, cell: str) -> bool:
    return cell in CELLS.get(name, (cell,))


def available(name: str) -> bool:
    """torch is optional: it is benchmarked only where `import torch` would work."""
    if name not in IMPLEMENTATIONS:
        return False
    return name != "torch" or importlib.util.find_spec("torch") is not None


def load(name: str):
    """The class that benchmarks `name`: Bench(shape, cell, dropout, seed) with train/evaluate/sample."""
    module, cls = IMPLEMENTATIONS[name]
    return getattr(importlib.import_module(module), cls)
