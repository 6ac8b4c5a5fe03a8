"""Training and evaluation of the text classifier: `train_and_evaluate_classifier(config, workdir)`.

`rnnlm train` comes here when `config.task == "classify"`. The pieces mirror
the language model's (rnnlm/train.py): one pure `train_step(state, batch)`
jitted with the state donated and explicit shardings, metrics summed on device
and fetched on log steps only, Orbax checkpoints (rnnlm/checkpoint.py; a
classifier has no recurrent state between batches, so its `carry` item is a
one-element placeholder), resume from the latest good checkpoint, `metrics.jsonl`.

Batches are [B, T] token ids with a [B, T] mask; the mask reaches the
recurrence unless `model.use_mask` is off (the masking ablation), and the last
batch of a pass is filled with zero-weight rows, so every example counts once.
Each epoch's order comes from (config.seed, epoch), so a resumed run sees the
batches an uninterrupted one would.

Model selection: every epoch ends with a checkpoint scored on valid; the
checkpoint kept as "best" has the highest valid accuracy (ties: lower valid
loss). The reported valid and test numbers are those of that checkpoint
(early stopping on valid); the last epoch's valid numbers are in metrics.jsonl.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from rnnlm import optim, pretrained, sharding
from rnnlm.checkpoint import Checkpoints
from rnnlm.config import load_config, validate
from rnnlm.data import classification as data_lib
from rnnlm.decoder_loss import token_nll
from rnnlm.errors import UserError
from rnnlm.models import classifier_from_config, count_params
from rnnlm.preemption import PreemptionWatch
from rnnlm.train import TrainState, accumulate, report_stop
from rnnlm.workdir import MetricLog, existing_run, reconcile_config, write_atomically

CARRY = {"none": jnp.zeros((1,), jnp.int32)}  # the carry item of a checkpoint: nothing flows between batches


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
    d = data_config
    order = data_lib.batch_order(split.lengths, batch_size, rng, d.bucket_by_length)

    def make(index, rows=slice(None)):
        batch = data_lib.make_batch(split, order[index], batch_size, maxlen, d.padding, d.bucket_by_length)
        return {k: v[rows] for k, v in batch.items()}
    return order, make


# --- steps ---------------------------------------------------------------------------

def train_step(state: TrainState, batch, *, model, tx, use_mask: bool, skip_nonfinite: bool = False):
    """One optimizer step on a [B, T] batch: mean cross-entropy over the weighted examples."""
    dropout_rng = jax.random.fold_in(state.rng, state.step)
    mask = batch["mask"] if use_mask else None
    weights = batch["weights"]

    def loss_fn(params):
        logits = model.apply({"params": params}, batch["tokens"], mask, train=True, rngs={"dropout": dropout_rng})
        nll_sum = (token_nll(logits, batch["labels"]) * weights).sum()
        return nll_sum / jnp.maximum(weights.sum(), 1.0), (logits, nll_sum)

    (_, (logits, nll_sum)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    params, opt_state, grad_norm, finite = optim.apply_gradients(tx, grads, state.opt_state, state.params,
                                                                 nll_sum, skip_nonfinite)
    state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    correct = ((jnp.argmax(logits, axis=-1) == batch["labels"]) * weights).sum()
    metrics = {"nll_sum": jnp.where(finite, nll_sum, 0.0), "correct": jnp.where(finite, correct, 0.0),
               "examples": jnp.where(finite, weights.sum(), 0.0), "grad_norm": jnp.where(finite, grad_norm, 0.0),
               "steps": jnp.int32(1), "nonfinite": (~finite).astype(jnp.int32)}
    return state, metrics


def jit_train_step(model, tx, use_mask: bool, mesh, skip_nonfinite: bool = False):
    replicated, split = sharding.replicated(mesh), sharding.batch_sharded(mesh)
    return jax.jit(functools.partial(train_step, model=model, tx=tx, use_mask=use_mask, skip_nonfinite=skip_nonfinite),
                   in_shardings=(replicated, split), out_shardings=(replicated, replicated), donate_argnums=(0,))


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
        order, make = batches(split, self.config.data, self.maxlen, self.batch_size)
        probabilities = np.zeros((len(split.labels), num_classes), np.float64)
        for index, indices in enumerate(order):
            batch = sharding.shard_batch(make(index, self.rows), self.mesh)
            probabilities[indices] = np.asarray(jax.device_get(self.step(params, batch)))[:len(indices)]
        return classification_metrics(probabilities, split.labels)


def classification_metrics(probabilities: np.ndarray, labels: np.ndarray) -> dict:
    predictions = probabilities.argmax(axis=-1)
    confusion = np.zeros((probabilities.shape[1],) * 2, np.int64)
    np.add.at(confusion, (labels, predictions), 1)
    nll = -np.log(np.maximum(probabilities[np.arange(len(labels)), labels], 1e-30))
    return {"loss": float(nll.mean()), "accuracy": float((predictions == labels).mean()),
            "examples": int(len(labels)), "confusion": confusion.tolist()}


def create_train_state(model, tx, seed: int, mesh) -> TrainState:
    init_key, dropout_key = jax.random.split(jax.random.PRNGKey(seed))

    def init():
        params = model.init({"params": init_key}, jnp.zeros((1, 1), jnp.int32), jnp.ones((1, 1), bool))["params"]
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), rng=dropout_key)
    return jax.jit(init, out_shardings=sharding.replicated(mesh))()


def format_confusion(confusion, classes) -> str:
    width = max(6, *(len(c) + 1 for c in classes))
    lines = ["true \\ predicted".ljust(width + 10) + "".join(c.rjust(width) for c in classes)]
    for name, row in zip(classes, confusion):
        lines.append(name.ljust(width + 10) + "".join(str(v).rjust(width) for v in row))
    return "\n".join(lines)


# --- the loop ------------------------------------------------------------------------

def train_and_evaluate_classifier(config, workdir) -> dict:
    """Train (or resume) the classifier in `workdir`; returns {"step", "best_step", "valid", "test"}."""
    workdir = pathlib.Path(workdir)
    c = config.train
    validate(config)
    writer = jax.process_index() == 0
    say = print if writer else (lambda *args, **kwargs: None)
    mesh = sharding.make_mesh(c.num_devices)
    sharding.check_batch_size(c.batch_size, mesh)
    if (workdir / "config.json").exists():
        reconcile_config(config, workdir, write=False)
    vectors = None  # (words, [V, E]) of model.embeddings_from: needed only before the first checkpoint
    if config.model.embeddings_from and not any((workdir / "checkpoints").glob("*")):
        vectors = pretrained.language_model_vectors(config.model.embeddings_from, config.model.embed_size)
    tokenizer, splits, fitted = load_classification_data(config, workdir, vectors and vectors[0])
    workdir.mkdir(parents=True, exist_ok=True)  # everything is checked: only now is anything written
    reconcile_config(config, workdir, write=writer)
    if writer and fitted:
        write_atomically(workdir / "tokenizer.json", json.dumps(tokenizer.to_dict(), ensure_ascii=False).encode())

    classes = tokenizer.classes
    model = classifier_from_config(config.model, embedding_rows(config, tokenizer), len(classes))
    train = splits["train"]
    rows = sharding.local_rows(c.batch_size, mesh)
    steps_per_epoch = math.ceil(len(train.labels) / c.batch_size)
    tx = optim.make_optimizer(c, c.max_steps or c.epochs * steps_per_epoch)
    state = create_train_state(model, tx, config.seed, mesh)
    controller = optim.LearningRateController.from_config(c)
    log = MetricLog(workdir / "metrics.jsonl", enabled=writer)
    checkpoints = Checkpoints(workdir, keep=c.keep_checkpoints)

    epoch, position, seconds, pending = 0, 0, 0.0, None
    restored = checkpoints.restore_latest_good(state, CARRY)
    if restored is not None:
        step, state, _, meta = restored
        epoch, position, seconds = meta["epoch"], meta["batch"], meta["train_seconds"]
        controller = optim.LearningRateController.from_config(c, meta["lr"])
        pending = {k: jnp.asarray(v) for k, v in meta["pending"].items()} if meta.get("pending") else None
        log.truncate_after(step)
        say(f"resumed from step {step} (epoch {epoch + 1}, batch {position})")
    else:
        stats = {"step": 0, "split": "data", "maxlen": tokenizer.maxlen}
        if vectors is not None:
            table, matched = pretrained.initial_embedding(np.asarray(state.params["embedding"]), tokenizer, *vectors)
            params = dict(state.params, embedding=jax.device_put(table, sharding.replicated(mesh)))
            state = state.replace(params=params)
            stats["pretrained_rows"] = matched
            say(f"embedding: {matched:,} of {table.shape[0]:,} rows from {config.model.embeddings_from}")
        for name, split in splits.items():
            stats.update({f"{name}_examples": len(split.labels), f"{name}_truncated": split.truncated,
                          f"{name}_empty_lines": split.empty_lines})
        log.write(stats)
    say(f"rnnlm: {config.name}: {len(classes)} classes, vocab {tokenizer.vocab_size:,}, maxlen {tokenizer.maxlen}, "
        f"train/valid/test {len(train.labels):,}/{len(splits['valid'].labels):,}/{len(splits['test'].labels):,}, "
        f"{steps_per_epoch} steps/epoch, {count_params(state.params):,} parameters; workdir {workdir}")
    for name, split in splits.items():
        if split.truncated or split.empty_lines:
            say(f"{name}: {split.truncated} sentence(s) truncated to maxlen={tokenizer.maxlen} "
                f"({config.data.truncating}), {split.empty_lines} empty line(s) skipped")

    p_train_step = jit_train_step(model, tx, config.model.use_mask, mesh, c.skip_nonfinite)
    evaluator = Evaluator(model, mesh, config, tokenizer.maxlen)
    step = int(state.step)

    def save(totals, valid=None):
        meta = {"epoch": epoch, "batch": position, "train_seconds": seconds, "lr": controller.to_dict(),
                "pending": totals}
        checkpoints.save(step, state, CARRY, meta, valid_loss=None if valid is None else selection_score(valid))

    def stop_reason(elapsed):
        if c.max_steps and step >= c.max_steps:
            return f"reached train.max_steps={c.max_steps}"
        if c.time_budget_minutes and elapsed >= 60 * c.time_budget_minutes:
            return f"reached train.time_budget_minutes={c.time_budget_minutes}"
        return None

    stop = stop_reason(seconds)
    with PreemptionWatch() as preemption:
        while epoch < c.epochs and stop is None:
            rate = controller.start_epoch(epoch)
            if rate is not None:
                state = state.replace(opt_state=optim.set_learning_rate(state.opt_state, rate))
            order, make = batches(train, config.data, tokenizer.maxlen, c.batch_size,
                                  np.random.default_rng([config.seed, epoch]))
            bar = tqdm.tqdm(total=len(order), initial=position, desc=f"epoch {epoch + 1}/{c.epochs}",
                            disable=not writer, leave=False, dynamic_ncols=True)
            tick = started = time.perf_counter()
            while position < len(order):
                state, metrics = p_train_step(state, sharding.shard_batch(make(position, rows), mesh))
                pending = accumulate(pending, metrics)
                step, position = step + 1, position + 1
                bar.update(1)
                logged = step % c.log_every == 0 or position == len(order)
                stop = "preempted (SIGTERM)" if preemption.requested(step) else stop_reason(
                    seconds + time.perf_counter() - tick)
                due = position < len(order) and (stop or (c.checkpoint_every and step % c.checkpoint_every == 0))
                if not (logged or due):
                    continue
                totals = {k: v.item() for k, v in jax.device_get(pending).items()}
                if totals["nonfinite"] and not c.skip_nonfinite:
                    checkpoints.wait()
                    raise UserError(f"non-finite loss or gradient before step {step}; the last good checkpoint is "
                                    f"step {checkpoints.latest_step()} (set train.skip_nonfinite=True to skip)")
                now = time.perf_counter()
                seconds, tick = seconds + now - tick, now
                if logged:
                    examples = max(totals["examples"], 1.0)
                    log.write({"step": step, "epoch": epoch + position / len(order), "split": "train",
                               "loss": totals["nll_sum"] / examples, "accuracy": totals["correct"] / examples,
                               "grad_norm": totals["grad_norm"] / max(totals["steps"] - totals["nonfinite"], 1),
                               "learning_rate": optim.current_learning_rate(state.opt_state),
                               "examples_per_sec": totals["examples"] / max(now - started, 1e-9)})
                    pending, started = None, now
                if due:
                    save(None if logged else totals)
                if stop:
                    break
            bar.close()
            if position == len(order):
                epoch, position = epoch + 1, 0
                valid = evaluator(state.params, splits["valid"], len(classes))
                controller.end_epoch(valid["loss"])
                log.write({"step": step, "epoch": epoch, "split": "valid", "loss": valid["loss"],
                           "accuracy": valid["accuracy"]})
                say(f"epoch {epoch}: valid loss {valid['loss']:.4f}, accuracy {valid['accuracy']:.2%}")
                save(None, valid)
    checkpoints.wait()
    if report_stop(stop, step, checkpoints, log, say):
        return {"step": step, "preempted": True}

    best_step = checkpoints.best_step()
    checkpoints.close()
    if best_step is not None:  # a fresh reader: the training manager has its handlers bound to full states
        reader = Checkpoints(workdir, read_only=True)
        params = reader.restore_params(best_step, state.params)
        reader.close()
    else:
        params = state.params
    results = {"step": step, "best_step": best_step if best_step is not None else step}
    for name in ("valid", "test"):
        results[name] = evaluator(params, splits[name], len(classes))
        log.write({"step": step, "epoch": epoch, "split": f"{name}_best", "best_step": results["best_step"],
                   "loss": results[name]["loss"], "accuracy": results[name]["accuracy"]})
    which = f"final state (step {step}; no epoch ended)" if best_step is None else \
        f"best checkpoint (step {best_step}, by valid accuracy)"
    say(f"{which}: valid accuracy "
        f"{results['valid']['accuracy']:.2%}, test accuracy {results['test']['accuracy']:.2%} "
        f"({results['test']['examples']:,} examples)")
    say("test confusion matrix:\n" + format_confusion(results["test"]["confusion"], classes))
    log.close()
    return results


# --- a saved classifier: eval and predict -------------------------------------------------

@dataclasses.dataclass
class ClassifierRun:
    workdir: pathlib.Path
    config: object
    tokenizer: data_lib.WordIndex
    model: object
    params: object
    step: int
    task = "classify"

    def evaluate(self, split: str) -> dict:
        _, splits, _ = load_classification_data(self.config, self.workdir)
        evaluator = Evaluator(self.model, sharding.make_mesh(), self.config, self.tokenizer.maxlen)
        return evaluator(self.params, splits[split], len(self.tokenizer.classes))

    def predict(self, sentences: list[str]) -> list[dict]:
        """[{"label", "probabilities": {class: p}, "truncated": bool}] per sentence."""
        d, maxlen = self.config.data, self.tokenizer.maxlen
        if not sentences or any(not s.split() for s in sentences):
            raise UserError("predict needs non-empty sentences")
        ids = [self.tokenizer.encode(s) for s in sentences]
        tokens = data_lib.pad_sequences(ids, maxlen=maxlen, padding=d.padding, truncating=d.truncating)
        mask = data_lib.padding_mask([len(i) for i in ids], maxlen, d.padding)
        probabilities = np.asarray(jax.jit(functools.partial(eval_step, model=self.model, use_mask=self.config.model.use_mask))(
            self.params, {"tokens": tokens, "mask": mask}))
        classes = self.tokenizer.classes
        return [{"label": classes[int(p.argmax())], "probabilities": dict(zip(classes, p.tolist())),
                 "truncated": len(i) > maxlen} for p, i in zip(probabilities, ids)]


def load_classifier_run(workdir, which: str = "latest") -> ClassifierRun:
    workdir = existing_run(workdir)
    config = load_config(workdir / "config.json")
    tokenizer = load_word_index(workdir / "tokenizer.json")
    model = classifier_from_config(config.model, embedding_rows(config, tokenizer), len(tokenizer.classes))
    checkpoints = Checkpoints(workdir, read_only=True)
    if which == "best" and checkpoints.best_step() is None:  # stopped before any epoch ended: no scored step
        which = "latest"
    step = checkpoints.resolve(which)
    shapes = jax.eval_shape(lambda: model.init({"params": jax.random.PRNGKey(0)}, jnp.zeros((1, 1), jnp.int32),
                                               jnp.ones((1, 1), bool))["params"])
    params = checkpoints.restore_params(step, shapes)
    checkpoints.close()
    return ClassifierRun(workdir, config, tokenizer, model, params, step)


def classifier_params(config, run_dir) -> int:
    """Parameters of a finished classifier run (for the sweep table)."""
    tokenizer = load_word_index(pathlib.Path(run_dir) / "tokenizer.json")
    model = classifier_from_config(config.model, embedding_rows(config, tokenizer), len(tokenizer.classes))
    shapes = jax.eval_shape(lambda: model.init({"params": jax.random.PRNGKey(0)}, jnp.zeros((1, 1), jnp.int32),
                                               jnp.ones((1, 1), bool))["params"])
    return count_params(shapes)
