"""Optax optimizers and learning-rate schedules.

Step-based schedules (constant, cosine with warmup) live inside Optax. The
epoch-based ones of the RNN-LM literature are decided on the host between
epochs by `LearningRateController` and written into the optimizer state through
`optax.inject_hyperparams`, so the current rate is checkpointed with the state:
  * zaremba: lr * decay ** max(epoch + 1 - decay_start_epoch, 0) (Zaremba et al. 2014);
  * plateau: multiply by decay whenever validation loss does not improve (the
    PyTorch word_language_model example divides by 4).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from rnnlm.errors import UserError

SCHEDULES = ("constant", "zaremba", "plateau", "cosine")


def make_optimizer(train_config, total_steps: int) -> optax.GradientTransformation:
    c = train_config
    if c.lr_schedule not in SCHEDULES:
        raise UserError(f"unknown train.lr_schedule {c.lr_schedule!r}; choose one of {', '.join(SCHEDULES)}")
    if c.learning_rate <= 0:
        raise UserError(f"train.learning_rate must be positive, got {c.learning_rate}")
    learning_rate = step_schedule(c, total_steps)

    builders = {
        "sgd": lambda learning_rate: optax.sgd(learning_rate, momentum=c.momentum or None),
        "adam": lambda learning_rate: optax.adam(learning_rate),
        "adamw": lambda learning_rate: optax.adamw(learning_rate, weight_decay=c.weight_decay),
    }
    if c.optimizer not in builders:
        raise UserError(f"unknown train.optimizer {c.optimizer!r}; choose one of {', '.join(builders)}")
    optimizer = optax.inject_hyperparams(builders[c.optimizer])(learning_rate=learning_rate)
    clip = optax.clip_by_global_norm(c.grad_clip) if c.grad_clip > 0 else optax.identity()
    return with_standard_promotion(optax.chain(clip, optimizer))


def step_schedule(train_config, total_steps: int):
    """The learning rate Optax schedules per step (cosine with warmup over `total_steps`), or a constant."""
    c = train_config
    if c.lr_schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, c.learning_rate, max(c.warmup_steps, 1),
                                                  max(total_steps, c.warmup_steps + 1))
    return c.learning_rate


def horizon_notice(train_config, total_steps: int, step: int, opt_state) -> str | None:
    """On resume: say so when the step schedule's horizon changed (more epochs or steps), since the rate
    then jumps to where the new cosine is at this step, not where the old one left it."""
    schedule = step_schedule(train_config, total_steps)
    if not callable(schedule) or step == 0:
        return None
    # The injected rate is the one the last update used: the schedule at step - 1.
    was, now = current_learning_rate(opt_state), float(schedule(step - 1))
    if abs(now - was) <= 1e-3 * max(abs(was), 1e-12):
        return None
    now = float(schedule(step))
    return (f"learning rate: the cosine schedule now spans {total_steps:,} steps (train.epochs or train.max_steps "
            f"changed), so it continues from {now:.3g} at step {step:,}, where the new cosine is, instead of "
            f"{was:.3g}, where the old one had reached")


def with_standard_promotion(tx: optax.GradientTransformation) -> optax.GradientTransformation:
    """`tx` with its arithmetic under JAX's standard dtype promotion. Optax mixes Python floats with its
    int32 step counts (schedules, Adam's bias correction), which the tests' strict promotion refuses;
    the state is `tx`'s own."""
    def init(params):
        with jax.numpy_dtype_promotion("standard"):
            return tx.init(params)

    def update(updates, state, params=None):
        with jax.numpy_dtype_promotion("standard"):
            return tx.update(updates, state, params)
    return optax.GradientTransformation(init, update)


def _hyperparams(opt_state):
    return opt_state[1].hyperparams


def current_learning_rate(opt_state) -> float:
    return float(_hyperparams(opt_state)["learning_rate"])


def set_learning_rate(opt_state, value: float):
    """A copy of the optimizer state with the injected learning rate replaced."""
    inject_state = opt_state[1]
    old = inject_state.hyperparams["learning_rate"]
    hyperparams = dict(inject_state.hyperparams, learning_rate=jnp.asarray(value, old.dtype))
    return (opt_state[0], inject_state._replace(hyperparams=hyperparams)) + tuple(opt_state[2:])


@dataclasses.dataclass
class LearningRateController:
    """Host-side, epoch-level learning-rate decisions; its fields go into checkpoint meta."""

    schedule: str
    base: float
    decay: float
    decay_start_epoch: int
    rate: float = 0.0
    best_valid_loss: float = float("inf")

    def __post_init__(self):
        self.rate = self.rate or self.base

    @classmethod
    def from_config(cls, train_config, saved: dict | None = None):
        c = train_config
        controller = cls(c.lr_schedule, c.learning_rate, c.lr_decay, c.decay_start_epoch)
        if saved:
            controller.rate = saved["rate"]
            best = saved["best_valid_loss"]
            controller.best_valid_loss = float("inf") if best is None else best
        return controller

    @property
    def host_controlled(self) -> bool:
        return self.schedule in ("zaremba", "plateau")

    def start_epoch(self, epoch: int) -> float | None:
        """The rate for this epoch, or None when Optax schedules it."""
        if self.schedule == "zaremba":
            self.rate = self.base * self.decay ** max(epoch + 1 - self.decay_start_epoch, 0)
        return self.rate if self.host_controlled else None

    def end_epoch(self, valid_loss: float) -> None:
        if self.schedule == "plateau" and valid_loss >= self.best_valid_loss:
            self.rate *= self.decay
        self.best_valid_loss = min(self.best_valid_loss, valid_loss)

    def to_dict(self) -> dict:
        best = None if self.best_valid_loss == float("inf") else self.best_valid_loss
        return {"rate": self.rate, "best_valid_loss": best}


def apply_gradients(tx, grads, opt_state, params, loss_sum, skip_nonfinite: bool):
    """One Optax update with the non-finite guard both train steps share.

    Returns (params, opt_state, grad_norm, finite): `finite` says the loss and
    the gradient norm were finite; with skip_nonfinite a non-finite step leaves
    params and optimizer state unchanged.
    """
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss_sum) & jnp.isfinite(grad_norm)
    updates, new_opt_state = tx.update(grads, opt_state, params)
    new_params = optax.apply_updates(params, updates)
    if skip_nonfinite:
        keep = lambda new, old: jnp.where(finite, new, old)
        new_params = jax.tree_util.tree_map(keep, new_params, params)
        new_opt_state = jax.tree_util.tree_map(keep, new_opt_state, opt_state)
    return new_params, new_opt_state, grad_norm, finite
