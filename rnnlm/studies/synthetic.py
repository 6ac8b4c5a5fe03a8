"""A synthetic long-dependency task: the adding problem (Hochreiter & Schmidhuber 1997).

Each step shows a pair (value, marker): values are uniform in [0, 1]; exactly two
steps are marked, `distance` steps apart, the first within the first `pad` steps;
a sequence is `distance + pad` long. After the last step the network must output
the sum of the two marked values. A model counts as right on a sequence when its
absolute error is below 0.04 (Hochreiter & Schmidhuber's criterion); answering a
constant 1 is right with probability 1 - 0.96² ≈ 0.078, and so is remembering only
the second number. The success rate against distance separates cells whose
gradient survives `distance` steps from those whose gradient vanishes.

One small network per (cell, distance, seed): the cell from `rnnlm.cells` over
the pairs, a linear read-out of the last h, mean squared error, Adam with the
gradient norm clipped to 1. Seeds train side by side (vmap), and the whole
training of one (cell, distance) is one jitted `lax.scan` over steps.

    rnnlm study synthetic                                  # rnn, lstm, gru; distances 5..100; ~10 min on 2 CPU cores
    rnnlm study synthetic --cells rnn,lstm --distances 10,50 --steps 300 --seeds 2 --out runs/synthetic_small
    rnnlm study synthetic --tiny                           # seconds: checks the machinery, not the result

writes synthetic.png, synthetic.md and synthetic.json to `--out` (default runs/study_synthetic).
"""

from __future__ import annotations

import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rnnlm import fast
from rnnlm.cells import get_cell
from rnnlm.errors import UserError
from rnnlm.optim import with_standard_promotion

TOLERANCE = 0.04
CHANCE = 1 - (1 - TOLERANCE) ** 2  # P(|x1 + x2 - 1| < 0.04) for a constant answer of 1


def adding_batch(key, batch: int, distance: int, pad: int = 10):
    """(inputs [B, T, 2] float32 as (value, marker), targets [B], first marked step [B]); T = distance + pad."""
    value_key, position_key = jax.random.split(key)
    length = distance + pad
    values = jax.random.uniform(value_key, (batch, length))
    first = jax.random.randint(position_key, (batch,), 0, pad)
    steps = jnp.arange(length)[None]
    markers = ((steps == first[:, None]) | (steps == first[:, None] + distance)).astype(jnp.float32)
    return jnp.stack([values, markers], axis=-1), (values * markers).sum(axis=1), first


def init_model(key, cell_name: str, hidden: int):
    cell_key, readout_key = jax.random.split(key)
    return {"cell": get_cell(cell_name).init_params(cell_key, 2, hidden),
            "w": jax.random.normal(readout_key, (hidden,)) * hidden ** -0.5, "b": jnp.zeros(())}


def predict(cell_name: str, params, inputs):
    """inputs [B, T, 2] -> the answer after the last step [B]."""
    cell = get_cell(cell_name)
    carry = cell.init_carry(inputs.shape[0], params["w"].shape[0])
    scan = fast.layer_scan(fast.choose(fast.Speed(), cell, train=True))
    _, ys = scan(cell, params["cell"], carry, jnp.swapaxes(inputs, 0, 1))
    return ys[-1] @ params["w"] + params["b"]


def train_and_score(cell_name: str, distance: int, seeds: int, *, hidden: int = 32, steps: int = 2000,
                    batch: int = 64, learning_rate: float = 3e-3, test_size: int = 1000) -> dict:
    """Train `seeds` networks side by side; success rate and mean squared error on fresh sequences per seed."""
    tx = with_standard_promotion(optax.chain(optax.clip_by_global_norm(1.0), optax.adam(learning_rate)))

    def mse(params, inputs, targets):
        return ((predict(cell_name, params, inputs) - targets) ** 2).mean()

    def one_seed(key):
        init_key, data_key, test_key = jax.random.split(key, 3)
        params = init_model(init_key, cell_name, hidden)

        def step(state, step_key):
            params, opt_state = state
            inputs, targets, _ = adding_batch(step_key, batch, distance)
            loss, grads = jax.value_and_grad(mse)(params, inputs, targets)
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        (params, _), losses = jax.lax.scan(step, (params, tx.init(params)), jax.random.split(data_key, steps))
        inputs, targets, _ = adding_batch(test_key, test_size, distance)
        error = jnp.abs(predict(cell_name, params, inputs) - targets)
        return (error < TOLERANCE).mean(), (error ** 2).mean(), losses

    keys = jax.random.split(jax.random.PRNGKey(distance), seeds)
    success, test_mse, losses = jax.device_get(jax.jit(jax.vmap(one_seed))(keys))
    return {"success": success.tolist(), "mse": test_mse.tolist(), "final_train_mse": losses[:, -50:].mean(axis=1).tolist()}


def synthetic_study(cells, distances, seeds: int, steps: int, hidden: int, out_dir, batch: int = 64,
                    learning_rate: float = 3e-3) -> list[pathlib.Path]:
    for cell in cells:
        get_cell(cell)
    if not distances or min(distances) < 1 or seeds < 1 or steps < 1 or hidden < 1:
        raise UserError("distances, seeds, steps and hidden must be positive")
    results = {}
    for cell in cells:
        for distance in distances:
            tick = time.perf_counter()
            results[(cell, distance)] = train_and_score(cell, distance, seeds, hidden=hidden, steps=steps,
                                                        batch=batch, learning_rate=learning_rate)
            rates = results[(cell, distance)]["success"]
            print(f"synthetic: {cell:8s} distance {distance:4d}: success {np.mean(rates):.3f} "
                  f"(seeds {', '.join(f'{r:.2f}' for r in rates)}) in {time.perf_counter() - tick:.1f}s")

    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = {cell: [(float(np.mean(results[(cell, d)]["success"])), float(np.std(results[(cell, d)]["success"])))
                      for d in distances] for cell in cells}
    lines = [f"# The adding problem: success rate (|error| < {TOLERANCE}) against distance", "",
             f"{steps} Adam steps of {batch} sequences, hidden size {hidden}, {seeds} seed(s) (mean ± std); "
             f"a constant answer scores {CHANCE:.3f}.", "",
             "| cell | " + " | ".join(f"d={d}" for d in distances) + " |", "|---|" + "---|" * len(distances)]
    for cell, values in summary.items():
        lines.append(f"| {cell} | " + " | ".join(f"{m:.2f}" + (f" ± {s:.2f}" if seeds > 1 else "")
                                               for m, s in values) + " |")
    (out_dir / "synthetic.md").write_text("\n".join(lines) + "\n")
    payload = {"steps": steps, "batch": batch, "hidden": hidden, "seeds": seeds, "learning_rate": learning_rate,
               "distances": list(distances), "chance": CHANCE,
               "runs": [{"cell": c, "distance": d, **r} for (c, d), r in results.items()]}
    (out_dir / "synthetic.json").write_text(json.dumps(payload, indent=1))
    from rnnlm.plots import success_plot
    success_plot(summary, list(distances), out_dir / "synthetic.png",
                 f"adding problem: {steps} steps, hidden {hidden}, {seeds} seed(s)", CHANCE)
    return [out_dir / "synthetic.md", out_dir / "synthetic.json", out_dir / "synthetic.png"]
