"""The text-classification task: padded, masked sentence batches; accuracy and a confusion matrix.

Batches are [B, T] token ids with a [B, T] mask; the mask reaches the
recurrence unless `model.use_mask` is off (the masking ablation), and the last
batch of a pass is filled with zero-weight rows, so every example counts once.
Each epoch's order comes from (config.seed, epoch), so a resumed run sees the
batches an uninterrupted one would. A classifier carries no state between
batches; its carry is a one-element placeholder (`NO_CARRY`).

Model selection: every epoch ends with a checkpoint scored on valid; the
checkpoint kept as "best" has the highest valid accuracy (ties: lower valid
loss). The reported valid and test numbers are those of that checkpoint
(early stopping on valid); the last epoch's valid numbers are in metrics.jsonl.
"""

from __future__ import annotations

import functools
import json
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from rnnlm import pretrained, sharding
from rnnlm.checkpoint import Checkpoints
from rnnlm.data import classification as data_lib
from rnnlm.errors import UserError
from rnnlm.loss import token_nll
from rnnlm.models import classifier_from_config, init_params
from rnnlm.state import load_params
from rnnlm.tasks.base import Context, Run, Task
from rnnlm.workdir import write_atomically

NAME = "classify"


def no_carry():
    """The carry item of a classifier's checkpoint: nothing flows between batches (the name is on disk)."""
    return {"none": jnp.zeros((1,), jnp.int32)}


def selection_score(metrics: dict) -> float:
    """Lower is better: valid error rate, ties broken by valid loss (1e-4 * loss < one example's share)."""
    return (1.0 - metrics["accuracy"]) + 1e-4 * min(metrics["loss"], 10.0)


# --- data --------------------------------------------------------------------------

def load_classification_data(config, workdir: pathlib.Path, extra_words=None):
    """(WordIndex, {split: EncodedSplit}, fitted_now). The workdir's tokenizer.json when it has one.

    A freshly fitted index is extended with `extra_words` (a language model's vocabulary, rnnlm/pretrained.py).
    """
    examples = data_lib.read_examples(config.data)
    path = pathlib.Path(workdir) / "tokenizer.json"
    if path.exists():
        tokenizer, fitted = load_word_index(path), False
    else:
        tokenizer, fitted = data_lib.fit_word_index(examples["train"], config.data, config.model.num_classes), True
        if extra_words:
            tokenizer = pretrained.extend_word_index(tokenizer, extra_words)
    splits = {s: data_lib.encode_split(e, tokenizer, config.data.truncating, s) for s, e in examples.items()}
    return tokenizer, splits, fitted


def load_word_index(path: pathlib.Path) -> data_lib.WordIndex:
    spec = json.loads(pathlib.Path(path).read_text())
    if spec.pop("kind", None) != data_lib.WordIndex.kind:
        raise UserError(f"{path} is not a classifier's word index")
    return data_lib.WordIndex(**spec)


def embedding_rows(config, tokenizer) -> int:
    """Keras's Embedding(num_words, ...): data.num_words rows when set (ids never reach the spare ones)."""
    return max(config.data.num_words, tokenizer.vocab_size)


def batches(split: data_lib.EncodedSplit, data_config, maxlen: int, batch_size: int, rng=None):
    """The index arrays of one pass (shuffled when rng is given) and a function making batch i."""
    order = data_lib.batch_order(split.lengths, batch_size, rng, data_config.bucket_by_length)

    def make(index, rows=slice(None)):
        batch = data_lib.make_batch(split, order[index], batch_size, maxlen, data_config.padding,
                                    data_config.bucket_by_length)
        return {k: v[rows] for k, v in batch.items()}
    return order, make


# --- steps ---------------------------------------------------------------------------

def adversarial_perturbation(grad, epsilon: float):
    """epsilon * g / ||g||_2 per example, the norm over all its steps and embedding units (grad [B, T, E]):
    the first-order worst case within an L2 ball of radius epsilon around the embedded words (Miyato et al.
    2017's r_adv). An example with no gradient (a filler row, weight 0) stays unperturbed."""
    norm = jnp.sqrt(jnp.sum(jnp.square(grad), axis=(1, 2), keepdims=True))
    return epsilon * grad / jnp.maximum(norm, jnp.finfo(grad.dtype).tiny ** 0.5)


def batch_loss(model, use_mask: bool, params, carry, batch, rng, *, adversarial: float = 0.0,
               adversarial_weight: float = 1.0):
    """(loss, (carry, {"nll_sum", "correct", "examples"})): the loss is the mean cross-entropy over the weighted
    examples, plus the adversarial term when on.

    adversarial > 0 adds adversarial training on the embedded words (Miyato, Dai & Goodfellow 2017,
    arXiv 1605.07725): the batch is read again with each example's embedded words moved by the
    perturbation of L2 norm `adversarial` along its loss's gradient, computed with the parameters held
    constant and the same dropout masks, and adversarial_weight times that reading's cross-entropy
    joins the loss; its sum is logged as "adversarial_sum", apart from the NLL.
    """
    mask = batch["mask"] if use_mask else None
    weights = batch["weights"]

    def nll_sum_of(params, perturbation=None):
        logits = model.apply({"params": params}, batch["tokens"], mask, train=True, rngs={"dropout": rng},
                             perturbation=perturbation)
        return (token_nll(logits, batch["labels"]) * weights).sum(), logits

    nll_sum, logits = nll_sum_of(params)
    examples = weights.sum()
    correct = ((jnp.argmax(logits, axis=-1) == batch["labels"]).astype(weights.dtype) * weights).sum()
    sums = {"nll_sum": nll_sum, "correct": correct, "examples": examples}
    loss_sum = nll_sum
    if adversarial:
        constant = jax.lax.stop_gradient(params)
        zeros = jnp.zeros(batch["tokens"].shape + (model.embed_size,), jnp.float32)
        grad = jax.grad(lambda r: nll_sum_of(constant, r)[0])(zeros)
        sums["adversarial_sum"] = nll_sum_of(params, adversarial_perturbation(grad, adversarial))[0]  # constant in params
        loss_sum = nll_sum + adversarial_weight * sums["adversarial_sum"]
    return loss_sum / jnp.maximum(examples, 1.0), (carry, sums)


def eval_step(params, batch, *, model, use_mask: bool):
    """Class probabilities [B, C] of a batch (the host weighs, counts and tabulates)."""
    logits = model.apply({"params": params}, batch["tokens"], batch["mask"] if use_mask else None)
    return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)


class Evaluator:
    """Loss, accuracy and confusion matrix (rows: true class, columns: predicted) of a whole split."""

    def __init__(self, model, mesh, config, maxlen: int):
        self.batch_size, self.maxlen = config.eval.batch_size, maxlen
        sharding.check_batch_size(self.batch_size, mesh, "eval.batch_size")
        self.mesh, self.config = mesh, config
        self.rows = sharding.local_rows(self.batch_size, mesh)
        self.step = jax.jit(functools.partial(eval_step, model=model, use_mask=config.model.use_mask),
                            out_shardings=sharding.replicated(mesh))

    def __call__(self, params, split: data_lib.EncodedSplit, num_classes: int) -> dict:
        return classification_metrics(self.probabilities(params, split, num_classes), split.labels)

    def probabilities(self, params, split: data_lib.EncodedSplit, num_classes: int) -> np.ndarray:
        """[N, C] class probabilities of every example, in the split's order."""
        order, make = batches(split, self.config.data, self.maxlen, self.batch_size)
        probabilities = np.zeros((len(split.labels), num_classes), np.float64)
        for index, indices in enumerate(order):
            batch = sharding.shard_batch(make(index, self.rows), self.mesh)
            probabilities[indices] = np.asarray(jax.device_get(self.step(params, batch)))[:len(indices)]
        return probabilities


def classification_metrics(probabilities: np.ndarray, labels: np.ndarray) -> dict:
    predictions = probabilities.argmax(axis=-1)
    confusion = np.zeros((probabilities.shape[1],) * 2, np.int64)
    np.add.at(confusion, (labels, predictions), 1)
    nll = -np.log(np.maximum(probabilities[np.arange(len(labels)), labels], 1e-30))
    return {"loss": float(nll.mean()), "accuracy": float((predictions == labels).mean()),
            "examples": int(len(labels)), "confusion": confusion.tolist()}


def format_confusion(confusion, classes) -> str:
    width = max(6, *(len(c) + 1 for c in classes))
    lines = ["true \\ predicted".ljust(width + 10) + "".join(c.rjust(width) for c in classes)]
    for name, row in zip(classes, confusion):
        lines.append(name.ljust(width + 10) + "".join(str(v).rjust(width) for v in row))
    return "\n".join(lines)


# --- the task ------------------------------------------------------------------------

# The encoder's first layer in each direction: the config field naming its language model, and whether that
# model must read text backwards.
ENCODER_SOURCES = {"layer_0": ("encoder_from", False), "backward_layer_0": ("backward_encoder_from", True)}


class ClassifierTask(Task):
    name = NAME
    position_name = "batch"
    unit = "examples"

    def __init__(self, config, workdir, mesh):
        self.config, self.workdir, self.mesh = config, workdir, mesh
        # What a fresh run starts from, read (and checked) before anything is written; needed only before the
        # first checkpoint: (words, [V, E]) of model.embeddings_from (or encoder_from), and the encoder's layers.
        m, fresh = config.model, not any((workdir / "checkpoints").glob("*"))
        self.vectors, self.layers = None, {}
        source, field = (m.encoder_from, "model.encoder_from") if m.encoder_from else (m.embeddings_from,
                                                                                      "model.embeddings_from")
        if source and fresh:
            self.vectors = pretrained.language_model_vectors(source, m.embed_size, field)
        self.tokenizer, self.splits, self._fitted = load_classification_data(
            config, workdir, self.vectors and self.vectors[0])
        self.classes = self.tokenizer.classes
        self.model = classifier_from_config(config, embedding_rows(config, self.tokenizer), len(self.classes))
        if m.encoder_from and fresh:
            shapes = jax.eval_shape(lambda: init_params(self.model, jax.random.PRNGKey(0)))
            for name, (key, backward) in ENCODER_SOURCES.items():
                if m[key]:
                    self.layers[name] = pretrained.language_model_layer(m[key], f"model.{key}", shapes[name], m.cell,
                                                                        backward)
        self.rows = sharding.local_rows(config.train.batch_size, mesh)
        self.batch_shape = (config.train.batch_size // mesh.devices.size, self.tokenizer.maxlen)
        self.steps_per_epoch = math.ceil(len(self.splits["train"].labels) / config.train.batch_size)
        self.evaluator = Evaluator(self.model, mesh, config, self.tokenizer.maxlen)
        self.loss = functools.partial(batch_loss, self.model, config.model.use_mask,
                                      adversarial=config.train.adversarial,
                                      adversarial_weight=config.train.adversarial_weight)
        self._no_carry = jax.jit(no_carry, out_shardings=sharding.replicated(mesh))

    def save_files(self):
        if self._fitted:
            write_atomically(self.workdir / "tokenizer.json",
                             json.dumps(self.tokenizer.to_dict(), ensure_ascii=False).encode())

    def initial_carry(self):
        return self._no_carry()

    def epoch(self, epoch):
        _, make = batches(self.splits["train"], self.config.data, self.tokenizer.maxlen, self.config.train.batch_size,
                          np.random.default_rng([self.config.seed, epoch]))
        return functools.partial(make, rows=self.rows)

    def start(self, state, log):
        """A fresh run logs its data's counts and, with model.embeddings_from, starts from those vectors."""
        stats = {"step": 0, "split": "data", "maxlen": self.tokenizer.maxlen}
        if self.vectors is not None:
            table, matched = pretrained.initial_embedding(np.asarray(state.params["embedding"]), self.tokenizer,
                                                          *self.vectors)
            params = dict(state.params, embedding=jax.device_put(table, sharding.replicated(self.mesh)))
            state = state.replace(params=params)
            stats["pretrained_rows"] = matched
            if jax.process_index() == 0:
                print(f"embedding: {matched:,} of {table.shape[0]:,} rows from "
                      f"{self.config.model.encoder_from or self.config.model.embeddings_from}")
        if self.layers:  # the encoder's first layer in each direction, from the language models
            params = dict(state.params, **{name: jax.device_put(layer, sharding.replicated(self.mesh))
                                           for name, layer in self.layers.items()})
            state = state.replace(params=params)
            stats["pretrained_layers"] = len(self.layers)
            if jax.process_index() == 0:
                print("encoder: " + ", ".join(f"{name} from {self.config.model[ENCODER_SOURCES[name][0]]}"
                                              for name in sorted(self.layers)))
        for name, split in self.splits.items():
            stats.update({f"{name}_examples": len(split.labels), f"{name}_truncated": split.truncated,
                          f"{name}_empty_lines": split.empty_lines})
        log.write(stats)
        return state

    def describe(self, parameters):
        s, maxlen = self.splits, self.tokenizer.maxlen
        lines = [f"rnnlm: {self.config.name}: {len(self.classes)} classes, vocab {self.tokenizer.vocab_size:,}, "
                 f"maxlen {maxlen}, train/valid/test {len(s['train'].labels):,}/{len(s['valid'].labels):,}/"
                 f"{len(s['test'].labels):,}, {self.steps_per_epoch} steps/epoch, {parameters:,} parameters; "
                 f"workdir {self.workdir}"]
        for name, split in s.items():
            if split.truncated or split.empty_lines:
                lines.append(f"{name}: {split.truncated} sentence(s) truncated to maxlen={maxlen} "
                             f"({self.config.data.truncating}), {split.empty_lines} empty line(s) skipped")
        return lines

    def train_metrics(self, totals):
        examples = max(totals["examples"], 1.0)
        metrics = {"loss": totals["nll_sum"] / examples, "accuracy": totals["correct"] / examples}
        if "adversarial_sum" in totals:  # the perturbed reading's cross-entropy, apart from the NLL
            metrics["adversarial_loss"] = totals["adversarial_sum"] / examples
        return metrics

    def evaluate(self, params, split):
        return self.evaluator(params, self.splits[split], len(self.classes))

    def selection_score(self, metrics):
        return selection_score(metrics)

    def epoch_record(self, metrics):
        return {"loss": metrics["loss"], "accuracy": metrics["accuracy"]}

    def describe_epoch(self, metrics):
        return f"valid loss {metrics['loss']:.4f}, accuracy {metrics['accuracy']:.2%}"

    def finish(self, state, context: Context):
        """The best checkpoint's valid and test numbers (the final state's when no epoch ended)."""
        best_step = context.best_step
        params = state.params if best_step is None else context.restore_params(best_step)
        results = {"step": context.step, "best_step": context.step if best_step is None else best_step}
        for name in ("valid", "test"):
            results[name] = self.evaluate(params, name)
            context.log.write({"step": context.step, "epoch": context.epoch, "split": f"{name}_best",
                               "best_step": results["best_step"], "loss": results[name]["loss"],
                               "accuracy": results[name]["accuracy"]})
        which = (f"final state (step {context.step}; no epoch ended)" if best_step is None
                 else f"best checkpoint (step {best_step}, by valid accuracy)")
        context.say(f"{which}: valid accuracy {results['valid']['accuracy']:.2%}, test accuracy "
                    f"{results['test']['accuracy']:.2%} ({results['test']['examples']:,} examples)")
        context.say("test confusion matrix:\n" + format_confusion(results["test"]["confusion"], self.classes))
        return results


TASK = ClassifierTask


# --- a saved classifier: eval and predict -------------------------------------------------

class ClassifierRun(Run):
    """A saved classifier: `evaluate(split)` and `predict(sentences)`."""

    task = NAME

    def evaluate(self, split: str) -> dict:
        return classification_metrics(*self.probabilities(split))

    def probabilities(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """([N, C] class probabilities, [N] true labels) of a split, each example read as this run reads text."""
        _, splits, _ = load_classification_data(self.config, self.workdir)
        evaluator = Evaluator(self.model, sharding.make_mesh(), self.config, self.tokenizer.maxlen)
        return evaluator.probabilities(self.params, splits[split], len(self.tokenizer.classes)), splits[split].labels

    def predict(self, sentences: list[str]) -> list[dict]:
        """[{"label", "probabilities": {class: p}, "truncated": bool}] per sentence."""
        d, maxlen = self.config.data, self.tokenizer.maxlen
        if not sentences or any(not s.split() for s in sentences):
            raise UserError("predict needs non-empty sentences")
        ids = [self.tokenizer.encode(s) for s in sentences]
        tokens = data_lib.pad_sequences(ids, maxlen=maxlen, padding=d.padding, truncating=d.truncating)
        mask = data_lib.padding_mask([len(i) for i in ids], maxlen, d.padding)
        step = jax.jit(functools.partial(eval_step, model=self.model, use_mask=self.config.model.use_mask))
        probabilities = np.asarray(step(self.params, {"tokens": tokens, "mask": mask}))
        classes = self.tokenizer.classes
        return [{"label": classes[int(p.argmax())], "probabilities": dict(zip(classes, p.tolist())),
                 "truncated": len(i) > maxlen} for p, i in zip(probabilities, ids)]


def evaluate_ensemble(runs: list[ClassifierRun], split: str) -> tuple[list[dict], dict]:
    """(each run's metrics, the ensemble's): the ensemble predicts the mean of the runs' class probabilities.

    The runs may read text differently (vocabulary, lower-casing, pretrained rows); they must share the
    classes and the split's labels, example by example.
    """
    members, mean, labels = [], None, None
    for run in runs:
        if list(run.tokenizer.classes) != list(runs[0].tokenizer.classes):
            raise UserError(f"ensemble: {run.workdir} has classes {list(run.tokenizer.classes)}, "
                            f"{runs[0].workdir} {list(runs[0].tokenizer.classes)}")
        probabilities, run_labels = run.probabilities(split)
        if labels is not None and not np.array_equal(labels, run_labels):
            raise UserError(f"ensemble: {run.workdir}'s {split} split is not {runs[0].workdir}'s (another corpus?)")
        labels = run_labels
        members.append(classification_metrics(probabilities, labels))
        mean = probabilities if mean is None else mean + probabilities
    return members, classification_metrics(mean / len(runs), labels)


def build_model(config, workdir):
    """(model, word index) of a run directory's config and tokenizer."""
    tokenizer = load_word_index(pathlib.Path(workdir) / "tokenizer.json")
    return classifier_from_config(config, embedding_rows(config, tokenizer), len(tokenizer.classes)), tokenizer


def load(workdir, config, which: str = "latest") -> ClassifierRun:
    model, tokenizer = build_model(config, workdir)
    if which == "best" and (pathlib.Path(workdir) / "checkpoints").exists():  # no scored step: the latest
        reader = Checkpoints(workdir, read_only=True)
        which = "best" if reader.best_step() is not None else "latest"
        reader.close()
    params, step = load_params(workdir, model, which)
    return ClassifierRun(workdir, config, tokenizer, model, params, step)
