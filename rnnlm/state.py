"""The train state, how a run's parameters start, and how a saved run's parameters are read back."""

from __future__ import annotations

import os
import pathlib
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np

from rnnlm import optim, sharding
from rnnlm.cells import cell_of
from rnnlm.checkpoint import Checkpoints
from rnnlm.errors import UserError
from rnnlm.models import init_params


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array  # raw uint32 key; dropout uses fold_in(rng, step)
    average: Any = None  # train.averaging: {"params": mean of the iterates, "count", "on"} (`rnnlm.optim`)


def seed_keys(seed: int):
    """(parameter-init key, dropout key) of a run: the root key split once by purpose."""
    init_key, dropout_key = jax.random.split(jax.random.PRNGKey(seed))
    return init_key, dropout_key


def initial_params(model, seed: int):
    """The very parameters a run with this seed starts from."""
    return init_params(model, seed_keys(seed)[0])


def create_train_state(model, tx, seed: int, mesh, averaging: str = "none", params=None) -> TrainState:
    """A run's first state: `seed`'s initial parameters (or `params`, a finetune's start), the optimizer's
    state, the dropout key and, with `averaging`, the average (`rnnlm.optim.initial_average`)."""
    init_key, dropout_key = seed_keys(seed)

    def init(start):
        params = init_params(model, init_key) if start is None else start
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), rng=dropout_key,
                          average=optim.initial_average(params, averaging))

    # Built directly with replicated shardings: no host copy of the parameters.
    return jax.jit(init, out_shardings=sharding.replicated(mesh))(params)


EXPORTED = "model.safetensors"  # `rnnlm export`: the parameters of one step, beside config.json and tokenizer.json


def load_params(workdir, model, which: str = "latest"):
    """(params, step) of a saved run's checkpoint `which` ("latest", "best" or a step number), or of
    an exported run's model.safetensors (one step: `which` is ignored)."""
    if (pathlib.Path(workdir) / EXPORTED).exists() and not (pathlib.Path(workdir) / "checkpoints").exists():
        return read_exported(pathlib.Path(workdir) / EXPORTED, model)
    checkpoints = Checkpoints(workdir, read_only=True)
    try:
        step = checkpoints.resolve(which)
        shapes = jax.eval_shape(lambda: init_params(model, jax.random.PRNGKey(0)))
        return checkpoints.restore_params(step, shapes), step
    finally:
        checkpoints.close()


# --- will it fit? ---------------------------------------------------------------------------

def _tree_bytes(tree) -> int:
    return sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree_util.tree_leaves(tree))


def train_bytes(model, tx, batch_shape) -> dict:
    """A lower bound on the bytes one training step holds on a device, from shapes alone.

    parameters, their gradients and the optimizer state (all replicated), and the
    activations the backward pass keeps for a batch of `batch_shape` = (rows, length)
    tokens: the embedding output and, per layer and direction, the gate pre-activations,
    the carry and the output of every step. XLA's temporaries come on top.
    """
    params = jax.eval_shape(lambda: init_params(model, jax.random.PRNGKey(0)))
    opt_state = jax.eval_shape(tx.init, params)
    cell = cell_of(model)
    directions = 2 if getattr(model, "bidirectional", False) else 1
    widths = getattr(model, "layer_sizes", (model.hidden_size,) * model.num_layers)
    per_token = model.embed_size + directions * (cell.gates + cell.carry_arity + 1) * sum(widths)
    rows, length = batch_shape
    return {"parameters": _tree_bytes(params), "gradients": _tree_bytes(params), "optimizer": _tree_bytes(opt_state),
            "activations": 4 * rows * length * per_token}


def _cgroup_limit() -> int | None:
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = pathlib.Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            return int(text)
    return None


def device_memory() -> tuple[int, str]:
    """(bytes, what they are) one device can hold: an accelerator's own memory, else the host's."""
    stats = jax.local_devices()[0].memory_stats() or {}
    if stats.get("bytes_limit"):
        return int(stats["bytes_limit"]), f"{jax.local_devices()[0].device_kind} memory"
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    limit = _cgroup_limit()
    if limit and limit < total:
        return limit, "this container's memory limit"
    return total, "host memory"


def _gb(n: int) -> str:
    return f"{n / 1e9:,.1f} GB"


def check_fits(model, tx, batch_shape) -> None:
    """Refuse, in one line naming both numbers, a run whose step cannot fit before anything is written."""
    need = train_bytes(model, tx, batch_shape)
    have, what = device_memory()
    if sum(need.values()) > have:
        parts = ", ".join(f"{name} {_gb(n)}" for name, n in need.items())
        raise UserError(f"the model does not fit: one training step needs at least {_gb(sum(need.values()))} "
                        f"({parts}) but {what} is {_gb(have)}; make model.hidden_size, model.num_layers, "
                        f"the vocabulary or train.batch_size x the sequence length smaller")


# --- exported parameters --------------------------------------------------------------------

def _flat_names(tree) -> dict[str, Any]:
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"/".join(str(getattr(k, "key", k)) for k in path): leaf for path, leaf in flat}


def write_exported(path: pathlib.Path, params, step: int) -> None:
    """The parameter tree as safetensors, one tensor per leaf named by its path ("layer_0/w_x")."""
    from safetensors.numpy import save_file
    save_file({name: np.asarray(leaf) for name, leaf in _flat_names(params).items()}, str(path),
              metadata={"format": "rnnlm", "step": str(step)})


def read_exported(path: pathlib.Path, model):
    """(params, step) from `write_exported`'s file, checked leaf by leaf against the model's shapes."""
    from safetensors import safe_open
    shapes = jax.eval_shape(lambda: init_params(model, jax.random.PRNGKey(0)))
    names = _flat_names(shapes)
    with safe_open(str(path), framework="numpy") as f:
        stored, step = set(f.keys()), int((f.metadata() or {}).get("step", 0))
        if stored != set(names):
            raise UserError(f"{path} does not hold this model's parameters: "
                            f"missing {sorted(set(names) - stored)[:3]}, unexpected {sorted(stored - set(names))[:3]}")
        leaves = []
        for name, like in names.items():
            value = f.get_tensor(name)
            if value.shape != like.shape or value.dtype != like.dtype:
                raise UserError(f"{path}: {name} is {value.dtype}{list(value.shape)}, the model needs "
                                f"{like.dtype}{list(like.shape)}")
            leaves.append(jnp.asarray(value))
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(shapes), leaves), step
