"""The train state, how a run's parameters start, and how a saved run's parameters are read back."""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp

from rnnlm import sharding
from rnnlm.checkpoint import Checkpoints
from rnnlm.models import init_params


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array  # raw uint32 key; dropout uses fold_in(rng, step)


def seed_keys(seed: int):
    """(parameter-init key, dropout key) of a run: the root key split once by purpose."""
    init_key, dropout_key = jax.random.split(jax.random.PRNGKey(seed))
    return init_key, dropout_key


def initial_params(model, seed: int):
    """The very parameters a run with this seed starts from."""
    return init_params(model, seed_keys(seed)[0])


def create_train_state(model, tx, seed: int, mesh) -> TrainState:
    init_key, dropout_key = seed_keys(seed)

    def init():
        params = init_params(model, init_key)
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), rng=dropout_key)

    # Built directly with replicated shardings: no host copy of the parameters.
    return jax.jit(init, out_shardings=sharding.replicated(mesh))()


def load_params(workdir, model, which: str = "latest"):
    """(params, step) of a saved run's checkpoint `which` ("latest", "best" or a step number)."""
    checkpoints = Checkpoints(workdir, read_only=True)
    try:
        step = checkpoints.resolve(which)
        shapes = jax.eval_shape(lambda: init_params(model, jax.random.PRNGKey(0)))
        return checkpoints.restore_params(step, shapes), step
    finally:
        checkpoints.close()
