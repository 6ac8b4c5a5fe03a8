"""A saved run, read-only: its config, tokenizer and parameters, for `eval`, `generate` and `predict`.

Classifier runs (`task = "classify"`) load as `rnnlm.classify.ClassifierRun`.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib

import jax
import jax.numpy as jnp

from rnnlm import sharding
from rnnlm.checkpoint import Checkpoints
from rnnlm.config import load_config
from rnnlm.data.tokenizers import load_tokenizer
from rnnlm.errors import UserError
from rnnlm.models import language_model_from_config
from rnnlm.workdir import existing_run, prepare_data


@dataclasses.dataclass
class Run:
    task = "lm"
    workdir: pathlib.Path
    config: object
    tokenizer: object
    model: object
    params: object
    step: int

    def evaluate(self, split: str) -> dict:
        from rnnlm.train import Evaluator
        _, ids = prepare_data(self.config, self.workdir)
        from rnnlm.metrics import split_units, with_per_unit_metrics
        evaluator = Evaluator(self.model, sharding.make_mesh(), self.config.eval.batch_size,
                              self.config.eval.bptt or self.config.train.bptt)
        metrics = evaluator(self.params, ids[split], self.tokenizer.kind == "char")
        # Per word and per character too, so runs with different tokenizers compare (rnnlm/metrics.py);
        # that needs the split's text once (then data/units.json): without the corpus, per token only.
        try:
            units = split_units(self.config, self.workdir)[split]
        except UserError as e:
            logging.warning("no per-word metrics: %s", e)
            return metrics
        return with_per_unit_metrics(metrics, len(ids[split]) - 1, units)

    def generate(self, prompt: str, length: int, temperature: float, top_k: int, top_p: float,
                 seed: int, num_samples: int = 1) -> list[str]:
        from rnnlm.sampling import sample_text
        return sample_text(self.model, self.params, self.tokenizer, prompt, length=length, temperature=temperature,
                           top_k=top_k, top_p=top_p, seed=seed, num_samples=num_samples)


def load_run(workdir, which: str = "latest"):
    """A `Run` (language model) or a `rnnlm.classify.ClassifierRun`, by the saved config's task."""
    workdir = existing_run(workdir)
    config = load_config(workdir / "config.json")
    if config.get("task", "lm") == "classify":
        from rnnlm.classify import load_classifier_run
        return load_classifier_run(workdir, which)
    tokenizer = load_tokenizer(workdir / "tokenizer.json")
    model = language_model_from_config(config.model, tokenizer.vocab_size)
    checkpoints = Checkpoints(workdir, read_only=True)
    step = checkpoints.resolve(which)
    shapes = jax.eval_shape(lambda: model.init({"params": jax.random.PRNGKey(0)}, jnp.zeros((1, 1), jnp.int32),
                                               model.initial_carry(1))["params"])
    params = checkpoints.restore_params(step, shapes)
    checkpoints.close()
    return Run(workdir, config, tokenizer, model, params, step)
