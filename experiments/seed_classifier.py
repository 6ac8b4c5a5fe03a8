"""The article's Keras text classifier, reproduced: three sentences, labels 0/1/2, the same sizes.

The article trains `Tokenizer(num_words=10000)` -> `pad_sequences(maxlen=10)` ->
`Embedding(10000, 64)` -> `LSTM(64)` -> `Dense(3, softmax)` with Adam and sparse
categorical cross-entropy for 10 epochs on a 3-sentence toy dataset. Its exact
sentences are not reproduced here: the three below are our own, one per label,
with the article's sizes (num_words 10,000, so the embedding has 10,000 rows;
maxlen 10 with Keras's default 'pre' padding and truncation; one LSTM layer of
64 units on 64-wide embeddings; the last state -> 3 logits; Adam at Keras's
default 1e-3; 10 epochs of one 3-sentence batch). Train, valid and test are the
same three sentences, as in the article, which reports training accuracy.

    rnnlm train --config experiments/seed_classifier.py --workdir runs/seed_classifier
    rnnlm eval --workdir runs/seed_classifier --split train
    rnnlm predict --workdir runs/seed_classifier "what a wonderful film" "a dull and boring film"
"""

from rnnlm.config import base_config

SENTENCES = (  # our own three sentences, labels 0, 1, 2 as in the article's toy dataset
    "0 what a wonderful film , i loved every minute",
    "1 a dull and boring film , i hated it",
    "2 the film is about a journey across the sea",
)


ARGS = ("tiny",)  # what may follow the file name after ':' (`rnnlm` refuses anything else)


def get_config(arg=None):
    config = base_config()
    config.name = "seed_classifier"
    config.task = "classify"
    config.data.lines = SENTENCES
    config.data.num_words = 10000  # Tokenizer(num_words=10000); Embedding(10000, 64)
    config.data.maxlen = 10  # pad_sequences(maxlen=10), padding and truncating 'pre' (Keras's defaults)
    config.data.padding = "pre"
    config.data.truncating = "pre"
    config.model.num_classes = 3  # Dense(3, activation='softmax')
    config.model.cell = "lstm"
    config.model.embed_size = 64
    config.model.hidden_size = 64  # LSTM(64)
    config.model.num_layers = 1
    config.model.pooling = "last"  # Keras's LSTM returns the last state
    config.train.optimizer = "adam"
    config.train.learning_rate = 1e-3  # Keras's Adam default
    config.train.grad_clip = 0.0  # Keras clips nothing by default
    config.train.batch_size = 3  # all three sentences in one batch (Keras's batch of 32 holds them all)
    config.train.epochs = 10
    config.train.log_every = 1
    config.train.checkpoint_every = 0
    config.eval.batch_size = 3
    config.sample.length = 0
    if arg == "tiny":  # already tiny: the same run, named apart
        config.name += "_tiny"
    return config
