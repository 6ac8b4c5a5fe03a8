"""Character-level LSTM on Tiny Shakespeare (char-rnn's corpus, split 90/5/5 by position).

    rnnlm train --config experiments/shakespeare_char.py
    rnnlm train --config experiments/shakespeare_char.py:tiny --config.model.cell=gru
    rnnlm train --config experiments/shakespeare_char.py:cpu15      # a 2x256 LSTM sized for 15 minutes on 2 CPU cores
    rnnlm train --config experiments/shakespeare_char.py:cpu15 --config.train.time_budget_minutes=60
    rnnlm generate --workdir runs/shakespeare_char --prompt "ROMEO:" --length 300 --temperature 0.8 --top-k 40
"""

from rnnlm.config import base_config, make_tiny


ARGS = ("cpu15", "tiny")  # what may follow the file name after ':' (`rnnlm` refuses anything else)


def get_config(arg=None):
    config = base_config()
    config.name = "shakespeare_char"
    config.data.corpus = "tinyshakespeare"
    config.data.tokenizer = "char"
    config.model.cell = "lstm"
    config.model.embed_size = 128
    config.model.hidden_size = 512
    config.model.num_layers = 2
    config.model.dropout = 0.25
    config.train.batch_size = 64
    config.train.bptt = 128
    config.train.epochs = 30
    config.train.optimizer = "adam"
    config.train.learning_rate = 2e-3
    config.train.lr_schedule = "cosine"
    config.train.warmup_steps = 100
    config.train.log_every = 25
    config.sample.prompt = "ROMEO:"
    config.sample.length = 300
    config.sample.top_k = 40
    if arg == "cpu15":
        # What a laptop CPU can train in a fixed wall-clock budget: a smaller net sees many
        # more characters per minute, which beats width at this scale.
        config.name = "shakespeare_char_cpu15"
        config.model.embed_size = 64
        config.model.hidden_size = 256
        config.model.dropout = 0.1
        config.train.batch_size = 32
        config.train.lr_schedule = "constant"
        config.train.learning_rate = 3e-3
        config.train.time_budget_minutes = 15.0
        config.train.checkpoint_every = 200
    elif arg == "tiny":
        make_tiny(config)
    return config
