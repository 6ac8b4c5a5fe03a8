"""Data parallelism with `jax.jit`, a device `Mesh` and `NamedSharding`.

One mesh axis, `data`, spans every device of every process. Batches and the
recurrent carry are split along their batch axis (axis 0); parameters and
optimizer state are replicated. Stream b of a batch therefore always lives on
the same device, window after window, so a carried hidden state stays with its
stream.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from rnnlm.errors import UserError

DATA = "data"


def make_mesh(devices=None) -> Mesh:
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (DATA,))


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


def shard_batch(tree, mesh: Mesh):
    """Host arrays with a leading global batch axis -> arrays split over the `data` axis."""
    sharding = batch_sharded(mesh)
    return jax.tree_util.tree_map(lambda x: jax.device_put(x, sharding), tree)


def replicate(tree, mesh: Mesh):
    return jax.device_put(tree, replicated(mesh))
