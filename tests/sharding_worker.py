"""Run in a subprocess by test_sharding.py: a few train steps on meshes of 1, 4 and 8 fake CPU devices.

Prints JSON: for each device count, the losses, the final parameters' checksum
leaves, the carry of every stream after the steps, and the evaluation loss of
the trained model (its layers as a wavefront: embed_size == hidden_size). The
"methods" entries score a mixture-of-softmaxes model with dynamic evaluation and
the cache, and train it, on 1 and 4 devices.
"""

import json
import sys

import jax

jax.config.update("jax_platforms", "cpu")
jax.config.update("jax_num_cpu_devices", 8)

import numpy as np  # noqa: E402

import functools  # noqa: E402

from rnnlm import optim, sharding  # noqa: E402
from rnnlm.config import base_config  # noqa: E402
from rnnlm.data.batching import make_streams  # noqa: E402
from rnnlm.models import language_model_from_config  # noqa: E402
from rnnlm.state import create_train_state  # noqa: E402
from rnnlm.tasks.lm import Evaluator, window_loss  # noqa: E402
from rnnlm.train import compile_train_step  # noqa: E402


def run(num_devices: int, steps: int = 3, awd: bool = False) -> dict:
    """awd: AWD-LSTM's techniques on (locked dropouts, embedding rows, weight drop, AR/TAR, L2, averaging,
    drawn window lengths with their masks and learning-rate scales): the same masks on every device."""
    config = base_config()
    config.model.update(cell="lstm", embed_size=16, hidden_size=16, num_layers=2, dropout=0.2, embed_dropout=0.1)
    config.train.update(batch_size=8, bptt=5, optimizer="adam", learning_rate=1e-2)
    if awd:
        config.model.update(hidden_sizes=(16, 16), locked_dropout=True, hidden_dropout=0.3, embed_row_dropout=0.1,
                            weight_drop=0.5)
        config.train.update(optimizer="sgd", learning_rate=1.0, weight_decay=1e-3, ar=2.0, tar=1.0, averaging="always")
    ids = np.random.default_rng(0).integers(0, 30, size=8 * 5 * steps + 1).astype(np.int32)
    mesh = sharding.make_mesh(num_devices)
    model = language_model_from_config(config, 30)
    tx = optim.make_optimizer(config.train, 100)
    state = create_train_state(model, tx, seed=0, mesh=mesh, averaging=config.train.averaging)
    carry = sharding.zeros_carry(model.initial_carry, 8, mesh)
    streams = make_streams(ids, 8, 5).rows(sharding.local_rows(8, mesh))
    loss = functools.partial(window_loss, model, "token_mean", ar=config.train.ar, tar=config.train.tar)
    step = compile_train_step(loss, tx, mesh, carry)
    losses, starts = [], np.cumsum([0, 5, 3, 4])
    for window in range(steps):
        batch = streams.window(window)
        if awd:  # drawn lengths 5, 3, 4, each padded to 5 steps
            length = int(starts[window + 1] - starts[window])
            batch = streams.span(int(starts[window]), length, 5)
            batch["lr_scale"] = np.full(len(batch["tokens"]), length / 5, np.float32)
        state, carry, metrics = step(state, carry, sharding.shard_batch(batch, mesh))
        losses.append(float(metrics["nll_sum"] / metrics["tokens"]))
        assert carry[0][0].sharding.is_equivalent_to(sharding.batch_sharded(mesh), 2)
    assert model.plan((8, 5)).wavefront
    eval_loss = Evaluator(model, mesh, 8, 5)(optim.evaluation_params(state), ids[:8 * 5 * 2 + 1], char_level=False)["loss"]
    params = [np.asarray(x).tolist() for x in jax.tree_util.tree_leaves((state.params, state.average))]
    carries = [np.asarray(x).tolist() for x in jax.tree_util.tree_leaves(carry)]
    return {"losses": losses, "eval_loss": eval_loss, "params": params, "carry": carries,
            "devices": [str(d) for d in carry[0][0].sharding.device_set]}


def evaluation_methods(num_devices: int) -> dict:
    """Issue 21's methods on `num_devices`: dynamic evaluation (both rules, 4 streams), the cache (and both
    together), and two train steps of a mixture of 3 softmaxes."""
    import dataclasses
    from rnnlm import cache, dynamic_eval
    config = base_config()
    config.model.update(cell="lstm", embed_size=16, hidden_size=16, num_layers=2, tie_weights=True, mos_components=3)
    config.train.update(batch_size=4, bptt=5, optimizer="adam", learning_rate=1e-2)
    ids = np.random.default_rng(1).integers(0, 6, size=161).astype(np.int32) * 5  # repetitive: the cache helps
    mesh = sharding.make_mesh(num_devices)
    model = language_model_from_config(config, 30)
    tx = optim.make_optimizer(config.train, 100)
    state = create_train_state(model, tx, seed=0, mesh=mesh)
    carry = sharding.zeros_carry(model.initial_carry, 4, mesh)
    streams = make_streams(ids, 4, 5).rows(sharding.local_rows(4, mesh))
    step = compile_train_step(functools.partial(window_loss, model, "token_mean"), tx, mesh, carry)
    losses = []
    for window in range(2):
        state, carry, metrics = step(state, carry, sharding.shard_batch(streams.window(window), mesh))
        losses.append(float(metrics["nll_sum"] / metrics["tokens"]))
    settings = dynamic_eval.Settings(rule="rms", lr=1e-3, decay=1e-2, bptt=5, batch_size=4, stat_tokens=60,
                                     stat_batch_size=4)
    ms = dynamic_eval.gradient_statistics(model, state.params, ids, settings, mesh)
    out = {"mos_losses": losses, "devices": [str(d) for d in carry[0][0].sharding.device_set]}
    out["rms"] = dynamic_eval.dynamic_evaluate(model, state.params, ids, settings, mesh, False, ms)["loss"]
    sgd = dataclasses.replace(settings, rule="sgd", lr=0.1)
    out["sgd"] = dynamic_eval.dynamic_evaluate(model, state.params, ids, sgd, mesh, False)["loss"]
    held = cache.Settings(window=12, theta=0.5, lam=0.2)
    out["cache"] = cache.cache_evaluate(model, state.params, ids, held, mesh, 4, 5, False)["loss"]
    out["both"] = dynamic_eval.dynamic_evaluate(model, state.params, ids, sgd, mesh, False, cache=held)["loss"]
    out["static"] = Evaluator(model, mesh, 4, 5)(state.params, ids, char_level=False)["loss"]
    return out


if __name__ == "__main__":
    json.dump({n: evaluation_methods(int(n.removeprefix("methods"))) if n.startswith("methods")
               else run(int(n.removeprefix("awd")), awd=n.startswith("awd")) for n in sys.argv[1:]}, sys.stdout)
