"""Peak host memory (RSS) of one train step, each measurement in a fresh process.

A process's peak RSS only ever grows, so measurements in one process would mix:
every point gets its own `python -m rnnlm.bench.memory` worker. The
worker builds the model, runs two steps (compile, then a steady one), waits for deferred frees, resets the
kernel's peak counter (`/proc/self/clear_refs` "5", Linux >= 4.0), reads VmRSS,
runs one more step and reads VmHWM: the delta is what one step needs on top of
what is already live (parameters, optimizer state, compiled code).

The worker fixes glibc's mmap threshold (MALLOC_MMAP_THRESHOLD_): by default it
rises after the first large free, so the warm-up step's buffers would stay in
the heap, already counted in VmRSS, and the measured step would look free.
With a fixed 64 KiB threshold every large buffer is mapped and unmapped, so
the step's buffers are counted when it allocates them, in JAX and PyTorch alike.
This sees host memory only: on a GPU it measures the host side.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import pathlib
import re
import subprocess
import sys
import time

from rnnlm.bench import impls, shapes

REPO = pathlib.Path(__file__).resolve().parents[2]
SETTLE_S = 0.5


def _status_kib(field: str) -> int:
    return int(re.search(rf"^{field}:\s+(\d+) kB", pathlib.Path("/proc/self/status").read_text(), re.M).group(1))


def _settle() -> None:
    """Let freed buffers go back to the OS first: JAX's CPU client frees a step's
    temporaries asynchronously, a few hundred ms after the results are ready."""
    gc.collect()
    time.sleep(SETTLE_S)


def _reset_peak() -> bool:
    try:
        pathlib.Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def measure_here(impl: str, shape: shapes.Shape, cell: str, dropout: float) -> dict:
    """Runs in the worker process: build, warm up, then the peak-RSS delta of one step in MiB."""
    bench = impls.load(impl)(shape, cell, dropout)
    before_first = _status_kib("VmRSS")
    bench.train(1)  # compiles (JAX), sets up kernels (PyTorch)
    bench.train(1)
    _settle()
    if _reset_peak():
        method, before = "steady step, peak reset", _status_kib("VmRSS")
    else:  # no clear_refs: the peak since before the first step, compilation included
        method, before = "first step incl. compile", before_first
    bench.train(1)
    return {"peak_rss_delta_mb": (_status_kib("VmHWM") - before) / 1024, "rss_before_mb": before / 1024,
            "method": method}


def measure(impl: str, shape: shapes.Shape, cell: str, dropout: float = 0.0, torch_threads: int = 0,
            timeout: float = 900) -> dict:
    """One measurement in a fresh Python process; returns the worker's JSON record."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "rnnlm.bench.memory", "--impl", impl, "--cell", cell,
               "--dropout", str(dropout), "--torch-threads", str(torch_threads),
               "--shape", json.dumps(dataclasses.asdict(shape))]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"memory worker for {impl} {shape.name} {cell} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="internal: one peak-RSS measurement, printed as JSON")
    parser.add_argument("--impl", required=True, choices=sorted(impls.IMPLEMENTATIONS))
    parser.add_argument("--cell", required=True, choices=sorted(shapes.GATES))
    parser.add_argument("--shape", required=True, help="JSON of a shapes.Shape")
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--torch-threads", type=int, default=0)
    args = parser.parse_args(argv)
    if args.torch_threads and args.impl == "torch":
        import torch
        torch.set_num_threads(args.torch_threads)
    shape = shapes.Shape(**json.loads(args.shape))
    print(json.dumps(measure_here(args.impl, shape, args.cell, args.dropout)))


if __name__ == "__main__":
    main()
