"""Zaremba, Sutskever & Vinyals (2014), "small": 2x200 LSTM on Penn Treebank, no dropout.

Published test perplexity 114.5 (valid 120.7). Same setup as their code: U(-0.1, 0.1)
init, SGD lr 1 for 4 epochs then x0.5 per epoch, 13 epochs, batch 20, BPTT 20, clip 5,
loss summed over time and averaged over the batch.

    rnnlm train --config experiments/ptb_small.py --workdir runs/ptb_small
    rnnlm eval --workdir runs/ptb_small --split test
"""

from rnnlm.config import base_config, make_tiny


ARGS = ("tiny",)  # what may follow the file name after ':' (`rnnlm` refuses anything else)


def get_config(arg=None):
    config = base_config()
    config.name = "ptb_small"
    config.data.corpus = "ptb"
    config.data.tokenizer = "word"
    config.model.cell = "lstm"
    config.model.embed_size = 200
    config.model.hidden_size = 200
    config.model.num_layers = 2
    config.model.init_scale = 0.1
    config.train.batch_size = 20
    config.train.bptt = 20
    config.train.epochs = 13
    config.train.optimizer = "sgd"
    config.train.learning_rate = 1.0
    config.train.lr_schedule = "zaremba"
    config.train.lr_decay = 0.5
    config.train.decay_start_epoch = 4
    config.train.grad_clip = 5.0
    config.train.loss = "time_sum"
    config.train.log_every = 200
    config.train.checkpoint_every = 1000
    config.eval.batch_size = 10
    config.sample.length = 50
    if arg == "tiny":
        make_tiny(config)
    return config
