"""The base configuration: every field, its meaning and unit. Experiments override it.

An experiment file is `experiments/<name>.py` with `get_config(arg=None)` that
starts from `base_config()`; the CLI locks the result, so a misspelt override
(`--config.model.hiden_size=3`) is an error, not a silently ignored field.
"""

from __future__ import annotations

import importlib.util
import json
import pathlib

import ml_collections

# The repository's experiments, for `--config x.py` or `x` from any directory (a source checkout).
EXPERIMENTS_DIR = pathlib.Path(__file__).resolve().parent.parent / "experiments"


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.name = "default"  # experiment name; the default workdir is runs/<name>
    c.seed = 0  # seeds parameter init, dropout and sampling
    c.task = "lm"  # "lm": language model | "classify": text classifier (rnnlm/tasks/)

    c.data = ml_collections.ConfigDict()
    c.data.corpus = "default"  # registered corpus name, "default" (offline), or a path to a file/folder
    c.data.data_dir = ""  # where registered corpora are looked up first; "" = $RNNLM_DATA_DIR
    c.data.train_path = ""  # explicit train file (set all three paths or none)
    c.data.valid_path = ""  # explicit validation file
    c.data.test_path = ""  # explicit test file
    c.data.split = (0.9, 0.05, 0.05)  # train/valid/test fractions when one file is split by position
    c.data.tokenizer = ""  # "char" | "word" | "sentencepiece"; "" = the corpus's usual one
    c.data.max_vocab = 0  # word tokenizer: keep the most frequent words (incl. <unk>, <eos>); 0 = all
    c.data.min_freq = 1  # word tokenizer: drop words seen fewer times in train
    c.data.lowercase = False  # word tokenizer: lower-case before counting
    c.data.reverse = False  # lm: read every split backwards (a backward model, e.g. for model.backward_encoder_from)
    c.data.spm_vocab_size = 8000  # sentencepiece: pieces in the trained model, incl. unknown and </s>
    c.data.spm_model_type = "bpe"  # sentencepiece: "bpe" | "unigram"
    c.data.spm_model = ""  # sentencepiece: an existing .model file to use instead of training one
    c.data.lines = ()  # classify: inline "LABEL text" lines used as train, valid and test; () = read the corpus
    c.data.format = "auto"  # classify: "lines" ('LABEL sentence'), "tsv" (header row), "auto" (tsv for *.tsv)
    c.data.label_column = "label"  # classify, tsv: the header's name of the label column
    c.data.text_column = "sentence"  # classify, tsv: the header's name of the text column
    c.data.coarse_labels = False  # classify: the label is its part before ':' ("NUM:dist" -> "NUM", TREC coarse)
    c.data.valid_fraction = 0.1  # classify: share of train held out (fixed seed) when the corpus has no valid split
    c.data.num_words = 10000  # classify: ids kept as in Keras Tokenizer(num_words): padding + OOV + top words; 0 = all
    c.data.maxlen = 0  # classify: tokens per sequence, longer ones truncated; 0 = the longest train sequence
    c.data.padding = "pre"  # classify: where pad_sequences adds padding: "pre" | "post" (Keras's default: pre)
    c.data.truncating = "pre"  # classify: which end a long sequence loses: "pre" | "post" (Keras's default: pre)
    c.data.bucket_by_length = False  # classify: batch sentences of similar length, each padded to its own longest

    c.model = ml_collections.ConfigDict()
    c.model.cell = "lstm"  # rnn | lstm | gru | gru_cho | gru_seed | mingru | minlstm | mogrifier (rnnlm/cells.py)
    c.model.mogrifier_rounds = 5  # mogrifier: rounds of mutual gating of x and h before each step; 0 = the LSTM
    c.model.mogrifier_rank = 0  # mogrifier: rank of the gating matrices (Q = Q_l Q_r); 0 = full
    c.model.residual = False  # every layer as wide as its input adds it: y = x + layer(x)
    c.model.layer_norm = False  # every layer reads its input layer-normalised (pre-norm)
    c.model.embed_size = 128  # embedding width
    c.model.hidden_size = 256  # units per recurrent layer
    c.model.hidden_sizes = ()  # lm: one width per layer instead, e.g. (1150, 1150, 400) (AWD-LSTM); () = hidden_size
    c.model.num_layers = 2  # stacked recurrent layers
    c.model.dropout = 0.0  # dropout rate between layers and before the decoder (AWD-LSTM's dropout)
    c.model.embed_dropout = 0.0  # dropout rate on the embeddings (AWD-LSTM's dropouti)
    c.model.hidden_dropout = -1.0  # lm: dropout rate between layers instead (AWD-LSTM's dropouth); -1 = model.dropout
    c.model.locked_dropout = False  # lm: the three dropouts above draw one mask per stream, shared by a window's steps
    c.model.embed_row_dropout = 0.0  # lm: drop whole embedding rows (word types), one mask per window (AWD's dropoute)
    c.model.weight_drop = 0.0  # lm: DropConnect on every layer's recurrent matrix w_h, one mask per window (AWD's wdrop)
    c.model.tie_weights = False  # share embedding and softmax weights
    c.model.mos_components = 0  # lm: K > 0 = a mixture of K softmaxes (Yang et al. 2018), latents of width embed_size
    c.model.init_scale = 0.0  # U(-s, s) init for all weights; 0 = per-part defaults (1/sqrt(H) for cells)
    c.model.matmul_dtype = "float32"  # "bfloat16": bf16 matmuls, float32 accumulation and state (~2x on AVX512-BF16 CPUs)
    c.model.num_classes = 0  # classify: output classes; 0 = the number of labels in train
    c.model.bidirectional = False  # classify: each layer also reads the sequence backwards; features concatenated
    c.model.pooling = "last"  # classify: sequence feature: "last" state | "mean" | "max" | "attention" over the valid steps
    c.model.head_size = 0  # classify: > 0 = a tanh layer of this width before the logits (Flax's sst2 MLP); 0 = none
    c.model.embeddings_from = ""  # classify: a word-level LM run whose embedding (and vocabulary) starts the classifier's
    c.model.freeze_embeddings = False  # classify: keep the embedding fixed during training
    c.model.encoder_from = ""  # classify: a word-level LM run whose embedding and first recurrent layer start the classifier's
    c.model.backward_encoder_from = ""  # classify, bidirectional: an LM run trained with data.reverse; its first layer starts the backward one
    c.model.word_dropout = 0.0  # classify: training replaces each real token by <oov> with this probability
    c.model.use_mask = True  # classify: False feeds padding to the cells like any token (the masking ablation)

    # How to compute, never what: a resumed run may change any of these (rnnlm/fast/__init__.py).
    c.speed = ml_collections.ConfigDict()
    c.speed.reference = False  # True: the plain reference path everywhere (debugging a new cell); no fast path
    c.speed.unroll = 1  # lax.scan unroll factor of training's passes
    c.speed.eval_unroll = 2  # lax.scan unroll factor of forward-only passes (evaluation, scoring, prompts)
    c.speed.fold_embedding = True  # a vocabulary no wider than embed_size: the first layer reads embedding @ w_x + b by id
    c.speed.wavefront = True  # CPU forward-only passes of stacks of H <= 256, embed_size == hidden_size: all layers in one loop
    c.speed.linear_scan = "auto"  # mingru/minlstm windows: "parallel" (lax.associative_scan) | "sequential" | "auto" (sequential on CPUs)

    c.train = ml_collections.ConfigDict()
    c.train.batch_size = 32  # global batch: number of parallel token streams
    c.train.bptt = 64  # truncated-BPTT window, in tokens
    c.train.variable_bptt = False  # lm: AWD-LSTM's drawn window lengths (mean bptt, 5% bptt/2; sd 5; 5..bptt+20), lr x length/bptt
    c.train.bptt_bucket = 8  # variable_bptt: windows padded (masked) up to a multiple of this: few compiled shapes
    c.train.epochs = 1  # passes over the train split
    c.train.max_steps = 0  # stop after this many optimizer steps; 0 = no limit
    c.train.time_budget_minutes = 0.0  # stop training after this much wall time; 0 = no limit
    c.train.optimizer = "adam"  # sgd | adam | adamw
    c.train.learning_rate = 2e-3  # peak learning rate
    c.train.momentum = 0.0  # sgd momentum
    c.train.weight_decay = 0.0  # adamw: decoupled weight decay; sgd, adam: L2, weight_decay * params added to the gradient
    c.train.lr_schedule = "constant"  # constant | zaremba | plateau | cosine
    c.train.lr_decay = 0.5  # zaremba: factor per epoch after decay_start; plateau: factor on no improvement
    c.train.decay_start_epoch = 4  # zaremba: epochs at the full rate
    c.train.warmup_steps = 0  # cosine: linear warmup steps
    c.train.grad_clip = 5.0  # clip the global gradient norm to this; 0 = off
    c.train.loss = "token_mean"  # token_mean | time_sum (sum over time, mean over batch, as Zaremba et al.)
    c.train.ar = 0.0  # lm: AR, ar * mean(h^2) of the top layer's dropped outputs added to the loss (AWD's alpha)
    c.train.tar = 0.0  # lm: TAR, tar * mean((h_t - h_{t-1})^2) of its undropped outputs (AWD's beta)
    c.train.adversarial = 0.0  # classify: L2 norm of each example's adversarial perturbation of its embedded words (Miyato et al. 2017); 0 = off
    c.train.adversarial_weight = 1.0  # classify: weight of the perturbed reading's cross-entropy in the loss
    c.train.averaging = "none"  # none | nonmono (NT-ASGD: once validation stalls) | always | epoch: evaluate the iterates' mean
    c.train.nonmono = 5  # averaging=nonmono: start when an epoch's validation is worse than the best but the last n
    c.train.average_start_epoch = 0  # averaging=epoch: start at the end of this epoch (tail averaging)
    c.train.init_from = ""  # a finished run's workdir: start from its best checkpoint (finetune; the original is only read)
    c.train.log_every = 50  # steps between progress lines and metric records
    c.train.checkpoint_every = 500  # steps between mid-epoch checkpoints; 0 = epoch ends only
    c.train.keep_checkpoints = 3  # most recent checkpoints kept, besides the best by validation loss
    c.train.skip_nonfinite = False  # on a NaN/Inf loss or gradient: False = stop the run, True = skip the step
    c.train.num_devices = 0  # devices in the data-parallel mesh; 0 = all devices of all processes

    c.eval = ml_collections.ConfigDict()
    c.eval.batch_size = 10  # streams when scoring valid/test (the state flows through each stream)
    c.eval.bptt = 0  # window when scoring; 0 = train.bptt
    # Dynamic evaluation (`rnnlm eval --dynamic`, rnnlm/dynamic_eval.py); defaults: Krause et al. 2018's.
    c.eval.dynamic_rule = "rms"  # "rms": Krause et al.'s RMS-normalised step, decay scaled per parameter | "sgd"
    c.eval.dynamic_lr = 5e-5  # learning rate of the step taken after each window is scored
    c.eval.dynamic_decay = 2e-3  # lambda: pull back toward the trained parameters per step
    c.eval.dynamic_eps = 2e-5  # rms: added to the gradient's root mean square before dividing
    c.eval.dynamic_bptt = 5  # window length: one step per this many tokens of every stream
    c.eval.dynamic_batch_size = 1  # streams adapted together (Krause et al.: 1, the text in order)
    c.eval.dynamic_stat_tokens = 100_000  # rms: training tokens whose gradients give the RMS; 0 = all of train
    c.eval.dynamic_stat_batch_size = 20  # rms: streams of those training windows
    c.eval.dynamic_grid_lr = (2e-5, 5e-5, 1e-4)  # --tune: learning rates tried (x dynamic_bptt / 5, as Krause)
    c.eval.dynamic_grid_decay = (1e-3, 2e-3, 5e-3)  # --tune: decays tried (x dynamic_bptt / 5)
    c.eval.dynamic_tune_tokens = 10_000  # --tune: the prefix of valid the grid is scored on (also the cache's)
    # The continuous cache (`rnnlm eval --cache`, rnnlm/cache.py; Grave et al. 2017).
    c.eval.cache_window = 500  # positions of each stream held: (top-layer output, the token that followed)
    c.eval.cache_theta = 0.6  # attention weights exp(theta * h_t . h_i)
    c.eval.cache_lambda = 0.1  # p = (1 - lambda) p_model + lambda p_cache
    c.eval.cache_grid_theta = (0.2, 0.6, 1.0)  # --tune: thetas tried
    c.eval.cache_grid_lambda = (0.05, 0.1, 0.2)  # --tune: lambdas tried

    c.sample = ml_collections.ConfigDict()
    c.sample.prompt = ""  # text the model reads before sampling; "" = start of a line
    c.sample.length = 200  # tokens sampled at the end of training
    c.sample.temperature = 0.8  # 0 = greedy
    c.sample.top_k = 0  # keep the k most likely tokens; 0 = off
    c.sample.top_p = 1.0  # nucleus sampling mass; 1 = off
    return c


def config_json(config) -> str:
    return config.to_json(indent=2, sort_keys=True) + "\n"


# Fields that moved: a run saved before the move reads them at their new place.
MOVED = {"model.unroll": "speed.unroll", "model.eval_unroll": "speed.eval_unroll",
         "model.fold_embedding": "speed.fold_embedding", "model.wavefront": "speed.wavefront"}


def load_config(path: pathlib.Path) -> ml_collections.ConfigDict:
    """Read a run's config.json back onto today's defaults; lists become tuples as in the experiment files.

    Starting from `base_config()` means a run saved before a field existed reads
    as if it had the field's default (which is what it ran with); a field that
    moved (`MOVED`) is read at its new place.
    """
    def merge(base: dict, saved: dict) -> dict:
        out = dict(base)
        for key, value in saved.items():
            if isinstance(value, dict) and isinstance(base.get(key), dict):
                out[key] = merge(base[key], value)
            else:
                out[key] = tuple(value) if isinstance(value, list) else value
        return out

    saved = json.loads(pathlib.Path(path).read_text())
    for old, new in MOVED.items():
        (old_section, old_key), (new_section, new_key) = old.split("."), new.split(".")
        if old_key in saved.get(old_section, {}):
            saved.setdefault(new_section, {})[new_key] = saved[old_section].pop(old_key)
    return ml_collections.ConfigDict(merge(base_config().to_dict(), saved))


def resolve_experiment(value: str) -> str:
    """`experiments/x.py`, `x.py` or `x` (also of experiments/ablations/), from any directory, with an
    optional `:arg` -> `path[:arg]`."""
    from rnnlm.errors import UserError
    path, sep, arg = value.rpartition(":") if ".py:" in value else (value, "", "")
    candidates = [pathlib.Path(path), EXPERIMENTS_DIR.parent / path, EXPERIMENTS_DIR / path,
                  EXPERIMENTS_DIR / pathlib.Path(path).name, EXPERIMENTS_DIR / f"{path}.py",
                  EXPERIMENTS_DIR / "ablations" / pathlib.Path(path).name, EXPERIMENTS_DIR / "ablations" / f"{path}.py"]
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        raise UserError(f"experiment config not found: {path}")
    if arg:
        check_experiment_arg(load_experiment_module(found), found, arg)
    return f"{found}{sep}{arg}"


def check_experiment_arg(module, path, arg) -> None:
    """An experiment lists what may follow its file name in ARGS; anything else would silently run the default."""
    from rnnlm.errors import UserError
    known = getattr(module, "ARGS", None)
    if arg and known is not None and arg not in known:
        raise UserError(f"{pathlib.Path(path).name}: unknown experiment argument {arg!r}; "
                        f"choose one of {', '.join(known)} (or none)")


def load_experiment_module(path):
    """An experiment file as a module, loaded by path: experiments are files, not an installed package."""
    path = pathlib.Path(path)
    spec = importlib.util.spec_from_file_location(f"rnnlm_experiment_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def experiment_config(name: str, arg=None) -> ml_collections.ConfigDict:
    """`get_config(arg)` of an experiment, by name or path (one experiment building on another)."""
    path = resolve_experiment(name)
    module = load_experiment_module(path)
    check_experiment_arg(module, path, arg)
    return module.get_config(arg)


def make_tiny(config, name_suffix: str = "_tiny") -> ml_collections.ConfigDict:
    """Shrink any experiment so it runs in seconds on a laptop CPU (same data, tiny model, few steps)."""
    config.name += name_suffix
    config.model.embed_size = 16
    config.model.hidden_size = 32
    config.model.num_layers = 2
    config.train.batch_size = 4
    config.train.bptt = 16
    config.train.epochs = 1
    config.train.max_steps = 20
    config.train.log_every = 5
    config.train.checkpoint_every = 10
    config.eval.batch_size = 2
    config.sample.length = 40
    return config


def validate(config) -> None:
    """Check names and ranges before anything touches the disk; raises UserError naming the field."""
    from rnnlm.cells import get_cell
    from rnnlm.data import corpora
    from rnnlm.data.text import split_fractions
    from rnnlm.data.tokenizers import TOKENIZERS
    from rnnlm.errors import UserError
    from rnnlm.optim import SCHEDULES

    get_cell(config.model.cell)
    if config.speed.linear_scan not in ("auto", "parallel", "sequential"):
        raise UserError(f"unknown speed.linear_scan {config.speed.linear_scan!r}; choose one of auto, parallel, sequential")
    if config.model.cell == "mogrifier":
        m = config.model
        if m.mogrifier_rounds < 0:
            raise UserError(f"model.mogrifier_rounds must not be negative, got {m.mogrifier_rounds}")
        if not 0 <= m.mogrifier_rank <= min(m.embed_size, m.hidden_size):
            raise UserError(f"model.mogrifier_rank must be in [0, {min(m.embed_size, m.hidden_size)}] (0 = full rank; "
                            f"at most the narrower of embed_size and hidden_size), got {m.mogrifier_rank}")
    corpora.resolve(config.data)  # a name or path that names no corpus
    if config.data.tokenizer and config.data.tokenizer not in TOKENIZERS:
        raise UserError(f"unknown data.tokenizer {config.data.tokenizer!r}; choose one of {', '.join(TOKENIZERS)}")
    _validate_task_fields(config)
    _validate_regularisation(config)
    split_fractions(config.data.split)
    if config.train.optimizer not in ("sgd", "adam", "adamw"):
        raise UserError(f"unknown train.optimizer {config.train.optimizer!r}; choose one of sgd, adam, adamw")
    if config.train.lr_schedule not in SCHEDULES:
        raise UserError(f"unknown train.lr_schedule {config.train.lr_schedule!r}; choose one of {', '.join(SCHEDULES)}")
    if config.model.matmul_dtype not in ("float32", "bfloat16"):
        raise UserError(f"model.matmul_dtype must be float32 or bfloat16, got {config.model.matmul_dtype!r}")
    if config.train.loss not in ("token_mean", "time_sum"):
        raise UserError(f"unknown train.loss {config.train.loss!r}; choose token_mean or time_sum")
    positive = ["model.embed_size", "model.hidden_size", "model.num_layers", "speed.unroll", "speed.eval_unroll",
                "train.batch_size", "train.bptt", "train.epochs", "train.log_every",
                "train.learning_rate", "eval.batch_size"]
    for field in positive:
        section, key = field.split(".")
        if not config[section][key] > 0:
            raise UserError(f"{field} must be positive, got {config[section][key]}")
    for field in ("model.dropout", "model.embed_dropout", "model.word_dropout", "model.embed_row_dropout",
                  "model.weight_drop"):
        section, key = field.split(".")
        if not 0 <= config[section][key] < 1:
            raise UserError(f"{field} must be in [0, 1), got {config[section][key]}")
    for field in ("train.max_steps", "train.time_budget_minutes", "train.checkpoint_every", "eval.bptt",
                  "train.grad_clip", "data.max_vocab", "sample.length", "sample.top_k", "train.weight_decay",
                  "train.ar", "train.tar", "model.head_size", "train.adversarial", "train.adversarial_weight"):
        section, key = field.split(".")
        if config[section][key] < 0:
            raise UserError(f"{field} must not be negative, got {config[section][key]}")


def _validate_regularisation(config) -> None:
    """The AWD-LSTM fields: per-layer widths, the between-layer rate, weight drop's cell, averaging."""
    from rnnlm import optim
    from rnnlm.cells import get_cell
    from rnnlm.errors import UserError
    m, t = config.model, config.train
    if m.hidden_sizes:
        if len(m.hidden_sizes) != m.num_layers or not all(isinstance(n, int) and n > 0 for n in m.hidden_sizes):
            raise UserError(f"model.hidden_sizes must list {m.num_layers} positive widths (model.num_layers), "
                            f"got {tuple(m.hidden_sizes)}")
    if not (m.hidden_dropout == -1 or 0 <= m.hidden_dropout < 1):
        raise UserError(f"model.hidden_dropout must be in [0, 1) or -1 (= model.dropout), got {m.hidden_dropout}")
    if m.weight_drop and not get_cell(m.cell).has_recurrent_matrix:
        raise UserError(f"model.weight_drop drops entries of w_h, and a {m.cell} cell has none (its gates read x_t alone)")
    if t.averaging not in optim.AVERAGING:
        raise UserError(f"unknown train.averaging {t.averaging!r}; choose one of {', '.join(optim.AVERAGING)}")
    if t.nonmono < 1:
        raise UserError(f"train.nonmono must be at least 1, got {t.nonmono}")
    if t.averaging == "epoch" and not 1 <= t.average_start_epoch < t.epochs:
        raise UserError(f"train.averaging=epoch starts at the end of epoch train.average_start_epoch, which must be "
                        f"from 1 to train.epochs - 1 ({t.epochs - 1}), got {t.average_start_epoch} "
                        f"(averaging=always averages from the first step)")
    if t.variable_bptt and t.bptt < 5:
        raise UserError(f"train.variable_bptt draws windows of at least 5 tokens; train.bptt must be at least 5, "
                        f"got {t.bptt}")
    if t.bptt_bucket < 1:
        raise UserError(f"train.bptt_bucket must be positive, got {t.bptt_bucket}")
    if m.mos_components < 0:
        raise UserError(f"model.mos_components must not be negative (0 = one plain softmax), got {m.mos_components}")
    lm_only = {"model.hidden_sizes": m.hidden_sizes != (), "train.variable_bptt": t.variable_bptt,
               "model.mos_components": m.mos_components != 0, "model.hidden_dropout": m.hidden_dropout != -1,
               "model.locked_dropout": m.locked_dropout, "model.embed_row_dropout": m.embed_row_dropout != 0,
               "model.weight_drop": m.weight_drop != 0, "train.ar": t.ar != 0, "train.tar": t.tar != 0}
    if config.task != "lm":
        for field, set_ in lm_only.items():
            if set_:
                raise UserError(f"{field} is for task=lm (the language model), not task={config.task}")


def _validate_task_fields(config) -> None:
    """The task, SentencePiece and classifier fields."""
    from rnnlm.errors import UserError

    def choice(field, options):
        section, key = field.split(".")
        if config[section][key] not in options:
            raise UserError(f"unknown {field} {config[section][key]!r}; choose one of {', '.join(options)}")

    if config.task not in ("lm", "classify"):
        raise UserError(f"unknown task {config.task!r}; choose lm or classify")
    choice("data.spm_model_type", ("bpe", "unigram"))
    if config.data.tokenizer == "sentencepiece" and config.data.spm_model:
        if not pathlib.Path(config.data.spm_model).expanduser().is_file():
            raise UserError(f"data.spm_model: file not found: {config.data.spm_model}")
    if config.data.spm_vocab_size < 2:
        raise UserError(f"data.spm_vocab_size must be at least 2, got {config.data.spm_vocab_size}")
    choice("data.padding", ("pre", "post"))
    from rnnlm.data.classification import FORMATS
    choice("data.format", FORMATS)
    choice("data.truncating", ("pre", "post"))
    choice("model.pooling", ("last", "mean", "max", "attention"))
    for field in ("data.num_words", "data.maxlen", "model.num_classes"):
        section, key = field.split(".")
        if config[section][key] < 0:
            raise UserError(f"{field} must not be negative, got {config[section][key]}")
    if not 0 < config.data.valid_fraction < 1:
        raise UserError(f"data.valid_fraction must be in (0, 1), got {config.data.valid_fraction}")
    for field in ("embeddings_from", "encoder_from", "backward_encoder_from"):
        if config.model[field] and config.task != "classify":
            raise UserError(f"model.{field} is for task=classify (a language model starts from its own init)")
    if config.model.encoder_from and config.model.embeddings_from not in ("", config.model.encoder_from):
        raise UserError("model.encoder_from's first layer reads its own embedding: leave model.embeddings_from empty")
    if config.model.backward_encoder_from and not (config.model.bidirectional and config.model.encoder_from):
        raise UserError("model.backward_encoder_from starts the backward direction: it needs model.bidirectional=True "
                        "and model.encoder_from for the forward one")
    if config.train.adversarial and config.task != "classify":
        raise UserError("train.adversarial perturbs a classifier's embedded words (task=classify), not a language model's")
    if config.data.reverse and config.task != "lm":
        raise UserError("data.reverse is for language models (task=lm)")
    if config.task == "classify" and config.data.tokenizer not in ("", "word"):
        raise UserError(f"task=classify reads words (data.tokenizer word), not {config.data.tokenizer!r}")
