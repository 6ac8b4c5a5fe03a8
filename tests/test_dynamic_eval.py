"""rnnlm/dynamic_eval.py: learning rate 0 is static evaluation, the rules against a step-by-step numpy
reference, a repeated text scored better the second time, the command's settings and errors."""

import dataclasses
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnlm import dynamic_eval, sharding
from rnnlm.dynamic_eval import Settings
from rnnlm.errors import UserError
from rnnlm.fast import Speed
from rnnlm.models import LanguageModel, init_params
from rnnlm.tasks.lm import Evaluator

V = 17


def model_and_params(reference=False, seed=0):
    model = LanguageModel(vocab_size=V, embed_size=8, hidden_size=8, num_layers=2, speed=Speed(reference=reference))
    return model, init_params(model, jax.random.PRNGKey(seed))


@pytest.fixture(scope="module")
def text():
    return np.random.default_rng(0).integers(0, V, 241).astype(np.int32)


@pytest.fixture(scope="module")
def mesh():
    return sharding.make_mesh(1)


@pytest.mark.slow
@pytest.mark.parametrize("rule", ["sgd", "rms"])
@pytest.mark.parametrize("reference", [True, False], ids=["reference", "fast"])
def test_learning_rate_zero_is_static_evaluation(text, mesh, rule, reference):
    model, params = model_and_params(reference)
    settings = Settings(rule=rule, lr=0.0, decay=0.01, bptt=6, batch_size=4)
    ms = dynamic_eval.gradient_statistics(model, params, text, dataclasses.replace(settings, stat_tokens=60), mesh)
    dynamic = dynamic_eval.dynamic_evaluate(model, params, text, settings, mesh, False, ms)
    static = Evaluator(model, mesh, 4, 6)(params, text, False)
    assert dynamic["tokens"] == len(text) - 1
    if reference:
        assert dynamic["loss"] == static["loss"]
    else:  # training's fast paths score the window there, evaluation's here: equal to rounding
        np.testing.assert_allclose(dynamic["loss"], static["loss"], rtol=1e-6)


def numpy_dynamic(model, params, text, settings, ms):
    """The rule written out window by window: jax.grad of the plain reference loss for g, the update in numpy."""
    plain = model.clone(speed=Speed(reference=True))
    flat0, tree = jax.tree_util.tree_flatten(jax.tree_util.tree_map(np.asarray, params))
    flat = [x.astype(np.float64) for x in flat0]
    ms_flat = [np.asarray(m, np.float64) for m in jax.tree_util.tree_leaves(ms)]
    mean = np.mean([m.mean() for m in ms_flat])
    rates = [np.minimum(m / mean, 1 / settings.decay) for m in ms_flat]
    n = (len(text) - 1) // settings.bptt * settings.bptt  # the test text fills whole windows
    carry, total = plain.initial_carry(1), 0.0

    def loss(p, carry, tokens, targets):
        logits, carry = plain.apply({"params": p}, tokens, carry)
        logp = jax.nn.log_softmax(logits, axis=-1)
        return -jnp.mean(jnp.take_along_axis(logp, targets[..., None], axis=-1)), carry

    value_and_grad = jax.jit(jax.value_and_grad(loss, has_aux=True))  # one compile: every window has one shape
    for start in range(0, n, settings.bptt):
        tokens = jnp.asarray(text[None, start:start + settings.bptt])
        targets = jnp.asarray(text[None, start + 1:start + 1 + settings.bptt])
        p = jax.tree_util.tree_unflatten(tree, [jnp.asarray(x, jnp.float32) for x in flat])
        (value, carry), grads = value_and_grad(p, carry, tokens, targets)
        total += float(value) * settings.bptt
        g = [np.asarray(x, np.float64) for x in jax.tree_util.tree_leaves(grads)]
        if settings.rule == "rms":
            flat = [x - settings.lr * gi / (m + settings.eps) + settings.decay * r * (x0 - x)
                    for x, x0, gi, m, r in zip(flat, flat0, g, ms_flat, rates)]
        else:
            flat = [x - settings.lr * gi + settings.decay * (x0 - x) for x, x0, gi in zip(flat, flat0, g)]
    return total / n


@pytest.mark.slow
@pytest.mark.parametrize("rule", ["sgd", "rms"])
def test_the_rules_against_a_step_by_step_reference(text, mesh, rule):
    model, params = model_and_params(reference=True)
    lr = 0.5 if rule == "sgd" else 2e-3
    settings = Settings(rule=rule, lr=lr, decay=0.05, eps=1e-3, bptt=8, batch_size=1)
    ms = dynamic_eval.gradient_statistics(model, params, text, dataclasses.replace(settings, stat_tokens=80), mesh)
    ours = dynamic_eval.dynamic_evaluate(model, params, text, settings, mesh, False, ms)
    np.testing.assert_allclose(ours["loss"], numpy_dynamic(model, params, text, settings, ms), rtol=2e-4)
    static = Evaluator(model, mesh, 1, 8)(params, text, False)
    assert abs(ours["loss"] - static["loss"]) > 1e-3  # the steps changed something


@pytest.mark.slow
def test_a_repeated_text_is_scored_better_the_second_time(mesh):
    """A text of 4 of the 17 symbols, twice: the first window is scored as statically (nothing seen yet),
    the second copy better than the first and than static evaluation."""
    model = LanguageModel(vocab_size=V, embed_size=16, hidden_size=32, num_layers=2)
    params = init_params(model, jax.random.PRNGKey(0))
    half = np.random.default_rng(1).integers(0, 4, 120).astype(np.int32)
    text = np.concatenate([half, half, half[:1]])
    settings = Settings(rule="sgd", lr=1.0, decay=0.0, bptt=10, batch_size=1)
    ours = dynamic_eval.dynamic_evaluate(model, params, text, settings, mesh, False, per_window=True)
    static = Evaluator(model, mesh, 1, 10)
    first_window = static(params, text[:11], False)
    np.testing.assert_allclose(ours["window_nll"][0], first_window["loss"] * 10, rtol=1e-6)  # nothing seen yet
    windows = np.asarray(ours["window_nll"])
    second, first = windows[12:24].sum(), windows[:12].sum()
    static_copy = static(params, text, False)["loss"] * 240 / 2
    assert second < 0.9 * first and second < 0.9 * static_copy


def test_settings_come_from_the_config_then_the_saved_choice_then_the_flags(tmp_path):
    from rnnlm.config import base_config
    e = base_config().eval
    assert Settings.from_config(e) == Settings()  # the config's defaults are the dataclass's
    dynamic_eval.save_choice(tmp_path, dataclasses.replace(Settings(), lr=7e-5, decay=3e-3), [], 100)
    chosen = Settings.from_config(e, tmp_path, decay=None, bptt=9)
    assert (chosen.lr, chosen.decay, chosen.bptt) == (7e-5, 3e-3, 9)
    assert json.loads((tmp_path / dynamic_eval.SETTINGS_FILE).read_text())["selected_on"] == "valid[:100]"
    for bad, message in [({"decay": 1.0}, "decay must be in"), ({"lr": -1.0}, "must not be negative"),
                         ({"rule": "adam"}, "unknown dynamic evaluation rule"), ({"bptt": 0}, "bptt must be positive")]:
        with pytest.raises(UserError, match=message):
            Settings.from_config(e, None, **bad)


@pytest.mark.slow
def test_the_command_tunes_saves_and_refuses_bad_input(char_run):
    def rnnlm(*args):
        return subprocess.run([sys.executable, "-m", "rnnlm", "eval", "--workdir", str(char_run), *args],
                              capture_output=True, text=True, timeout=300)
    out = rnnlm("--dynamic", "--tune", "--split=valid", "--dynamic-bptt=8")
    assert out.returncode == 0, out.stderr[-2000:]
    saved = json.loads((char_run / dynamic_eval.SETTINGS_FILE).read_text())
    assert len(saved["grid"]) == 9 and saved["chosen"]["bptt"] == 8
    best = min(saved["grid"], key=lambda row: row["loss"])
    assert (saved["chosen"]["lr"], saved["chosen"]["decay"]) == (best["lr"], best["decay"])
    assert f"lr {best['lr']:g}" in out.stdout.splitlines()[-1]
    (char_run / dynamic_eval.SETTINGS_FILE).unlink()  # the session's shared run stays as it was
    bad = rnnlm("--dynamic", "--dynamic-decay=1.5")
    assert bad.returncode == 2 and bad.stderr.strip() == "rnnlm: error: dynamic evaluation: the decay must be in [0, 1), got 1.5"
    assert rnnlm("--tune").stderr.strip().endswith("give one of them")
    assert rnnlm("--dynamic-lr=1").stderr.strip() == "rnnlm: error: the --dynamic-* options need --dynamic"
