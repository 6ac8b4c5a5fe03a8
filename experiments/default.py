"""The offline default: a character-level LSTM on CPython's bundled documentation.

Runs on any machine with no network and no data directory, in a few minutes on 2 CPU cores:

    rnnlm train                                   # = --config experiments/default.py
    rnnlm train --config experiments/default.py:tiny
"""

from rnnlm.config import base_config, make_tiny


ARGS = ("tiny",)  # what may follow the file name after ':' (`rnnlm` refuses anything else)


def get_config(arg=None):
    config = base_config()
    config.name = "default"
    config.data.corpus = "default"
    config.data.tokenizer = "char"
    config.model.cell = "lstm"
    config.model.embed_size = 64
    config.model.hidden_size = 256
    config.model.num_layers = 2
    config.train.batch_size = 32
    config.train.bptt = 64
    config.train.epochs = 3
    config.train.optimizer = "adam"
    config.train.learning_rate = 3e-3
    config.train.lr_schedule = "cosine"
    config.train.warmup_steps = 50
    config.train.log_every = 25
    config.sample.length = 300
    config.sample.prompt = "The "
    if arg == "tiny":
        make_tiny(config)
    return config
