"""SST-2 (sentence level: 6,920 / 872 / 1,821), a bidirectional LSTM from scratch.

Word ids as the article's Keras pipeline (Tokenizer(num_words), pad_sequences),
masked so that padding never reaches the state, length-bucketed batches.
Tuned on the valid split only; the test accuracy reported is that of the
checkpoint with the best valid accuracy (see rnnlm/tasks/classify.py).

The embedding starts from the word vectors of a WikiText-2 language model
(rnnlm/pretrained.py; matched lower-cased, as SST-2 is), trained first;
`:scratch` is the same model from a random embedding.

    rnnlm train --config experiments/wikitext2_vectors.py --workdir runs/wikitext2_vectors   # once, ~40 min
    rnnlm train --config experiments/sst2_lstm.py --workdir runs/sst2_lstm
    rnnlm train --config experiments/sst2_lstm.py:scratch --workdir runs/sst2_lstm_scratch
    rnnlm eval --workdir runs/sst2_lstm --split test --checkpoint best
    rnnlm predict --workdir runs/sst2_lstm "a gorgeous , witty , seductive movie ." "the plot is nothing but boilerplate ."
    rnnlm train --config experiments/sst2_lstm.py:tiny          # seconds
"""

from rnnlm.config import base_config


ARGS = ("scratch", "tiny")  # what may follow the file name after ':' (`rnnlm` refuses anything else)


def get_config(arg=None):
    config = base_config()
    config.name = "sst2_lstm"
    config.task = "classify"
    config.data.corpus = "sst2"
    config.data.num_words = 8000  # padding + OOV + the 7,998 most frequent train words (of 14,828): tuned on valid
    config.data.maxlen = 0  # the longest train sentence: nothing truncated
    config.data.padding = "post"
    config.data.truncating = "post"
    config.data.bucket_by_length = True
    config.model.num_classes = 2
    config.model.cell = "lstm"
    config.model.bidirectional = True
    config.model.pooling = "max"
    config.model.embed_size = 128
    config.model.hidden_size = 128
    config.model.num_layers = 1
    if arg not in ("scratch", "tiny"):
        config.model.embeddings_from = "runs/wikitext2_vectors"  # 128-wide, as embed_size
        config.data.lowercase = True  # SST-2 is lower-cased: match the LM's words lower-cased too
    config.model.embed_dropout = 0.3  # tuned on valid (0.3: 80.7%, 0.5: 80.1%)
    config.model.dropout = 0.5
    config.train.optimizer = "adam"
    config.train.learning_rate = 1e-3
    config.train.grad_clip = 5.0
    config.train.batch_size = 32
    config.train.epochs = 6  # the best valid accuracy came at epochs 2-5 in tuning
    config.train.log_every = 50
    config.train.checkpoint_every = 0
    config.train.keep_checkpoints = 1
    config.eval.batch_size = 128
    config.sample.length = 0
    if arg == "scratch":
        config.name += "_scratch"
    if arg == "tiny":
        config.name += "_tiny"
        config.model.update(embed_size=16, hidden_size=16)
        config.train.update(epochs=1, max_steps=10, log_every=5)
    return config
