"""Word-level LSTM on WikiText-2, the recipe of PyTorch's word_language_model example.

2x650 LSTM with tied embeddings, dropout 0.5, SGD lr 20 on the per-token mean loss,
clip 0.25, learning rate divided by 4 when validation loss stops improving, BPTT 35.

    rnnlm train --config experiments/wikitext2.py --workdir runs/wikitext2
"""

from rnnlm.config import base_config, make_tiny


ARGS = ("tiny",)  # what may follow the file name after ':' (`rnnlm` refuses anything else)


def get_config(arg=None):
    config = base_config()
    config.name = "wikitext2"
    config.data.corpus = "wikitext2"
    config.data.tokenizer = "word"
    config.model.cell = "lstm"
    config.model.embed_size = 650
    config.model.hidden_size = 650
    config.model.num_layers = 2
    config.model.dropout = 0.5
    config.model.embed_dropout = 0.5
    config.model.tie_weights = True
    config.train.batch_size = 20
    config.train.bptt = 35
    config.train.epochs = 40
    config.train.optimizer = "sgd"
    config.train.learning_rate = 20.0
    config.train.lr_schedule = "plateau"
    config.train.lr_decay = 0.25
    config.train.grad_clip = 0.25
    config.train.log_every = 200
    config.train.checkpoint_every = 1000
    config.sample.length = 50
    if arg == "tiny":
        make_tiny(config)
        config.model.embed_size = config.model.hidden_size  # keep the tying square
    return config
