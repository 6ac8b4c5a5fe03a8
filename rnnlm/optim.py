"""Optax optimizers and learning-rate schedules.

Step-based schedules (constant, cosine with warmup) live inside Optax. The
epoch-based ones of the RNN-LM literature are decided on the host between
epochs by `LearningRateController` and written into the optimizer state through
`optax.inject_hyperparams`, so the current rate is checkpointed with the state:
  * zaremba: lr * decay ** max(epoch + 1 - decay_start_epoch, 0) (Zaremba et al. 2014);
  * plateau: multiply by decay whenever validation loss does not improve (the
    PyTorch word_language_model example divides by 4).

Averaging (`train.averaging`, Polyak & Juditsky 1992; Merity et al. 2018's NT-ASGD) keeps the mean of
the iterates in the train state (`average`), updated after every step once it is on; `Averaging` is
the host's trigger, whose history goes into checkpoint meta like the learning-rate controller's.
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

    def l2(tx):  # sgd and adam: weight_decay * params added to the (clipped) gradient, as torch's weight_decay
        return optax.chain(optax.add_decayed_weights(c.weight_decay), tx) if c.weight_decay > 0 else tx

    builders = {
        "sgd": lambda learning_rate: l2(optax.sgd(learning_rate, momentum=c.momentum or None)),
        "adam": lambda learning_rate: l2(optax.adam(learning_rate)),
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


def apply_gradients(tx, grads, opt_state, params, loss_sum, skip_nonfinite: bool, scale=None):
    """One Optax update with the non-finite guard both train steps share.

    scale: the update times this, which is the learning rate times it for every optimizer here (each
    update is linear in the rate: sgd with or without momentum, adam, adamw's decay included).

    Returns (params, opt_state, grad_norm, finite): `finite` says the loss and
    the gradient norm were finite; with skip_nonfinite a non-finite step leaves
    params and optimizer state unchanged.
    """
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss_sum) & jnp.isfinite(grad_norm)
    updates, new_opt_state = tx.update(grads, opt_state, params)
    if scale is not None:
        updates = jax.tree_util.tree_map(lambda u: u * scale.astype(u.dtype), updates)
    new_params = optax.apply_updates(params, updates)
    if skip_nonfinite:
        keep = lambda new, old: jnp.where(finite, new, old)
        new_params = jax.tree_util.tree_map(keep, new_params, params)
        new_opt_state = jax.tree_util.tree_map(keep, new_opt_state, opt_state)
    return new_params, new_opt_state, grad_norm, finite


# --- iterate averaging ------------------------------------------------------------------------

AVERAGING = ("none", "nonmono", "always", "epoch")


def initial_average(params, mode: str):
    """The train state's `average` for `train.averaging`: None without, else the running mean (a copy of
    the parameters until the first averaged step), the number of averaged iterates, and whether it is on."""
    if mode == "none":
        return None
    return {"params": jax.tree_util.tree_map(jnp.copy, params), "count": jnp.zeros((), jnp.int32),
            "on": jnp.asarray(mode == "always")}  # nonmono and epoch switch it on later, from the host


def update_average(average, params, finite=True):
    """The mean of the iterates after every step since averaging began, one step later. As torch's ASGD
    with t0=0, lambd=0 (AWD-LSTM's): the first averaged step's parameters, then a running mean."""
    add = average["on"] & finite
    count = average["count"] + add.astype(jnp.int32)
    weight = jnp.where(add, 1.0 / jnp.maximum(count, 1).astype(jnp.float32), 0.0)
    mean = jax.tree_util.tree_map(lambda a, p: a + weight.astype(a.dtype) * (p - a), average["params"], params)
    return {"params": mean, "count": count, "on": average["on"]}


def evaluation_params(state):
    """What evaluation, "best" selection, eval and generate read: the average once it holds an iterate."""
    average = getattr(state, "average", None)
    if average is None:
        return state.params
    use = average["count"] > 0
    return jax.tree_util.tree_map(lambda a, p: jnp.where(use, a, p), average["params"], state.params)


@dataclasses.dataclass
class Averaging:
    """The host's averaging trigger. `nonmono` is AWD-LSTM's code (main.py; its authors confirm the code,
    not the paper's Algorithm 1, in awd-lstm-lm #13 and #73): at an epoch's validation, switch on when more
    than `nonmono` validations are logged and this one is worse than the best of all but the last
    `nonmono` of them; the current one joins the history after the test, and only before the switch.
    `epoch` is tail averaging (as stochastic weight averaging's start): on at the end of epoch `start_epoch`."""

    mode: str
    nonmono: int
    start_epoch: int = 0
    history: list = dataclasses.field(default_factory=list)
    started_step: int | None = None

    @classmethod
    def from_config(cls, train_config, saved: dict | None = None):
        averaging = cls(train_config.averaging, train_config.nonmono, train_config.average_start_epoch)
        if saved:
            averaging.history, averaging.started_step = list(saved["history"]), saved["started_step"]
        return averaging

    def should_start(self, valid_loss: float, step: int, epoch: int = 0) -> bool:
        """Record the validation loss after `epoch` completed epochs; True once, when `nonmono` or `epoch`
        averaging is to switch on now."""
        if self.mode not in ("nonmono", "epoch") or self.started_step is not None:
            return False
        if self.mode == "epoch":
            start = epoch >= self.start_epoch
        else:
            start = len(self.history) > self.nonmono and valid_loss > min(self.history[:-self.nonmono])
        self.history.append(valid_loss)
        if start:
            self.started_step = step
        return start

    def to_dict(self) -> dict:
        return {"history": list(self.history), "started_step": self.started_step}


def start_averaging(average):
    return {**average, "on": jnp.asarray(True)}
