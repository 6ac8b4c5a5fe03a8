"""Vanishing and exploding gradients: ‖∂ loss_t / ∂ h_{t-k}‖ against the lag k.

For windows of the validation split, the loss of the last token t is
differentiated with respect to the hidden state h of one layer at every earlier
step. The derivative is taken through everything that depends on h_{t-k}: the
recurrence and the layers above. It is read off with one backward pass through
the model's own stack: a zero perturbation is added to h at each step inside the
scan (to the carry and to the layer output alike; `rnnlm.recurrence.Probe`), and
the gradient with respect to the perturbation is the gradient with respect to h. Each run is measured as trained and as freshly
initialised (the very parameters it started from, `seed` and all), and the
norms are summarised over windows by their geometric mean.

    rnnlm sweep --config experiments/ablations/cell_type.py:char --workdir runs/ablation_cell_type_char
    rnnlm study gradients --workdir runs/ablation_cell_type_char [--lags 100] [--windows 32] [--layer 0]

writes gradients.png, gradients.md and gradients.json to `<first workdir>/gradients/`
(or `--out`). A sweep directory stands for its runs, one per point (the first seed).
"""

from __future__ import annotations

import functools
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from rnnlm.errors import UserError
from rnnlm.recurrence import Probe

REPORTED_LAGS = (0, 1, 2, 5, 10, 20, 50, 100, 200)


def lag_gradient_norms(model, params, inputs, targets, layer: int = 0) -> np.ndarray:
    """[B, T]: entry [b, k] = ‖∂ loss_{T-1} / ∂ h_{T-1-k}‖ for sequence b, h of `layer`.

    inputs, targets: [B, T] token ids; loss_{T-1} = -log p(targets[:, -1] | inputs).
    """
    if not 0 <= layer < model.num_layers:
        raise UserError(f"layer {layer} does not exist; the model has {model.num_layers} layer(s)")
    norms = _lag_gradient_norms(model, layer, params, jnp.asarray(inputs, jnp.int32), jnp.asarray(targets, jnp.int32))
    return np.asarray(norms)


@functools.partial(jax.jit, static_argnums=(0, 1))  # a Linen module is a hashable dataclass
def _lag_gradient_norms(model, layer, params, inputs, targets):
    batch, length = inputs.shape

    def last_loss(perturbation):
        # The model's own stack, a zero perturbation added to the layer's h at every step.
        features, _ = model.apply({"params": params}, inputs, model.initial_carry(batch),
                                  probe=Probe(layer=layer, perturbation=perturbation), method=model.features)
        logits = model.apply({"params": params}, features[:, -1], method=model.decode)
        logp = jax.nn.log_softmax(logits.astype(jnp.float32))
        # Summed over the batch: sequences are independent, so each gets its own gradient.
        return -jnp.take_along_axis(logp, targets[:, -1:], axis=-1).sum()

    grads = jax.grad(last_loss)(jnp.zeros((length, batch, model.hidden_size), jnp.float32))  # [T, B, H]
    return scaled_norm(grads, axis=-1)[::-1].T


def scaled_norm(x, axis=-1):
    """‖x‖ along `axis` without squaring tiny entries: x / max|x| is squared, not x.

    XLA's CPU backend flushes float32 denormals to zero, so the squares in
    `jnp.linalg.norm` vanish once entries fall below ~1e-19 although the entries
    themselves are normal numbers down to 1.2e-38.
    """
    scale = jnp.max(jnp.abs(x), axis=axis, keepdims=True)
    unit = x / jnp.where(scale > 0, scale, 1)
    return jnp.squeeze(scale, axis) * jnp.sqrt(jnp.sum(unit * unit, axis=axis))


FLOOR = float(np.finfo(np.float32).tiny)  # entries below it are flushed to zero inside XLA on CPU


def _underflow(norm: float) -> bool:
    return norm <= FLOOR * 1.0001


def _format_norm(norm: float) -> str:
    return f"≤{FLOOR:.1e}" if _underflow(norm) else f"{norm:.2e}"


def geometric_mean(norms: np.ndarray) -> np.ndarray:
    """Over axis 0, ignoring exact zeros' -inf by flooring at the smallest normal float."""
    return np.exp(np.log(np.maximum(norms, FLOOR)).mean(axis=0))


def windows(ids: np.ndarray, count: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` (inputs, targets) windows of `length` tokens, evenly spaced over ids."""
    if len(ids) < length + 1:
        raise UserError(f"the validation split has {len(ids)} tokens; --lags {length} needs at least {length + 1}")
    starts = np.linspace(0, len(ids) - length - 1, count).astype(int)
    inputs = np.stack([ids[s:s + length] for s in starts])
    targets = np.stack([ids[s + 1:s + length + 1] for s in starts])
    return inputs, targets


def study_runs(workdirs) -> list[pathlib.Path]:
    """Runs (dirs with a checkpoint), a sweep directory standing for one run per point (its first seed)."""
    from rnnlm.config import load_config
    from rnnlm.plots import expand_runs
    runs, seen = [], set()
    for run in expand_runs(workdirs, marker="checkpoints"):
        config = load_config(run / "config.json").to_dict()
        config.pop("seed", None)
        key = json.dumps(config, sort_keys=True, default=str) + str(run.parent)
        if key not in seen:
            seen.add(key)
            runs.append(run)
    return runs


def gradient_study(workdirs, out_dir=None, lags: int = 100, count: int = 32, layer: int = 0) -> list[pathlib.Path]:
    from rnnlm.config import load_config
    from rnnlm.plots import lag_plot, run_labels
    from rnnlm.runs import load_run
    from rnnlm.state import initial_params
    from rnnlm.workdir import prepare_data

    runs = study_runs(workdirs)
    configs = [load_config(run / "config.json") for run in runs]
    names = [f"{config.model.cell} H={config.model.hidden_size}" for config in configs]
    names = [n if names.count(n) == 1 else f"{n} {label}" for n, label in zip(names, run_labels(runs))]
    curves = []
    for run_dir, name in zip(runs, names):
        run = load_run(run_dir)
        _, ids = prepare_data(run.config, run.workdir)
        inputs, targets = windows(ids["valid"], count, lags)
        for state, params in (("trained", run.params), ("initial", initial_params(run.model, run.config.seed))):
            norms = geometric_mean(lag_gradient_norms(run.model, params, inputs, targets, layer))
            curves.append({"label": name, "workdir": str(run_dir), "state": state, "step": run.step if state == "trained" else 0,
                           "norms": norms.tolist()})
            print(f"gradients: {name} ({state}): lag 0 {norms[0]:.3g}, lag {lags - 1} {norms[-1]:.3g}")

    out_dir = pathlib.Path(out_dir or pathlib.Path(runs[0] if len(runs) == 1 else workdirs[0]) / "gradients")
    out_dir.mkdir(parents=True, exist_ok=True)
    shown = [k for k in REPORTED_LAGS if k < lags]
    lines = [f"# ‖∂ loss_t / ∂ h_(t-k)‖ of layer {layer}, geometric mean over {count} validation windows", "",
             "| run | state | " + " | ".join(f"k={k}" for k in shown) + f" | k={lags - 1} / k=0 |",
             "|---|---|" + "---|" * (len(shown) + 1)]
    for curve in curves:
        last = curve["norms"][-1]
        ratio = "underflow" if _underflow(last) else f"{last / max(curve['norms'][0], 1e-30):.2e}"
        lines.append(f"| {curve['label']} | {curve['state']} | "
                     + " | ".join(_format_norm(curve["norms"][k]) for k in shown) + f" | {ratio} |")
    lines += ["", f"≤{FLOOR:.1e}: the gradient underflowed float32 (the smallest normal number); its true value is smaller."]
    (out_dir / "gradients.md").write_text("\n".join(lines) + "\n")
    (out_dir / "gradients.json").write_text(json.dumps({"layer": layer, "windows": count, "curves": curves}, indent=1))
    lag_plot(curves, out_dir / "gradients.png", f"gradient norm against lag (layer {layer})")
    return [out_dir / "gradients.md", out_dir / "gradients.json", out_dir / "gradients.png"]
