"""rnnlm/cache.py: a hand-computed example of the mixture, lambda 0 is static evaluation, the cache with
dynamic evaluation at learning rate 0 is the cache alone, the command's settings."""

import math
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnlm import cache, dynamic_eval, sharding
from rnnlm.errors import UserError
from rnnlm.models import LanguageModel, init_params
from rnnlm.tasks.lm import Evaluator


def test_the_mixture_by_hand():
    """Window 2, one stream, width 1; the cache holds (h 0.5, next token 7) in its second slot."""
    held = (jnp.asarray([[[0.0], [0.5]]]), jnp.asarray([[0, 7]], jnp.int32), jnp.asarray([[False, True]]))
    top = jnp.asarray([[[1.0], [2.0], [3.0]]])
    targets = jnp.asarray([[7, 5, 7]], jnp.int32)
    p_model = np.array([0.1, 0.2, 0.3])
    after, mixed = cache.mix(held, top, jnp.log(jnp.asarray([p_model], jnp.float32)), targets, jnp.ones((1, 3)),
                             1.0, 0.5)
    # t=0 reads the cached 7 alone; t=1 reads 7 and 7 (target 5: nothing); t=2 reads (h 1: 7), (h 2: 5).
    p_cache = [1.0, 0.0, math.exp(3) / (math.exp(3) + math.exp(6))]
    expected = [0.5 * p + 0.5 * c for p, c in zip(p_model, p_cache)]
    np.testing.assert_allclose(np.exp(np.asarray(mixed[0])), expected, rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(after[0])[0, :, 0], [2.0, 3.0])  # the last two positions
    np.testing.assert_array_equal(np.asarray(after[1])[0], [5, 7])
    _, first = cache.mix(cache.empty(1, 2, 1), top, jnp.log(jnp.asarray([p_model], jnp.float32)), targets,
                         jnp.ones((1, 3)), 1.0, 0.5)
    np.testing.assert_allclose(np.exp(np.asarray(first[0]))[0], 0.1, rtol=1e-6)  # nothing cached yet: the model


@pytest.mark.slow
def test_padding_never_enters_the_cache():
    top = jnp.asarray([[[1.0], [2.0]]])
    after, _ = cache.mix(cache.empty(1, 4, 1), top, jnp.zeros((1, 2)), jnp.asarray([[3, 4]], jnp.int32),
                         jnp.asarray([[1.0, 0.0]]), 1.0, 0.5)
    np.testing.assert_array_equal(np.asarray(after[2])[0], [False, False, True, False])


@pytest.fixture(scope="module")
def setup():
    model = LanguageModel(vocab_size=13, embed_size=8, hidden_size=8, num_layers=2)
    params = init_params(model, jax.random.PRNGKey(0))
    ids = np.random.default_rng(0).integers(0, 4, 301).astype(np.int32) * 3  # repetitive: the cache helps
    return model, params, ids, sharding.make_mesh(1)


@pytest.mark.slow
def test_lambda_zero_is_static_evaluation_and_the_cache_helps_a_repetitive_text(setup):
    model, params, ids, mesh = setup
    static = Evaluator(model, mesh, 2, 7)(params, ids, False)
    off = cache.cache_evaluate(model, params, ids, cache.Settings(window=20, lam=0.0), mesh, 2, 7, False)
    np.testing.assert_allclose(off["loss"], static["loss"], rtol=1e-6)
    np.testing.assert_allclose(off["model_loss"], static["loss"], rtol=1e-6)
    on = cache.cache_evaluate(model, params, ids, cache.Settings(window=20, theta=0.5, lam=0.3), mesh, 2, 7, False)
    assert on["loss"] < static["loss"] - 0.1 and on["tokens"] == len(ids) - 1


@pytest.mark.slow
def test_with_dynamic_evaluation_at_learning_rate_zero_it_is_the_cache_alone(setup):
    model, params, ids, mesh = setup
    settings = cache.Settings(window=20, theta=0.5, lam=0.3)
    alone = cache.cache_evaluate(model, params, ids, settings, mesh, 2, 7, False)
    both = dynamic_eval.dynamic_evaluate(model, params, ids, dynamic_eval.Settings(rule="sgd", lr=0.0, bptt=7,
                                                                                   batch_size=2),
                                         mesh, False, cache=settings)
    np.testing.assert_allclose(both["loss"], alone["loss"], rtol=1e-5)
    adapted = dynamic_eval.dynamic_evaluate(model, params, ids, dynamic_eval.Settings(rule="sgd", lr=0.5, bptt=7,
                                                                                      batch_size=2),
                                            mesh, False, cache=settings)
    assert adapted["loss"] < alone["loss"]


@pytest.mark.parametrize("bad, message", [({"lam": 1.5}, "lambda must be in [0, 1]"),
                                          ({"theta": -0.1}, "theta must not be negative"),
                                          ({"window": 0}, "window must be at least 1")])
def test_bad_settings_are_one_line_errors(bad, message):
    from rnnlm.config import base_config
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("]", r"\]")):
        cache.Settings.from_config(base_config().eval, None, **bad)


@pytest.mark.slow
def test_the_command_tunes_the_cache_and_saves_its_choice(char_run):
    out = subprocess.run([sys.executable, "-m", "rnnlm", "eval", "--workdir", str(char_run), "--cache", "--tune",
                          "--cache-window=50"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    import json
    saved = json.loads((char_run / "cache.json").read_text())
    (char_run / "cache.json").unlink()
    best = min(saved["grid"], key=lambda row: row["loss"])
    assert len(saved["grid"]) == 9 and (saved["chosen"]["theta"], saved["chosen"]["lam"]) == (best["theta"], best["lam"])
    assert saved["chosen"]["window"] == 50 and "cache (window 50" in out.stdout.splitlines()[-1]
    both = subprocess.run([sys.executable, "-m", "rnnlm", "eval", "--workdir", str(char_run), "--cache", "--dynamic",
                           "--tune"], capture_output=True, text=True, timeout=300)
    assert both.returncode == 2 and "one method at a time" in both.stderr
