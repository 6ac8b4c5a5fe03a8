"""A plain Flax reference: `nn.RNN(nn.OptimizedLSTMCell)` / `nn.RNN(nn.GRUCell)`, Optax, one jitted step.

Written the way the Flax documentation would: batch-major `nn.RNN` layers,
`nn.Embed`, `nn.Dense`, mean cross-entropy, `optax.chain(clip_by_global_norm(5),
sgd(1))`, state and carry donated. It is what rnnlm's hand-written cells and
scan are measured against inside JAX itself.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from rnnlm.bench import shapes

TEMPERATURE = 1.0


class FlaxLanguageModel(nn.Module):
    vocab: int
    embed: int
    hidden: int
    layers: int
    cell: str
    dropout: float = 0.0

    @nn.compact
    def __call__(self, tokens, carries, train: bool = False):
        """tokens [B, T] -> (logits [B, T, V], carries): one carry per layer."""
        drop = nn.Dropout(self.dropout, deterministic=not train)
        xs = drop(nn.Embed(self.vocab, self.embed)(tokens))
        new_carries = []
        for depth in range(self.layers):
            cell = nn.OptimizedLSTMCell(self.hidden) if self.cell == "lstm" else nn.GRUCell(self.hidden)
            carry, xs = nn.RNN(cell, return_carry=True, name=f"rnn_{depth}")(xs, initial_carry=carries[depth])
            xs = drop(xs)
            new_carries.append(carry)
        return nn.Dense(self.vocab)(xs), tuple(new_carries)

    def initial_carry(self, batch: int):
        # A fresh array for every slot: the step donates the carry, and XLA refuses a buffer donated twice.
        def zeros():
            return jnp.zeros((batch, self.hidden), jnp.float32)
        return tuple((zeros(), zeros()) if self.cell == "lstm" else zeros() for _ in range(self.layers))


def _train_step(state, carry, tokens, targets, *, model, tx):
    params, opt_state, step, rng = state

    def loss_fn(params):
        logits, new_carry = model.apply({"params": params}, tokens, carry, train=True,
                                        rngs={"dropout": jax.random.fold_in(rng, step)})
        return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean(), new_carry

    (loss, new_carry), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state, step + 1, rng), new_carry, loss


def _eval_step(params, carry, tokens, targets, *, model):
    logits, carry = model.apply({"params": params}, tokens, carry)
    return carry, optax.softmax_cross_entropy_with_integer_labels(logits, targets).sum()


def _sample(params, first, rng, *, model, length):
    """first [B] -> [B, length] tokens drawn from softmax(logits / T), one `lax.scan` over time."""
    def body(state, key):
        carry, token = state
        logits, carry = model.apply({"params": params}, token[:, None], carry)
        token = jax.random.categorical(key, logits[:, 0] / TEMPERATURE, axis=-1)
        return (carry, token), token

    _, tokens = jax.lax.scan(body, (model.initial_carry(first.shape[0]), first), jax.random.split(rng, length))
    return tokens.T


class FlaxBench:
    name = "flax"

    def __init__(self, shape: shapes.Shape, cell: str, dropout: float = 0.0, seed: int = 0):
        self.shape = shape
        self.model = FlaxLanguageModel(shape.vocab, shape.embed, shape.hidden, shape.layers, cell, dropout)
        tx = optax.chain(optax.clip_by_global_norm(5.0), optax.sgd(1.0))
        init_key, dropout_key, self.rng = jax.random.split(jax.random.PRNGKey(seed), 3)
        # Jitted: one compile instead of one per eager op of the initialisers.
        params = jax.jit(lambda: self.model.init({"params": init_key}, jnp.zeros((1, 1), jnp.int32),
                                                 self.model.initial_carry(1))["params"])()
        self.state = (params, tx.init(params), jnp.zeros((), jnp.int32), dropout_key)
        self.carry = self.model.initial_carry(shape.batch)
        self.step_fn = jax.jit(functools.partial(_train_step, model=self.model, tx=tx), donate_argnums=(0, 1))
        self.eval_fn = jax.jit(functools.partial(_eval_step, model=self.model), donate_argnums=(1,))
        self.samplers: dict[int, object] = {}
        self.streams = shapes.train_streams(shape, seed)
        self.window = 0
        self.eval_streams: dict[int, object] = {}

    def train(self, steps: int) -> None:
        loss = None
        for _ in range(steps):
            window = self.streams.window(self.window % self.streams.num_windows)
            tokens, targets = jax.device_put((window["tokens"], window["targets"]))
            self.state, self.carry, loss = self.step_fn(self.state, self.carry, tokens, targets)
            self.window += 1
        jax.block_until_ready((self.state, self.carry, loss))

    def evaluate(self, steps: int) -> None:
        if steps not in self.eval_streams:
            self.eval_streams[steps] = shapes.eval_streams(self.shape, steps)
        streams = self.eval_streams[steps]
        carry, total = self.model.initial_carry(self.shape.eval_batch), jnp.zeros(())
        for index in range(streams.num_windows):
            window = streams.window(index)
            carry, nll = self.eval_fn(self.state[0], carry, *jax.device_put((window["tokens"], window["targets"])))
            total = total + nll
        float(total)  # one host fetch at the end, as rnnlm's Evaluator does

    def sample(self, batch: int, length: int) -> None:
        if length not in self.samplers:
            self.samplers[length] = jax.jit(functools.partial(_sample, model=self.model, length=length))
        self.rng, key = jax.random.split(self.rng)
        jax.block_until_ready(self.samplers[length](self.state[0], jnp.zeros((batch,), jnp.int32), key))
