"""Ahead-of-time compile check: lower and compile the train step for a mesh of N devices.

Runs on fake CPU devices (`jax_num_cpu_devices`), so a sharding mistake — a batch
that does not divide, a carry on the wrong axis, a shape mismatch — shows on a
laptop before a pod is booked:

    rnnlm compile-check --devices 8 --config experiments/ptb_medium.py

Nothing is trained and no array is allocated: the state, carry and batch are
`ShapeDtypeStruct`s carrying their shardings.
"""

from __future__ import annotations

import functools
import pathlib
import time

import jax
import jax.numpy as jnp

from rnnlm import optim, sharding
from rnnlm.models import count_params, init_params, language_model_from_config
from rnnlm.state import TrainState


def use_fake_cpu_devices(count: int) -> None:
    """Must run before JAX starts its backend (before the first jax.devices())."""
    jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_num_cpu_devices", count)


def compile_check(config, num_devices: int, vocab_size: int = 0) -> dict:
    from rnnlm.tasks import lm
    from rnnlm.train import compile_train_step
    from rnnlm.workdir import prepare_data

    if not vocab_size:  # fit the tokenizer in memory, write nothing
        tokenizer, _ = prepare_data(config, pathlib.Path("/nonexistent-rnnlm-workdir"), write=False)
        vocab_size = tokenizer.vocab_size
    mesh = sharding.make_mesh(num_devices)
    batch_size, bptt = config.train.batch_size, config.train.bptt
    sharding.check_batch_size(batch_size, mesh)
    model = language_model_from_config(config, vocab_size)
    tx = optim.make_optimizer(config.train, total_steps=1000)

    def init():
        params = init_params(model, jax.random.PRNGKey(0))
        return TrainState(jnp.zeros((), jnp.int32), params, tx.init(params), jax.random.PRNGKey(1))

    def with_sharding(tree, target):
        return jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=target), tree)

    replicated, split = sharding.replicated(mesh), sharding.batch_sharded(mesh)
    state = with_sharding(jax.eval_shape(init), replicated)
    carry = with_sharding(jax.eval_shape(lambda: model.initial_carry(batch_size)), split)
    batch = with_sharding({"tokens": jax.ShapeDtypeStruct((batch_size, bptt), jnp.int32),
                           "targets": jax.ShapeDtypeStruct((batch_size, bptt), jnp.int32),
                           "weights": jax.ShapeDtypeStruct((batch_size, bptt), jnp.float32)}, split)
    step = compile_train_step(functools.partial(lm.window_loss, model, config.train.loss), tx, mesh, carry)
    start = time.perf_counter()
    lowered = step.lower(state, carry, batch)
    compiled = lowered.compile()
    seconds = time.perf_counter() - start
    memory = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return {
        "devices": num_devices,
        "per_device_batch": batch_size // num_devices,
        "parameters": count_params(state.params),
        "compile_seconds": seconds,
        "flops_per_step": float((cost or {}).get("flops", 0.0)),
        "temp_bytes_per_device": getattr(memory, "temp_size_in_bytes", None),
        "argument_bytes_per_device": getattr(memory, "argument_size_in_bytes", None),
    }
