"""TREC question classification (6 coarse classes; 5,452 train / 500 test), a bidirectional LSTM from scratch.

TREC has no valid split: 10% of train (545 questions, drawn with the fixed seed 0
whatever config.seed is) is held out as valid, and the model trains on the other
4,907 (data.valid_fraction). Labels are the coarse part of `COARSE:fine`.
Tuned on that valid split only; the test accuracy reported is that of the
checkpoint with the best valid accuracy (see rnnlm/tasks/classify.py).

The embedding starts from the word vectors of a WikiText-2 language model
(rnnlm/pretrained.py), trained first; `:scratch` is the same model from a random
embedding.

    rnnlm train --config experiments/wikitext2_vectors.py --workdir runs/wikitext2_vectors   # once, ~40 min
    rnnlm train --config experiments/trec_lstm.py --workdir runs/trec_lstm
    rnnlm train --config experiments/trec_lstm.py:scratch --workdir runs/trec_lstm_scratch
    rnnlm eval --workdir runs/trec_lstm --split test --checkpoint best
    rnnlm predict --workdir runs/trec_lstm "How far is the moon from the earth ?" "Who wrote Hamlet ?"
    rnnlm train --config experiments/trec_lstm.py:tiny          # seconds
"""

from rnnlm.config import base_config


ARGS = ("scratch", "tiny")  # what may follow the file name after ':' (`rnnlm` refuses anything else)


def get_config(arg=None):
    config = base_config()
    config.name = "trec_lstm"
    config.task = "classify"
    config.data.corpus = "trec"
    config.data.coarse_labels = True  # ABBR, DESC, ENTY, HUM, LOC, NUM
    config.data.valid_fraction = 0.1
    config.data.lowercase = False  # keep case (tuned on valid: 84.95% cased vs 84.04% lower-cased)
    config.data.num_words = 5000  # padding + OOV + the 4,998 most frequent train words (of 8,827): tuned on valid
    config.data.maxlen = 0  # the longest train question: nothing truncated
    config.data.padding = "post"
    config.data.truncating = "post"
    config.data.bucket_by_length = True
    config.model.num_classes = 6
    config.model.cell = "lstm"
    config.model.bidirectional = True
    config.model.pooling = "max"
    config.model.embed_size = 128
    config.model.hidden_size = 128
    config.model.num_layers = 1
    if arg not in ("scratch", "tiny"):
        config.model.embeddings_from = "runs/wikitext2_vectors"  # 128-wide, as embed_size
    config.model.embed_dropout = 0.5
    config.model.dropout = 0.5
    config.train.optimizer = "adam"
    config.train.learning_rate = 1e-3
    config.train.grad_clip = 5.0
    config.train.batch_size = 32
    config.train.epochs = 10
    config.train.log_every = 50
    config.train.checkpoint_every = 0
    config.train.keep_checkpoints = 1
    config.eval.batch_size = 100
    config.sample.length = 0
    if arg == "scratch":
        config.name += "_scratch"
    if arg == "tiny":
        config.name += "_tiny"
        config.model.update(embed_size=16, hidden_size=16)
        config.train.update(epochs=1, max_steps=10, log_every=5)
    return config
