"""Data parallelism with `jax.jit`, a device `Mesh` and `NamedSharding`, on one or many hosts.

One mesh axis, `data`, spans the devices of every process (current JAX builds
`pmap` on the same machinery and recommends this form). Batches and the
recurrent carry are split along their batch axis; parameters and optimizer
state are replicated (an `fsdp` axis would shard them; not needed at these
sizes). Stream b of a batch always lands on the same device, window after
window, so a carried hidden state stays with its stream — the bug of splitting
the hidden state on the wrong axis (PyTorch DataParallel) cannot happen.

Multi-host: every process holds only the rows (streams) of the global batch
that its own devices own (`local_rows`), and the global array is assembled
with `jax.make_array_from_process_local_data`.
"""

from __future__ import annotations

import functools
import logging
import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from rnnlm.errors import UserError

DATA = "data"


def initialize_distributed(mode: str = "auto", coordinator: str = "", num_processes: int = 0,
                           process_id: int = -1) -> bool:
    """Start JAX's distributed runtime when asked; returns whether it was started.

    mode: "off"; "on" (always; on TPU pods, GKE and SLURM JAX finds the peers by
    itself); "auto" (start when a coordinator is given or the TPU slice has
    several hosts). Arguments fall back to RNNLM_COORDINATOR,
    RNNLM_NUM_PROCESSES and RNNLM_PROCESS_ID.
    """
    coordinator = coordinator or os.environ.get("RNNLM_COORDINATOR", "")
    num_processes = num_processes or int(os.environ.get("RNNLM_NUM_PROCESSES", "0"))
    process_id = process_id if process_id >= 0 else int(os.environ.get("RNNLM_PROCESS_ID", "-1"))
    multi_host_tpu = "," in os.environ.get("TPU_WORKER_HOSTNAMES", "")
    if mode not in ("auto", "on", "off"):
        raise UserError(f"--distributed must be auto, on or off, got {mode!r}")
    if mode == "off" or (mode == "auto" and not (coordinator or multi_host_tpu)):
        return False
    kwargs = {}
    if coordinator:
        if num_processes < 1 or not 0 <= process_id < num_processes:
            raise UserError(f"coordinator {coordinator} needs a process count and an id in [0, count); "
                            f"got {num_processes} and {process_id}")
        kwargs = dict(coordinator_address=coordinator, num_processes=num_processes, process_id=process_id)
    if jax.config.jax_platforms in (None, "", "cpu") and not multi_host_tpu:
        # CPU processes exchange data through gloo (tests and laptops); accelerators use their own.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**kwargs)
    logging.info("distributed: process %d of %d, %d devices in all",
                 jax.process_index(), jax.process_count(), jax.device_count())
    return True


def make_mesh(num_devices: int = 0) -> Mesh:
    """A `data` mesh over the first num_devices devices (0 = all, on all processes)."""
    devices = jax.devices()
    if num_devices < 0 or num_devices > len(devices):
        raise UserError(f"train.num_devices={num_devices}, but {len(devices)} device(s) are visible")
    return Mesh(np.asarray(devices[:num_devices or len(devices)]), (DATA,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA))


def check_batch_size(batch_size: int, mesh: Mesh, what: str = "train.batch_size") -> None:
    devices = mesh.devices.size
    if batch_size <= 0:
        raise UserError(f"{what} must be positive, got {batch_size}")
    if batch_size % devices:
        raise UserError(f"{what}={batch_size} does not divide by the {devices} devices of the mesh")


def local_rows(global_batch: int, mesh: Mesh) -> slice:
    """The rows of a [global_batch, ...] array that this process's devices hold."""
    indices = batch_sharded(mesh).addressable_devices_indices_map((global_batch,)).values()
    starts = [index[0].start or 0 for index in indices]
    stops = [global_batch if index[0].stop is None else index[0].stop for index in indices]
    return slice(min(starts), max(stops))


def shard_batch(local_tree, mesh: Mesh):
    """This process's rows (leading axis) -> global arrays split over the `data` axis."""
    sharding = batch_sharded(mesh)
    return jax.tree_util.tree_map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
                                  local_tree)


def zeros_carry(make_carry, global_batch: int, mesh: Mesh):
    """The initial carry built directly on its devices (no host copy, any number of hosts)."""
    return _carry_builder(make_carry, global_batch, mesh)()


@functools.lru_cache(maxsize=32)
def _carry_builder(make_carry, global_batch: int, mesh: Mesh):
    # Cached: a fresh jit per call would recompile at every epoch start and evaluation.
    return jax.jit(lambda: make_carry(global_batch), out_shardings=batch_sharded(mesh))
