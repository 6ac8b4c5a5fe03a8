"""The cuDNN LSTM path (`model.recurrence`) against the scan, and its one-line errors.

On a CPU `rnnlm.cudnn.lstm_layer` runs JAX's reference of cuDNN's LSTM on the
packed weight vector, so these tests check the packing, the gate order and the
carry's order; on a GPU the same tests run cuDNN itself
(`python -m pytest tests/test_cudnn.py` on the device machine).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnlm import cudnn
from rnnlm.cells import get_cell
from rnnlm.config import base_config
from rnnlm.errors import UserError
from rnnlm.models import LanguageModel, check_recurrence, classifier_from_config
from rnnlm.recurrence import scan_layer
from rnnlm.workdir import reconcile_config

T, B, D, H = 5, 3, 4, 6


def _close(a, b):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=2e-6)


def test_cudnn_layer_equals_the_scan_forward_and_backward():
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    cell = get_cell("lstm")
    params = cell.init_params(keys[0], D, H)
    params["b"] = jax.random.normal(keys[1], (4 * H,))  # every gate's bias distinct, not the forget-gate 1s
    carry = tuple(jax.random.normal(k, (B, H)) for k in jax.random.split(keys[2]))
    xs = jax.random.normal(keys[3], (T, B, D))

    def loss(layer):
        def f(params, carry, xs):
            (c, h), ys = layer(params, carry, xs)
            # Weights on every output so that a swapped c/h or a time reversal changes the value.
            return jnp.sum(ys * jnp.arange(1, T + 1)[:, None, None]) + jnp.sum(c * 0.3) + jnp.sum(h * 0.7)
        return f

    with jax.default_matmul_precision("highest"):
        scan = lambda p, c, x: scan_layer(cell, p, c, x)  # noqa: E731
        (c_s, h_s), ys_s = scan(params, carry, xs)
        (c_c, h_c), ys_c = cudnn.lstm_layer(params, carry, xs)
        grads_s = jax.grad(loss(scan), argnums=(0, 1, 2))(params, carry, xs)
        grads_c = jax.grad(loss(cudnn.lstm_layer), argnums=(0, 1, 2))(params, carry, xs)
    _close(ys_c, ys_s)
    _close(c_c, c_s)
    _close(h_c, h_s)
    for got, want in zip(jax.tree_util.tree_leaves(grads_c), jax.tree_util.tree_leaves(grads_s)):
        _close(got, want)


def test_language_model_gives_the_same_loss_and_gradients_with_either_recurrence():
    kwargs = dict(vocab_size=11, embed_size=D, hidden_size=H, num_layers=2, cell="lstm")
    scan_model, cudnn_model = LanguageModel(**kwargs), LanguageModel(**kwargs, recurrence="cudnn")
    tokens = jax.random.randint(jax.random.PRNGKey(1), (B, T), 0, 11)
    carry = scan_model.initial_carry(B)
    params = scan_model.init(jax.random.PRNGKey(2), tokens, carry)

    def loss(model):
        def f(params):
            logits, carry_out = model.apply(params, tokens, carry)
            return jnp.mean(jax.nn.log_softmax(logits)[..., 3]) + sum(jnp.sum(c) for c in jax.tree_util.tree_leaves(carry_out))
        return f

    with jax.default_matmul_precision("highest"):
        values = [jax.value_and_grad(loss(m))(params) for m in (scan_model, cudnn_model)]
    _close(values[1][0], values[0][0])
    for got, want in zip(jax.tree_util.tree_leaves(values[1][1]), jax.tree_util.tree_leaves(values[0][1])):
        _close(got, want)


def test_auto_takes_cudnn_only_for_float32_lstms_on_a_gpu(monkeypatch):
    calls = []

    def recording(params, carry, xs):  # shapes only: cuDNN itself cannot be traced off a GPU
        calls.append(1)
        return carry, jnp.zeros(xs.shape[:2] + (H,))

    monkeypatch.setattr(cudnn, "lstm_layer", recording)
    tokens = jnp.zeros((B, T), jnp.int32)

    def traced(on_gpu, seq_len=T, **kwargs):
        monkeypatch.setattr(cudnn, "available", lambda: on_gpu)
        calls.clear()
        model = LanguageModel(vocab_size=11, embed_size=D, hidden_size=H, num_layers=1, recurrence="auto", **kwargs)
        carry = model.initial_carry(B)
        jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), tokens[:, :seq_len], carry))
        return len(calls)

    assert traced(on_gpu=True) == 1
    assert traced(on_gpu=False) == 0
    assert traced(on_gpu=True, cell="gru") == 0
    assert traced(on_gpu=True, matmul_dtype="bfloat16") == 0
    assert traced(on_gpu=True, seq_len=1) == 0  # sampling's single steps stay on the scan


@pytest.mark.parametrize("fields, message", [
    ({"recurrence": "fast"}, "must be auto, scan or cudnn"),
    ({"recurrence": "cudnn", "cell": "gru"}, "runs LSTMs only"),
    ({"recurrence": "cudnn", "matmul_dtype": "bfloat16"}, "needs model.matmul_dtype='float32'"),
])
def test_recurrence_requests_that_cannot_run_are_one_line_errors(fields, message):
    model = base_config().model
    model.update(fields)
    with pytest.raises(UserError, match=message):
        check_recurrence(model)


def test_cudnn_without_a_gpu_is_an_error_and_auto_is_not():
    model = base_config().model
    model.recurrence = "auto"
    check_recurrence(model)
    model.recurrence = "cudnn"
    if cudnn.available():
        check_recurrence(model)
    else:
        with pytest.raises(UserError, match="needs a GPU"):
            check_recurrence(model)
    with pytest.raises(UserError, match="for language models"):
        classifier_from_config(model, vocab_size=11, num_classes=2)


def test_a_run_may_resume_under_another_recurrence_but_not_another_shape(tmp_path):
    config = base_config()
    reconcile_config(config, tmp_path)
    config.model.recurrence = "auto"
    reconcile_config(config, tmp_path)  # speed-only: allowed, and written
    config.model.hidden_size += 1
    with pytest.raises(UserError, match="model.hidden_size"):
        reconcile_config(config, tmp_path)
