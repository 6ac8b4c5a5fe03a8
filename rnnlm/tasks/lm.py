"""The language-model task: token streams cut into windows, a carried state, perplexity.

Data: the corpus's splits tokenized (fitted on train, cached in the workdir);
train ids laid out as `train.batch_size` contiguous streams cut into windows of
`train.bptt` tokens (`rnnlm.data.batching`), the recurrent carry flowing from
window to window (truncated BPTT) and reset at every epoch's start. Loss: the
window's summed cross-entropy over the token count (`train.loss=token_mean`) or
over the streams (`time_sum`, Zaremba et al.'s scale). Evaluation scores every
token of a split with the state carried across it; "best" is the lowest
validation loss; the report is the final parameters' validation and test
metrics, per token and per word and character (`rnnlm.metrics`), and a sample.
"""

from __future__ import annotations

import functools
import logging

import jax
import jax.numpy as jnp
import numpy as np

from rnnlm import sharding
from rnnlm.data.batching import make_streams, variable_lengths
from rnnlm.data.tokenizers import load_tokenizer, tokenizer_json, tokenizer_sidecars
from rnnlm.errors import UserError
from rnnlm.fast.decoder_loss import planned_window_nll as window_nll
from rnnlm.metrics import LN2, describe, split_units, summarize, with_per_unit_metrics, write_units
from rnnlm.models import language_model_from_config
from rnnlm.sampling import check_settings, sample_stream, sample_text
from rnnlm.state import load_params
from rnnlm.tasks.base import Context, Run, Task
from rnnlm.workdir import load_data, prepare_data, save_data

NAME = "lm"
VARIABLE_EXTRA = 20  # variable-length BPTT: a window is at most train.bptt + this long
LENGTHS_STREAM = 0xB977  # the window lengths' own random stream, apart from the parameters' and dropout's


def padded_length(length: int, bucket: int) -> int:
    """A drawn window's compiled length: `length` rounded up to a multiple of `bucket`."""
    return -(-length // bucket) * bucket


def activation_penalties(raw, dropped, weights, ar: float, tar: float) -> dict:
    """AWD-LSTM's AR and TAR of a window (Merity et al. 2018, section 4.6) from the top layer's outputs,
    time-major [T, B, H], before (`raw`) and after (`dropped`) their dropout; weights [B, T] leave out
    the grid's padding. ar * mean(dropped^2) and tar * mean((raw_t - raw_{t-1})^2), each over its
    real positions and the H units: {"ar": ..., "tar": ...} for those that are on."""
    w = weights.T[:, :, None].astype(jnp.float32)  # [T, B, 1]
    width = raw.shape[-1]
    out = {}
    if ar:
        out["ar"] = ar * jnp.sum(w * jnp.square(dropped)) / (jnp.maximum(w.sum(), 1.0) * width)
    if tar:
        pairs = w[1:] * w[:-1]
        out["tar"] = tar * jnp.sum(pairs * jnp.square(raw[1:] - raw[:-1])) / (jnp.maximum(pairs.sum(), 1.0) * width)
    return out


def window_loss(model, loss_scale: str, params, carry, batch, rng, *, ar: float = 0.0, tar: float = 0.0):
    """(loss, (carry for the next window, {"nll_sum", "tokens"} and "ar"/"tar" when on)) of one [B, T]
    training window; AR and TAR (`activation_penalties`) join the training loss only."""
    out = model.apply({"params": params}, batch["tokens"], carry, batch.get("mask"), train=True,
                      rngs={"dropout": rng}, method=model.features, with_top=bool(ar or tar))
    features, new_carry = out[:2]
    weights = batch["weights"]
    nll_sum = window_nll(model, params, features, batch["targets"], weights, train=True)
    count = weights.sum()
    # time_sum: sum over time, mean over streams, the scale Zaremba et al.'s lr = 1 expects.
    denominator = weights.shape[0] if loss_scale == "time_sum" else jnp.maximum(count, 1.0)
    sums = {"nll_sum": nll_sum, "tokens": count}
    loss = nll_sum / denominator
    if ar or tar:
        penalties = activation_penalties(*out[2], weights, ar, tar)
        loss = loss + sum(penalties.values())
        sums.update(penalties)
    return loss, (new_carry, sums)


def eval_step(params, carry, batch, *, model):
    """(carry, summed NLL, token count) of one [B, T] window."""
    features, carry = model.apply({"params": params}, batch["tokens"], carry, method=model.features)
    weights = batch["weights"]
    return carry, window_nll(model, params, features, batch["targets"], weights, train=False), weights.sum()


def target_log_probs(params, carry, batch, *, model):
    """(carry, log p(target) [B, T]) of one window: what an ensemble mixes, token by token."""
    features, carry = model.apply({"params": params}, batch["tokens"], carry, method=model.features)
    logits = model.apply({"params": params}, features, method=model.decode)
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return carry, jnp.take_along_axis(logp, batch["targets"][..., None], axis=-1)[..., 0]


class Evaluator:
    """Stateful scoring of a whole split: the carry flows from window to window."""

    def __init__(self, model, mesh, batch_size: int, bptt: int):
        sharding.check_batch_size(batch_size, mesh, "eval.batch_size")
        self.model, self.mesh, self.batch_size, self.bptt = model, mesh, batch_size, bptt
        self.step = jax.jit(functools.partial(eval_step, model=model), donate_argnums=(1,))

    def __call__(self, params, ids: np.ndarray, char_level: bool) -> dict:
        streams = make_streams(ids, self.batch_size, self.bptt).rows(sharding.local_rows(self.batch_size, self.mesh))
        carry = sharding.zeros_carry(self.model.initial_carry, self.batch_size, self.mesh)
        nll_sum, tokens = jnp.zeros(()), jnp.zeros(())
        for index in range(streams.num_windows):
            carry, window, window_tokens = self.step(params, carry, sharding.shard_batch(streams.window(index), self.mesh))
            nll_sum, tokens = nll_sum + window, tokens + window_tokens
        return summarize(float(nll_sum), float(tokens), char_level)

    def log_probs(self, params, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """([B, L] log p of every target, [B, L] weights: 0 on padding) in the layout __call__ reads;
        one process (the host gathers every row)."""
        streams = make_streams(ids, self.batch_size, self.bptt)
        step = jax.jit(functools.partial(target_log_probs, model=self.model), donate_argnums=(1,))
        carry = sharding.zeros_carry(self.model.initial_carry, self.batch_size, self.mesh)
        out = []
        for index in range(streams.num_windows):
            carry, logp = step(params, carry, sharding.shard_batch(streams.window(index), self.mesh))
            out.append(np.asarray(jax.device_get(logp)))
        return np.concatenate(out, axis=1), streams.weights


def score_split(evaluator, params, ids, char_level: bool, units: dict | None) -> dict:
    """A split's per-token metrics, plus per-word perplexity and bits per character when its units are known,
    and the share of its tokens that are `<unk>` for text the tokenizer lacks (`rnnlm.metrics.describe`)."""
    return with_units(evaluator(params, ids, char_level), ids, units)


def with_units(metrics: dict, ids, units: dict | None) -> dict:
    """score_split's additions to summarize()'s per-token metrics."""
    if units is not None:
        metrics = with_per_unit_metrics(metrics, len(ids) - 1, units)
        if "replaced" in units:
            metrics["unk_share"] = units["replaced"] / max(len(ids), 1)
    return metrics


class LanguageModelTask(Task):
    name = NAME
    position_name = "window"
    unit = "tokens"

    def __init__(self, config, workdir, mesh):
        self.config, self.workdir, self.mesh = config, workdir, mesh
        self.tokenizer, self.ids, self._cached = load_data(config, workdir)
        if config.sample.length:  # bad sampling settings fail now, not after training
            check_settings(config.sample.temperature, config.sample.top_k, config.sample.top_p,
                           self.tokenizer.vocab_size, prefix="sample.")
            if config.sample.prompt:
                self.tokenizer.encode(config.sample.prompt, strict=True)
        self.units = split_units(config, workdir, self.tokenizer)  # words, characters, <unk> per split
        self.char_level = self.tokenizer.kind == "char"
        self.model = language_model_from_config(config, self.tokenizer.vocab_size)
        train = config.train
        streams = make_streams(self.ids["train"], train.batch_size, train.bptt)
        self.columns = streams.columns  # of all streams, so every process draws the same windows
        self.streams = streams.rows(sharding.local_rows(train.batch_size, mesh))
        self._lengths = {}
        self.steps_per_epoch = self.steps_in_epoch(0) if train.variable_bptt else self.streams.num_windows
        longest = padded_length(train.bptt + VARIABLE_EXTRA, train.bptt_bucket) if train.variable_bptt else train.bptt
        self.batch_shape = (train.batch_size // mesh.devices.size, longest)
        self.evaluator = Evaluator(self.model, mesh, config.eval.batch_size, config.eval.bptt or train.bptt)
        self.loss = functools.partial(window_loss, self.model, train.loss, ar=train.ar, tar=train.tar)

    def save_files(self):
        if not self._cached:
            save_data(self.workdir, self.tokenizer, self.ids)
        write_units(self.workdir, self.units)

    def initial_carry(self):
        return sharding.zeros_carry(self.model.initial_carry, self.config.train.batch_size, self.mesh)

    def window_lengths(self, epoch) -> np.ndarray:
        """An epoch's drawn window lengths (train.variable_bptt): a function of the seed and the epoch
        alone, so a resumed run draws the same ones and its position indexes them."""
        if epoch not in self._lengths:
            self._lengths = {epoch: variable_lengths(np.random.default_rng([self.config.seed, epoch, LENGTHS_STREAM]),
                                                     self.config.train.bptt, self.columns, VARIABLE_EXTRA)}
        return self._lengths[epoch]

    def steps_in_epoch(self, epoch):
        return len(self.window_lengths(epoch)) if self.config.train.variable_bptt else self.steps_per_epoch

    def epoch(self, epoch):
        train = self.config.train
        if not train.variable_bptt:
            return self.streams.window  # the same streams every epoch; the carry is reset at its start
        lengths = self.window_lengths(epoch)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])

        def batch_at(index):
            length = int(lengths[index])
            batch = self.streams.span(int(starts[index]), length, padded_length(length, train.bptt_bucket))
            # AWD-LSTM scales the learning rate by length / bptt: the step's update is scaled (`rnnlm.optim`).
            batch["lr_scale"] = np.full(len(batch["tokens"]), length / train.bptt, np.float32)
            return batch
        return batch_at

    def describe(self, parameters):
        return [f"rnnlm: {self.config.name}: {self.tokenizer.kind} tokens, vocab {self.tokenizer.vocab_size:,}, "
                f"train {len(self.ids['train']):,} tokens, {self.steps_per_epoch} steps/epoch, "
                f"{parameters:,} parameters, {self.mesh.devices.size} device(s); workdir {self.workdir}"]

    def train_metrics(self, totals):
        metrics = summarize(totals["nll_sum"], totals["tokens"], self.char_level)
        for name in ("ar", "tar"):  # per step, apart from the NLL
            if name in totals:
                metrics[name] = totals[name] / max(totals["steps"] - totals["nonfinite"], 1)
        return metrics

    def evaluate(self, params, split):
        return score_split(self.evaluator, params, self.ids[split], self.char_level, self.units[split])

    def selection_score(self, metrics):
        return metrics["loss"]

    def epoch_record(self, metrics):
        return metrics

    def describe_epoch(self, metrics):
        unit = "bits/char" if self.char_level else "bits/token"
        return f"valid loss {metrics['loss']:.4f}, perplexity {metrics['perplexity']:.2f}, {unit} {metrics['loss'] / LN2:.4f}"

    def finish(self, state, context: Context):
        """The final parameters' valid and test scores, then, where an earlier checkpoint validated
        better, that checkpoint's (logged as valid_best and test_best, and returned as valid and test)."""
        step, say, log = context.step, context.say, context.log
        valid = context.valid
        if valid is None:  # the last validation is older than the final parameters
            valid = self.evaluate(state.params, "valid")
            log.write({"step": step, "epoch": context.epoch + context.position / self.steps_per_epoch,
                       "split": "valid", **valid})
        results = {"step": step, "valid": valid, "test": self.evaluate(state.params, "test")}
        log.write({"step": step, "epoch": context.epoch, "split": "test", **results["test"]})
        for split in ("valid", "test"):
            say(f"{split}: {describe(results[split], self.tokenizer.kind)}")
        best = context.best_step
        results["best_step"] = step if best is None else best
        if best is not None and best != step:  # a run that overfits: report its best checkpoint too, as AWD-LSTM
            params = context.restore_params(best)
            results["final"] = {"valid": results["valid"], "test": results["test"]}
            for split in ("valid", "test"):
                results[split] = self.evaluate(params, split)
                log.write({"step": step, "epoch": context.epoch, "split": f"{split}_best", "best_step": best,
                           **results[split]})
                say(f"{split} at the best checkpoint (step {best}): {describe(results[split], self.tokenizer.kind)}")
        sample = self.config.sample
        if sample.length > 0 and not self.config.data.reverse:  # a backward model's sample would read backwards
            results["sample"] = sample_text(self.model, state.params, self.tokenizer, sample.prompt,
                                            length=sample.length, temperature=sample.temperature, top_k=sample.top_k,
                                            top_p=sample.top_p, seed=self.config.seed)[0]
            say("sample:\n" + results["sample"])
        return results


TASK = LanguageModelTask


class LanguageModelRun(Run):
    """A saved language model: `evaluate(split)` and `generate(...)`."""

    task = NAME

    def _reads_forwards(self, what: str) -> None:
        if self.config.data.reverse:
            raise UserError(f"{self.workdir} reads text backwards (data.reverse): {what} reads it forwards; "
                            "use it through eval, or as a classifier's model.backward_encoder_from")

    def evaluate(self, split: str) -> dict:
        """Per-token metrics of a split, and per word and character when the split's text can be read."""
        _, ids = prepare_data(self.config, self.workdir)
        evaluator = Evaluator(self.model, sharding.make_mesh(), self.config.eval.batch_size,
                              self.config.eval.bptt or self.config.train.bptt)
        return score_split(evaluator, self.params, ids[split], self.tokenizer.kind == "char", self._units(split))

    def _units(self, split):
        try:  # the split's text once (then data/units.json); without the corpus, per token only
            units = split_units(self.config, self.workdir, self.tokenizer)
            write_units(self.workdir, units)
            return units[split]
        except UserError as e:
            logging.warning("no per-word metrics: %s", e)
            return None

    def evaluate_cache(self, split: str = "test", tune: bool = False, say=print, **settings) -> dict:
        """`evaluate` with the continuous cache (`rnnlm.cache`): window, theta, lam from the config's eval
        section, a choice saved beside the run (cache.json), then `settings`; with `tune`, (theta, lam) are
        first chosen on a prefix of valid (eval.cache_grid_*) and saved beside the run. Also "model_loss",
        the same pass without the cache."""
        from rnnlm import cache
        chosen = cache.Settings.from_config(self.config.eval, self.workdir, **settings)
        _, ids = prepare_data(self.config, self.workdir)
        e, mesh, char_level = self.config.eval, sharding.make_mesh(), self.tokenizer.kind == "char"
        bptt = e.bptt or self.config.train.bptt
        if tune:
            chosen, rows = cache.tune(self.model, self.params, ids["valid"], chosen, mesh, e.batch_size, bptt, char_level,
                                      e.cache_grid_theta, e.cache_grid_lambda, e.dynamic_tune_tokens, say)
            path = cache.save_choice(self.workdir, chosen, rows, e.dynamic_tune_tokens)
            say(f"cache: chose theta {chosen.theta:g}, lambda {chosen.lam:g}; wrote {path}")
        metrics = cache.cache_evaluate(self.model, self.params, ids[split], chosen, mesh, e.batch_size, bptt, char_level)
        units = self._units(split)
        return with_per_unit_metrics(metrics, len(ids[split]) - 1, units) if units is not None else metrics

    def evaluate_dynamic(self, split: str = "test", tune: bool = False, say=print, cache=None, **settings) -> dict:
        """`evaluate` with dynamic evaluation (`rnnlm.dynamic_eval`): settings from the config's eval
        section, a choice saved beside the run, then `settings` (rule, lr, decay, eps, bptt, batch_size,
        stat_tokens, stat_batch_size; None = unset). With `tune`, (lr, decay) are first chosen on a prefix
        of valid from the eval.dynamic_grid_* grid and saved beside the run. `cache`: a `rnnlm.cache.Settings`,
        dynamic evaluation and the cache together. The run's checkpoints are only read."""
        from rnnlm import dynamic_eval
        chosen = dynamic_eval.Settings.from_config(self.config.eval, self.workdir, **settings)
        _, ids = prepare_data(self.config, self.workdir)
        mesh, char_level = sharding.make_mesh(), self.tokenizer.kind == "char"
        sharding.check_batch_size(chosen.batch_size, mesh, "the dynamic evaluation batch size")
        ms = None
        if chosen.rule == "rms":
            say(f"dynamic evaluation: gradient statistics on {chosen.stat_tokens or len(ids['train']):,} training tokens")
            ms = dynamic_eval.gradient_statistics(self.model, self.params, ids["train"], chosen, mesh)
        if tune:
            scale, e = chosen.bptt / 5.0, self.config.eval
            tokens = e.dynamic_tune_tokens
            chosen, rows = dynamic_eval.tune(self.model, self.params, ids["valid"], chosen, mesh, char_level, ms,
                                             [x * scale for x in e.dynamic_grid_lr],
                                             [x * scale for x in e.dynamic_grid_decay], tokens, say)
            say(f"dynamic evaluation: chose lr {chosen.lr:g}, decay {chosen.decay:g}; wrote "
                f"{dynamic_eval.save_choice(self.workdir, chosen, rows, tokens)}")
        metrics = dynamic_eval.dynamic_evaluate(self.model, self.params, ids[split], chosen, mesh, char_level, ms,
                                                cache=cache)
        units = self._units(split)
        if units is not None:
            metrics = with_per_unit_metrics(metrics, len(ids[split]) - 1, units)
        return metrics

    def generate(self, prompt: str = "", length: int = 300, temperature: float = 0.8, top_k: int = 0,
                 top_p: float = 1.0, seed: int = 0, num_samples: int = 1) -> list[str]:
        """The prompt followed by `length` sampled tokens, `num_samples` times (`rnnlm.sampling`)."""
        self._reads_forwards("generate")
        return sample_text(self.model, self.params, self.tokenizer, prompt, length=length, temperature=temperature,
                           top_k=top_k, top_p=top_p, seed=seed, num_samples=num_samples)

    def score(self, lines: list[str], carry: bool = False, per_token: bool = False) -> list[dict]:
        """Each line's log-probability (natural log), token count, perplexity and, with `per_token`, every
        token's surprisal in bits; lines alone from the start of a line, or `carry`: as one stream, with
        eval's totals (`rnnlm.scoring`)."""
        self._reads_forwards("score")
        from rnnlm.scoring import score_lines
        return score_lines(self.model, self.params, self.tokenizer, list(lines), carry=carry, per_token=per_token)

    def generate_beam(self, prompt: str = "", length: int = 50, beam: int = 5, length_penalty: float = 0.0):
        """(text, log-probability): the prompt and its most likely continuation by beam search, ending at
        a line end where the tokenizer has one (`rnnlm.sampling.beam_search`)."""
        self._reads_forwards("generate")
        from rnnlm.sampling import beam_text
        return beam_text(self.model, self.params, self.tokenizer, prompt, length=length, beam=beam,
                         length_penalty=length_penalty)

    def generate_stream(self, prompt: str = "", length: int = 300, temperature: float = 0.8, top_k: int = 0,
                        top_p: float = 1.0, seed: int = 0, num_samples: int = 1):
        """The same texts as `generate`, in pieces as they are sampled (`rnnlm.sampling.sample_stream`)."""
        self._reads_forwards("generate")
        return sample_stream(self.model, self.params, self.tokenizer, prompt, length=length, temperature=temperature,
                             top_k=top_k, top_p=top_p, seed=seed, num_samples=num_samples)


def evaluate_ensemble(runs: list[LanguageModelRun], split: str) -> tuple[list[dict], dict]:
    """(each run's metrics, the ensemble's): the ensemble's probability of every token is the mean of the runs'.

    The runs must share the tokenizer and the split's tokens; all are read in the first run's evaluation
    layout (eval.batch_size streams, windows of eval.bptt), so every member's figure is comparable.
    """
    first = runs[0]
    for run in runs[1:]:
        if (tokenizer_json(run.tokenizer), tokenizer_sidecars(run.tokenizer)) != (
                tokenizer_json(first.tokenizer), tokenizer_sidecars(first.tokenizer)):
            raise UserError(f"ensemble: {run.workdir} and {first.workdir} have different tokenizers "
                            "(their probabilities are over different symbols)")
    ids = prepare_data(first.config, first.workdir)[1][split]
    char_level, units = first.tokenizer.kind == "char", first._units(split)
    mesh = sharding.make_mesh()
    stacked = []
    for run in runs:
        if not np.array_equal(prepare_data(run.config, run.workdir)[1][split], ids):
            raise UserError(f"ensemble: {run.workdir}'s {split} split is not {first.workdir}'s (another corpus?)")
        evaluator = Evaluator(run.model, mesh, first.config.eval.batch_size,
                              first.config.eval.bptt or first.config.train.bptt)
        logp, weights = evaluator.log_probs(run.params, ids)
        stacked.append(logp)

    def metrics(logp):
        return with_units(summarize(-float((logp * weights).sum()), float(weights.sum()), char_level), ids, units)
    mixed = np.logaddexp.reduce(np.stack(stacked), axis=0) - np.log(len(runs))
    return [metrics(logp) for logp in stacked], metrics(mixed)


def build_model(config, workdir):
    """(model, tokenizer) of a run directory's config and tokenizer."""
    tokenizer = load_tokenizer(workdir / "tokenizer.json")
    return language_model_from_config(config, tokenizer.vocab_size), tokenizer


def load(workdir, config, which: str = "latest") -> LanguageModelRun:
    model, tokenizer = build_model(config, workdir)
    params, step = load_params(workdir, model, which)
    return LanguageModelRun(workdir, config, tokenizer, model, params, step)
