"""rnnlm/optim.py: the epoch-level learning-rate schedules of the literature, and the non-finite guard."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rnnlm import optim
from rnnlm.config import base_config
from rnnlm.optim import LearningRateController, apply_gradients, current_learning_rate, make_optimizer, set_learning_rate


def test_zaremba_and_plateau_schedules():
    c = base_config().train
    c.update(lr_schedule="zaremba", learning_rate=1.0, lr_decay=0.5, decay_start_epoch=4)
    zaremba = LearningRateController.from_config(c)
    assert [zaremba.start_epoch(e) for e in range(7)] == [1, 1, 1, 1, 0.5, 0.25, 0.125]
    c.update(lr_schedule="plateau", learning_rate=20.0, lr_decay=0.25)
    plateau = LearningRateController.from_config(c)
    rates = []
    for valid_loss in [5.0, 4.0, 4.5, 3.9, 3.9]:
        rates.append(plateau.start_epoch(len(rates)))
        plateau.end_epoch(valid_loss)
    assert rates == [20, 20, 20, 5, 5] and plateau.rate == 1.25
    restored = LearningRateController.from_config(c, plateau.to_dict())
    assert restored.rate == 1.25 and restored.best_valid_loss == 3.9
    c.lr_schedule = "cosine"
    assert LearningRateController.from_config(c).start_epoch(3) is None


def test_the_injected_rate_is_in_the_state_and_a_nonfinite_step_changes_nothing():
    c = base_config().train
    c.update(optimizer="sgd", learning_rate=0.5, grad_clip=0.0)
    tx = make_optimizer(c, total_steps=10)
    params = {"w": jnp.ones(3)}
    state = set_learning_rate(tx.init(params), 0.25)
    assert current_learning_rate(state) == 0.25
    new, new_state, norm, finite = apply_gradients(tx, {"w": jnp.full(3, 2.0)}, state, params, jnp.float32(1.0), True)
    np.testing.assert_allclose(new["w"], 1.0 - 0.25 * 2.0)
    assert bool(finite) and float(norm) == float(optax.tree.norm({"w": jnp.full(3, 2.0)}))
    kept, kept_state, _, finite = apply_gradients(tx, {"w": jnp.full(3, jnp.nan)}, state, params, jnp.float32(1.0), True)
    assert not bool(finite)
    np.testing.assert_array_equal(kept["w"], params["w"])


def test_a_changed_cosine_horizon_on_resume_is_said_plainly():
    config = base_config().train
    config.update(optimizer="sgd", lr_schedule="cosine", learning_rate=1.0, warmup_steps=5)
    tx = optim.make_optimizer(config, total_steps=100)
    params = {"w": jnp.ones(3)}
    state = tx.init(params)
    step = jax.jit(lambda state: tx.update({"w": jnp.ones(3)}, state, params)[1])
    for _ in range(60):
        state = step(state)
    assert optim.horizon_notice(config, 100, 60, state) is None  # the same horizon: nothing to say
    notice = optim.horizon_notice(config, 200, 60, state)
    later = float(optim.step_schedule(config, 200)(60))
    assert notice.startswith("learning rate: the cosine schedule now spans 200 steps") and f"{later:.3g}" in notice
    config.lr_schedule = "constant"
    assert optim.horizon_notice(config, 200, 60, tx.init(params)) is None
