"""Wall-clock timers, sample statistics and the matmul peak probes.

Every implementation's `train`/`evaluate`/`sample` blocks until its device is
done, so a host `perf_counter` around one call is the true elapsed time.
"""

from __future__ import annotations

import statistics
import time


def timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def summary(samples: list[float]) -> dict:
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples), "samples": samples}


def first_call_overhead(fn, repeats: int = 3) -> dict:
    """Compile time as first call minus a steady-state call (the issue's definition).

    For JAX the first call traces, lowers and compiles the step; for eager
    PyTorch it is one-off set-up (allocator, oneDNN primitives) and near zero.
    """
    first = timed(fn)
    steady = statistics.median(timed(fn) for _ in range(repeats))
    return {"first_call_s": first, "steady_s": steady, "compile_s": max(first - steady, 0.0)}


def jax_matmul_gflops(size: int, repeats: int = 10) -> float:
    """fp32 [n, n] @ [n, n] in one jitted call: the practical matmul peak of this machine for XLA."""
    import jax
    import jax.numpy as jnp

    keys = jax.random.split(jax.random.PRNGKey(0))
    a, b = (jax.random.normal(k, (size, size), jnp.float32) for k in keys)
    matmul = jax.jit(jnp.matmul)
    matmul(a, b).block_until_ready()
    seconds = statistics.median(timed(lambda: matmul(a, b).block_until_ready()) for _ in range(repeats))
    return 2 * size ** 3 / seconds / 1e9


def torch_matmul_gflops(size: int, repeats: int = 10) -> float:
    import torch

    from rnnlm.bench.torch_impl import DEVICE, _sync

    a, b = (torch.randn(size, size, device=DEVICE) for _ in range(2))

    def run():
        torch.mm(a, b)
        _sync()

    run()
    seconds = statistics.median(timed(run) for _ in range(repeats))
    return 2 * size ** 3 / seconds / 1e9
