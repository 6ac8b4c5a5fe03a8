"""minGRU on Penn Treebank words, at the parameter count of Zaremba et al.'s small LSTM (ptb_small.py).

The recurrent layers are the only part that changes: 2 minGRU layers solved by
`jax.lax.associative_scan` over each window (rnnlm/recurrence.py), widened to the
parameter count of the 2x200 LSTM (4.65M: 243 minGRU or 234 minLSTM units) with its 10,000-word embedding and softmax; dropout
0.3 and Adam, since minGRU has no published PTB recipe to follow.

    rnnlm train --config experiments/mingru_ptb.py:cpu60 --workdir runs/mingru_ptb_cpu60
    rnnlm train --config experiments/mingru_ptb.py:cpu60 --config.model.cell=minlstm --config.model.hidden_size=234
    rnnlm train --config experiments/mingru_ptb.py:tiny
"""

from rnnlm.config import experiment_config, make_tiny


ARGS = ("cpu60", "tiny")  # what may follow the file name after ':' (`rnnlm` refuses anything else)


def get_config(arg=None):
    config = experiment_config("ptb_small")
    config.name = "mingru_ptb" + (f"_{arg}" if arg else "")
    config.model.cell = "mingru"
    config.model.dropout = 0.3
    config.model.init_scale = 0.0
    config.train.update(optimizer="adam", learning_rate=2e-3, lr_schedule="constant", loss="token_mean", bptt=35)
    config.model.hidden_size = 243  # equal parameters to ptb_small's LSTM (rnnlm.sweep.matched_hidden_size)
    if arg == "cpu60":
        config.train.time_budget_minutes = 60.0
        config.train.epochs = 40
    elif arg == "tiny":
        make_tiny(config)
    return config
