"""rnnlm through its shipped code path: the same objects `train_and_evaluate` and `rnnlm generate` use.

`LanguageModel`, `optim.make_optimizer` (SGD, global-norm clipping at 5, the
learning rate injected as state), `create_train_state` on the device mesh, the
language model's window loss in the loop's `train_step`, compiled by
`compile_train_step` exactly as in `train_and_evaluate` (explicit shardings,
state and carry donated), the carry from `sharding.zeros_carry`, this process's
rows of each host window sharded onto the mesh every step as the train loop
does, the `Evaluator` of validation, and `sampling.generate`. Nothing is
re-implemented here, so a slowdown in rnnlm shows up in this benchmark.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from rnnlm import optim, sharding
from rnnlm.bench import shapes
from rnnlm.config import base_config
from rnnlm.models import LanguageModel
from rnnlm.sampling import generate
from rnnlm.state import create_train_state
from rnnlm.tasks.lm import Evaluator, window_loss
from rnnlm.train import compile_train_step

TEMPERATURE = 1.0  # plain sampling from the softmax, as the PyTorch loop does


def train_config():
    """The train fields make_optimizer reads, set to the benchmark's common optimizer."""
    c = base_config().train
    c.optimizer = "sgd"
    c.learning_rate = 1.0
    c.lr_schedule = "constant"
    c.grad_clip = 5.0
    c.loss = "token_mean"  # the PyTorch mean over tokens; the loss scale does not change the cost
    return c


def make_model(shape: shapes.Shape, cell: str, dropout: float = 0.0) -> LanguageModel:
    return LanguageModel(vocab_size=shape.vocab, embed_size=shape.embed, hidden_size=shape.hidden,
                         num_layers=shape.layers, cell=cell, dropout=dropout, embed_dropout=dropout)


class RnnlmBench:
    name = "rnnlm"

    def __init__(self, shape: shapes.Shape, cell: str, dropout: float = 0.0, seed: int = 0, num_devices: int = 0):
        self.shape = shape
        self.model = make_model(shape, cell, dropout)
        c = train_config()
        tx = optim.make_optimizer(c, total_steps=1)
        self.mesh = sharding.make_mesh(num_devices)
        self.state = create_train_state(self.model, tx, seed, self.mesh)
        self.carry = sharding.zeros_carry(self.model.initial_carry, shape.batch, self.mesh)
        self.step_fn = compile_train_step(functools.partial(window_loss, self.model, c.loss), tx, self.mesh, self.carry)
        self.streams = shapes.train_streams(shape, seed).rows(sharding.local_rows(shape.batch, self.mesh))
        self.window = 0
        self.evaluator = Evaluator(self.model, self.mesh, shape.eval_batch, shape.seq_len)
        self.eval_ids: dict[int, object] = {}
        self.rng = jax.random.PRNGKey(seed)

    def executed_flops_per_token(self) -> dict:
        """{"forward", "train"}: the matmul FLOPs rnnlm runs per evaluated and trained token, which
        are fewer than the model's count where it folds the embedding into the first layer."""
        def flops(batch, train):
            tokens = (batch, self.shape.seq_len)
            if self.model.plan(tokens, train=train).input_table:
                return shapes.folded_flops_per_token(self.shape, self.model.cell, batch * self.shape.seq_len, train)
            count = shapes.train_flops_per_token if train else shapes.forward_flops_per_token
            return count(self.shape, self.model.cell)
        return {"forward": flops(self.shape.eval_batch, False), "train": flops(self.shape.batch, True)}

    def train(self, steps: int) -> None:
        metrics = None
        for _ in range(steps):
            batch = sharding.shard_batch(self.streams.window(self.window % self.streams.num_windows), self.mesh)
            self.state, self.carry, metrics = self.step_fn(self.state, self.carry, batch)
            self.window += 1
        jax.block_until_ready((self.state, self.carry, metrics))

    def evaluate(self, steps: int) -> None:
        # The Evaluator scores a whole split and fetches the total: `steps` windows, one sync at the end.
        if steps not in self.eval_ids:
            self.eval_ids[steps] = shapes.eval_ids(self.shape, steps)
        self.evaluator(self.state.params, self.eval_ids[steps], char_level=False)

    def sample(self, batch: int, length: int) -> None:
        self.rng, key = jax.random.split(self.rng)
        prompt = jnp.zeros((batch, 1), jnp.int32)
        tokens = generate(self.model, self.state.params, prompt, key, jnp.float32(TEMPERATURE), jnp.float32(1.0),
                          length=length, top_k=0)
        jax.block_until_ready(tokens)
