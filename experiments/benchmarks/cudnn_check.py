"""The cuDNN LSTM path against the scan at a benchmark shape: loss, gradients and carries.

    python -m experiments.benchmarks.cudnn_check --config ptb_medium

Prints, for float32 ("highest") and JAX's default matmul precision (TF32 on
NVIDIA GPUs), the relative difference ||cudnn - scan|| / ||scan|| of the
loss, of every parameter's gradient and of the carries after one window, and
for scale the scan's own difference between the two precisions.
On a CPU the cuDNN path runs JAX's reference LSTM (see `rnnlm.cudnn`).
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from experiments.benchmarks import shapes
from rnnlm.models import LanguageModel


def relative(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def outputs(shape: shapes.Shape) -> dict:
    """(loss, carry, grads) of both paths at both precisions on one random window."""
    kwargs = dict(vocab_size=shape.vocab, embed_size=shape.embed, hidden_size=shape.hidden, num_layers=shape.layers)
    models = {r: LanguageModel(**kwargs, recurrence=r) for r in ("scan", "cudnn")}
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    tokens = jax.random.randint(keys[0], (shape.batch, shape.seq_len), 0, shape.vocab)
    targets = jax.random.randint(keys[1], (shape.batch, shape.seq_len), 0, shape.vocab)
    carry = models["scan"].initial_carry(shape.batch)
    params = models["scan"].init(keys[2], tokens, carry)

    def loss(model):
        def f(params):
            logits, carry_out = model.apply(params, tokens, carry)
            nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), targets[..., None], -1).mean()
            return nll, carry_out
        return jax.jit(jax.value_and_grad(f, has_aux=True))

    out = {}
    for name, model in models.items():
        with jax.default_matmul_precision("highest"):
            out[name, "highest"] = loss(model)(params)
        # Unset, not "default": jax.experimental.rnn reads an explicit DEFAULT as bfloat16, which it refuses.
        out[name, "default"] = loss(model)(params)
    return out


def differences(got, want) -> dict:
    (loss_g, carry_g), grads_g = got
    (loss_w, carry_w), grads_w = want
    result = {"loss": relative(loss_g, loss_w), "carry": relative(jnp.stack(jax.tree_util.tree_leaves(carry_g)),
                                                                    jnp.stack(jax.tree_util.tree_leaves(carry_w)))}
    for (path, w), g in zip(jax.tree_util.tree_flatten_with_path(grads_w)[0], jax.tree_util.tree_leaves(grads_g)):
        result["grad " + jax.tree_util.keystr(path)] = relative(g, w)
    return result


def wrapper_against_its_reference(batch: int, seq_len: int, size: int) -> dict:
    """`jax.experimental.rnn.lstm` against its own `lstm_ref` on JAX's own weights: no rnnlm code involved."""
    from jax.experimental import rnn

    keys = jax.random.split(jax.random.PRNGKey(batch * 1000 + size), 4)
    x = jax.random.normal(keys[0], (batch, seq_len, size))
    h0, c0 = (jax.random.normal(k, (1, batch, size)) for k in keys[1:3])
    weights = rnn.init_lstm_weight(keys[3], size, size, 1, False)
    lengths = jnp.full((batch,), seq_len, jnp.int32)

    def fused(w):
        return rnn.lstm(x, h0, c0, w, lengths, input_size=size, hidden_size=size, num_layers=1, dropout=0.0,
                        bidirectional=False)

    def reference(w):
        w_ih, w_hh, b_ih, b_hh = rnn.unpack_lstm_weights(w, size, size, 1, False)
        return rnn.lstm_ref(x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, size, size, 1, 0.0, False)

    with jax.default_matmul_precision("highest"):
        got, want = jax.jit(fused)(weights), jax.jit(reference)(weights)
        grad_got = jax.jit(jax.grad(lambda w: jnp.sum(fused(w)[0] ** 2)))(weights)
        grad_want = jax.jit(jax.grad(lambda w: jnp.sum(reference(w)[0] ** 2)))(weights)
    return {"y": relative(got[0], want[0]), "h_n": relative(got[1], want[1]), "c_n": relative(got[2], want[2]),
            "grad": relative(grad_got, grad_want)}


def diagnose(size: int = 650, batch: int = 20, seq_len: int = 35) -> None:
    """Where rnnlm's cuDNN layer and the scan part: one layer, forward alone or with its backward."""
    from rnnlm import cudnn
    from rnnlm.cells import get_cell
    from rnnlm.recurrence import scan_layer

    cell = get_cell("lstm")
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    params = cell.init_params(keys[0], size, size)
    carry = tuple(jax.random.normal(k, (batch, size)) for k in jax.random.split(keys[1]))
    zeros = tuple(jnp.zeros_like(c) for c in carry)
    xs = jax.random.normal(keys[2], (seq_len, batch, size))
    scan = lambda p, c, x: scan_layer(cell, p, c, x)  # noqa: E731

    def forward(layer, c):
        return jax.jit(layer)(params, c, xs)

    def with_grad(layer, c):
        def f(p):
            carry_out, ys = layer(p, c, xs)
            return jnp.sum(ys ** 2), (carry_out, ys)
        (_, out), grads = jax.jit(jax.value_and_grad(f, has_aux=True))(params)
        return out, grads

    with jax.default_matmul_precision("highest"):
        for name, c in (("random carry", carry), ("zero carry", zeros)):
            (cc, yc), (cs, ys) = forward(cudnn.lstm_layer, c), forward(scan, c)
            print(f"forward only, {name}: ys {relative(yc, ys):.1e}, c {relative(cc[0], cs[0]):.1e}, "
                  f"h {relative(cc[1], cs[1]):.1e}", flush=True)
            ((cc, yc), gc), ((cs, ys), gs) = with_grad(cudnn.lstm_layer, c), with_grad(scan, c)
            print(f"forward+backward, {name}: ys {relative(yc, ys):.1e}, c {relative(cc[0], cs[0]):.1e}, "
                  "grads " + ", ".join(f"{k} {relative(gc[k], gs[k]):.1e}" for k in gs), flush=True)
        upper = cell.init_params(keys[3], size, size)

        def two(layer):
            return jax.jit(lambda: layer(upper, carry, layer(params, carry, xs)[1]))()
        (cc, yc), (cs, ys) = two(cudnn.lstm_layer), two(scan)
        print(f"two layers, forward only: ys {relative(yc, ys):.1e}, c {relative(cc[0], cs[0]):.1e}", flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="ptb_medium")
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--wrapper-grid", action="store_true",
                        help="only jax.experimental.rnn.lstm vs its lstm_ref, over batch x length x size (GPU)")
    parser.add_argument("--diagnose", action="store_true", help="one layer at the benchmark size, step by step")
    args = parser.parse_args(argv)
    if args.diagnose:
        shape = shapes.get_shape(args.config, args.tiny)
        return diagnose(shape.hidden, shape.batch, shape.seq_len)
    if args.wrapper_grid:
        print("| batch | T | D = H | y | h_n | c_n | dL/dw |\n|---|---|---|---|---|---|---|")
        for batch, seq_len, size in [(3, 5, 6), (20, 5, 6), (3, 35, 6), (3, 5, 64), (3, 5, 650), (20, 35, 64),
                                     (20, 35, 650), (64, 128, 512)]:
            r = wrapper_against_its_reference(batch, seq_len, size)
            print(f"| {batch} | {seq_len} | {size} | " + " | ".join(f"{v:.1e}" for v in r.values()) + " |", flush=True)
        return
    shape = shapes.get_shape(args.config, args.tiny)
    print(f"cuDNN path vs scan, {shape.name}{' (tiny)' if args.tiny else ''}, backend {jax.default_backend()}: "
          "relative difference")
    out = outputs(shape)
    columns = {"cudnn vs scan, float32 (highest)": differences(out["cudnn", "highest"], out["scan", "highest"]),
               "cudnn vs scan, default precision": differences(out["cudnn", "default"], out["scan", "default"]),
               "scan default vs scan highest (for scale)": differences(out["scan", "default"], out["scan", "highest"])}
    print("| quantity | " + " | ".join(columns) + " |\n|---|---|---|---|")
    for key in columns["cudnn vs scan, float32 (highest)"]:
        print(f"| {key} | " + " | ".join(f"{c[key]:.2e}" for c in columns.values()) + " |")


if __name__ == "__main__":
    main()
