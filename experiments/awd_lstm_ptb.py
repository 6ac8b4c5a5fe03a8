"""AWD-LSTM (Merity, Keskar & Socher 2018, "Regularizing and Optimizing LSTM Language Models",
arXiv 1708.02182) on Penn Treebank words.

Published: 60.0 valid / 57.3 test perplexity, 24M parameters (the paper's Table 1; 3 layers, no
finetuning figure of the paper itself is quoted here). The salesforce/awd-lstm-lm README gives
61.2 / 58.8 for its PyTorch 0.4 code and 58.8 / 56.5 after `finetune.py`.

Settings: that README's PTB command (`--batch_size 20 --dropouti 0.4 --dropouth 0.25 --seed 141
--epoch 500`) over the code's defaults (main.py): embeddings 400, 3 LSTM layers of 1150, 1150 and
400 units (the last as wide as the embedding, tied), SGD at 30 with L2 1.2e-6, gradient norm
clipped at 0.25, BPTT 70 drawn per window (variable length, learning rate x length / 70),
dropout 0.4 on the top layer's output, dropouti 0.4 on the embedding output, dropouth 0.25
between layers (all three locked: one mask per stream and window), dropoute 0.1 (embedding
rows), weight drop 0.5 on every w_h, AR alpha 2, TAR beta 1, NT-ASGD with nonmono 5, validation
every epoch with 10 streams. Known differences: rnnlm's LSTM starts its forget-gate bias at 1
(torch: U(-k, k) for both of its biases), and windows are at most 90 tokens (awd: uncapped).

    rnnlm train --config experiments/awd_lstm_ptb.py --workdir runs/awd_lstm_ptb              # days on 2 CPU cores
    rnnlm train --config experiments/awd_lstm_ptb.py:finetune --workdir runs/awd_lstm_ptb_ft \\
        --config.train.init_from=runs/awd_lstm_ptb                                             # awd's finetune.py
    rnnlm train --config experiments/awd_lstm_ptb.py:cpu60 --workdir runs/awd_lstm_ptb_cpu60   # 60 minutes
    rnnlm train --config experiments/awd_lstm_ptb.py:tiny                                      # seconds
"""

from rnnlm.config import base_config, make_tiny


ARGS = ("cpu60", "finetune", "cpu60_finetune", "tiny")  # what may follow the file name after ':'


def get_config(arg=None):
    config = base_config()
    config.name = "awd_lstm_ptb"
    config.seed = 141
    config.data.corpus = "ptb"
    config.data.tokenizer = "word"
    config.model.cell = "lstm"
    config.model.embed_size = 400
    config.model.hidden_size = 1150
    config.model.num_layers = 3
    config.model.hidden_sizes = (1150, 1150, 400)
    config.model.tie_weights = True
    config.model.dropout = 0.4  # awd: dropout
    config.model.embed_dropout = 0.4  # awd: dropouti
    config.model.hidden_dropout = 0.25  # awd: dropouth
    config.model.locked_dropout = True
    config.model.embed_row_dropout = 0.1  # awd: dropoute
    config.model.weight_drop = 0.5  # awd: wdrop
    config.train.batch_size = 20
    config.train.bptt = 70
    config.train.variable_bptt = True
    config.train.epochs = 500
    config.train.optimizer = "sgd"
    config.train.learning_rate = 30.0
    config.train.weight_decay = 1.2e-6
    config.train.grad_clip = 0.25
    config.train.ar = 2.0  # awd: alpha
    config.train.tar = 1.0  # awd: beta
    config.train.averaging = "nonmono"
    config.train.nonmono = 5
    config.train.log_every = 200
    config.train.checkpoint_every = 1000
    config.eval.batch_size = 10
    config.sample.length = 50
    if arg in ("cpu60", "cpu60_finetune"):
        # What 2 CPU cores train in an hour. Early on, a window's update is worth more than its width: at
        # awd's batch 80 x 70 tokens SGD reached valid 666 in one epoch (342 steps), so the batch is 20
        # x 35 (1,385 steps an epoch). Two layers (650, then 400 for the tying) at ~2,400 tokens/s,
        # 6.5 minutes an epoch; Adam, which left SGD at 30 behind in 400 steps (train loss 5.91 against
        # 6.38), annealed to 0 by a cosine over the 8 epochs that fit; lighter dropout for the fewer epochs.
        config.name = "awd_lstm_ptb_cpu60"
        config.model.update(embed_size=400, hidden_size=650, num_layers=2, hidden_sizes=(650, 400),
                            dropout=0.3, embed_dropout=0.3, hidden_dropout=0.2, embed_row_dropout=0.05,
                            weight_drop=0.2)
        config.train.update(batch_size=20, bptt=35, time_budget_minutes=60.0, epochs=8, optimizer="adam",
                            learning_rate=2e-3, lr_schedule="cosine", averaging="none", checkpoint_every=1000,
                            log_every=200)
    if arg in ("finetune", "cpu60_finetune"):
        # awd's finetune.py: from the finished run's best (averaged) parameters, averaging from the first step.
        config.name += "_finetune"
        config.train.averaging = "always"
        config.train.init_from = f"runs/{config.name.removesuffix('_finetune')}"
    if arg == "tiny":
        make_tiny(config)
        config.model.hidden_sizes = (32, 16)  # the top layer as wide as the embedding, for the tying
    return config
