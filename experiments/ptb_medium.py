"""Zaremba et al. (2014), "medium": 2x650 LSTM on Penn Treebank with dropout 0.5.

Published test perplexity 82.7 (valid 86.2): U(-0.05, 0.05) init, SGD lr 1 for 6 epochs
then x0.8 per epoch, 39 epochs, batch 20, BPTT 35, clip 5.

    rnnlm train --config experiments/ptb_medium.py --workdir runs/ptb_medium
"""

from rnnlm.config import experiment_config, make_tiny


ARGS = ("tiny",)  # what may follow the file name after ':' (`rnnlm` refuses anything else)


def get_config(arg=None):
    config = experiment_config("ptb_small")
    config.name = "ptb_medium"
    config.model.embed_size = 650
    config.model.hidden_size = 650
    config.model.dropout = 0.5
    config.model.embed_dropout = 0.5
    config.model.init_scale = 0.05
    config.train.bptt = 35
    config.train.epochs = 39
    config.train.lr_decay = 0.8
    config.train.decay_start_epoch = 6
    if arg == "tiny":
        make_tiny(config)
    return config
