"""A saved run, read-only: its config, tokenizer and parameters, for `eval` and `generate`."""

from __future__ import annotations

import dataclasses
import pathlib

import jax
import jax.numpy as jnp

from rnnlm import sharding
from rnnlm.checkpoint import Checkpoints
from rnnlm.config import load_config
from rnnlm.data.tokenizers import load_tokenizer
from rnnlm.models import language_model_from_config
from rnnlm.workdir import existing_run, prepare_data


@dataclasses.dataclass
class Run:
    workdir: pathlib.Path
    config: object
    tokenizer: object
    model: object
    params: object
    step: int

    def evaluate(self, split: str) -> dict:
        from rnnlm.train import Evaluator
        _, ids = prepare_data(self.config, self.workdir)
        evaluator = Evaluator(self.model, sharding.make_mesh(), self.config.eval.batch_size,
                              self.config.eval.bptt or self.config.train.bptt)
        return evaluator(self.params, ids[split], self.tokenizer.kind == "char")

    def generate(self, prompt: str, length: int, temperature: float, top_k: int, top_p: float,
                 seed: int, num_samples: int = 1) -> list[str]:
        from rnnlm.sampling import sample_text
        return sample_text(self.model, self.params, self.tokenizer, prompt, length=length, temperature=temperature,
                           top_k=top_k, top_p=top_p, seed=seed, num_samples=num_samples)


def load_run(workdir, which: str = "latest") -> Run:
    workdir = existing_run(workdir)
    config = load_config(workdir / "config.json")
    tokenizer = load_tokenizer(workdir / "tokenizer.json")
    model = language_model_from_config(config.model, tokenizer.vocab_size)
    checkpoints = Checkpoints(workdir, read_only=True)
    step = checkpoints.resolve(which)
    shapes = jax.eval_shape(lambda: model.init({"params": jax.random.PRNGKey(0)}, jnp.zeros((1, 1), jnp.int32),
                                               model.initial_carry(1))["params"])
    params = checkpoints.restore_params(step, shapes)
    checkpoints.close()
    return Run(workdir, config, tokenizer, model, params, step)
