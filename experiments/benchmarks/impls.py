"""The implementations by name, imported only when used (PyTorch is optional)."""

from __future__ import annotations

import importlib
import importlib.util

IMPLEMENTATIONS = {
    "rnnlm": ("experiments.benchmarks.rnnlm_impl", "RnnlmBench"),
    "torch": ("experiments.benchmarks.torch_impl", "TorchBench"),
    "flax": ("experiments.benchmarks.flax_impl", "FlaxBench"),
    "rnnlm_cudnn": ("experiments.benchmarks.rnnlm_impl", "RnnlmCudnnBench"),  # model.recurrence="cudnn"
}
CELLS = {"rnnlm_cudnn": ("lstm",)}  # implementations that run only some cells; the rest run every cell


def available(name: str) -> bool:
    """torch is optional: it is benchmarked only where `import torch` would work; cuDNN needs a GPU."""
    if name not in IMPLEMENTATIONS:
        return False
    if name == "rnnlm_cudnn":
        from rnnlm import cudnn
        return cudnn.available()
    return name != "torch" or importlib.util.find_spec("torch") is not None


def runs_cell(name: str, cell: str) -> bool:
    return cell in CELLS.get(name, (cell,))


def load(name: str):
    """The class that benchmarks `name`: Bench(shape, cell, dropout, seed) with train/evaluate/sample."""
    module, cls = IMPLEMENTATIONS[name]
    return getattr(importlib.import_module(module), cls)
