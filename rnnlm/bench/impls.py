"""The implementations by name, imported only when used (PyTorch is optional)."""

from __future__ import annotations

import importlib
import importlib.util

IMPLEMENTATIONS = {
    "rnnlm": ("rnnlm.bench.rnnlm_impl", "RnnlmBench"),
    "torch": ("rnnlm.bench.torch_impl", "TorchBench"),
    "flax": ("rnnlm.bench.flax_impl", "FlaxBench"),
}


def available(name: str) -> bool:
    """torch is optional: it is benchmarked only where `import torch` would work."""
    if name not in IMPLEMENTATIONS:
        return False
    return name != "torch" or importlib.util.find_spec("torch") is not None


def load(name: str):
    """The class that benchmarks `name`: Bench(shape, cell, dropout, seed) with train/evaluate/sample."""
    module, cls = IMPLEMENTATIONS[name]
    return getattr(importlib.import_module(module), cls)
