"""Character-level LSTM on Tiny Shakespeare (char-rnn's corpus, split 90/5/5 by position).

    rnnlm train --config experiments/shakespeare_char.py
    rnnlm train --config experiments/shakespeare_char.py:tiny --config.model.cell=gru
    rnnlm train --config experiments/shakespeare_char.py --config.train.time_budget_minutes=15
    rnnlm generate --workdir runs/shakespeare_char --prompt "ROMEO:" --length 300 --temperature 0.8 --top-k 40
"""

from rnnlm.config import base_config, make_tiny


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
    if arg == "tiny":
        make_tiny(config)
    return config
