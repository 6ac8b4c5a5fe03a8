"""The Mogrifier LSTM (Melis, Kocisky & Blunsom, ICLR 2020) on Penn Treebank words.

The paper's 24M-parameter PTB model reaches 51.4 valid / 50.1 test perplexity without
dynamic evaluation (its Table 1). The default here follows the tuned config that the
paper's code publishes, google-deepmind/lamb,
experiment/mogrifier/config/786252db3825+_tune_ptb_24m_lstm_fm_d2_arms/trial_483:
2 layers, 5 rounds of rank 84, tied input and output embeddings as wide as the cells
(about 24M parameters at 900 units), BPTT 70, batch 64, gradient norm clipped at 10,
learning rate 2.3e-3, input dropout 0.73, output dropout 0.72. Differences, because
rnnlm does not have them (yet): one dropout rate between the layers and before the
decoder (lamb: 0.29 between, 0.72 after the top layer), no state dropout, no L2
penalty, no weight averaging, and Adam (lamb: RMSProp with beta2 0.999, that is Adam
without its first moment).

    rnnlm train --config experiments/mogrifier_ptb.py --workdir runs/mogrifier_ptb           # days on 2 CPU cores
    rnnlm train --config experiments/mogrifier_ptb.py:cpu60 --workdir runs/mogrifier_ptb_cpu60 # 60 minutes of training
    rnnlm train --config experiments/mogrifier_ptb.py:tiny                                      # seconds
    rnnlm train --config experiments/mogrifier_ptb.py:cpu60 --config.model.mogrifier_rounds=0  # the same LSTM, no gating
"""

from rnnlm.config import base_config, make_tiny


ARGS = ("cpu60", "tiny")  # what may follow the file name after ':' (`rnnlm` refuses anything else)


def get_config(arg=None):
    config = base_config()
    config.name = "mogrifier_ptb"
    config.data.corpus = "ptb"
    config.data.tokenizer = "word"
    config.model.cell = "mogrifier"
    config.model.mogrifier_rounds = 5
    config.model.mogrifier_rank = 84
    config.model.embed_size = 900
    config.model.hidden_size = 900
    config.model.num_layers = 2
    config.model.tie_weights = True
    config.model.embed_dropout = 0.73
    config.model.dropout = 0.5
    config.train.optimizer = "adam"
    config.train.learning_rate = 2.3e-3
    config.train.lr_schedule = "plateau"
    config.train.grad_clip = 10.0
    config.train.batch_size = 64
    config.train.bptt = 70
    config.train.epochs = 250
    config.train.log_every = 100
    config.train.checkpoint_every = 500
    config.eval.batch_size = 10
    config.sample.length = 50
    if arg == "cpu60":
        # What 2 CPU cores train in an hour: narrower, shorter windows, less dropout for the fewer epochs.
        config.name = "mogrifier_ptb_cpu60"
        config.model.update(embed_size=256, hidden_size=256, mogrifier_rank=32, embed_dropout=0.3, dropout=0.3)
        config.train.update(batch_size=32, bptt=35, learning_rate=2e-3, lr_schedule="constant", grad_clip=5.0,
                            time_budget_minutes=60.0, epochs=20, checkpoint_every=200)
    elif arg == "tiny":
        make_tiny(config)
        config.model.mogrifier_rank = 4
        config.model.tie_weights = False
    return config
