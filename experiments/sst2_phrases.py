"""SST-2 trained on GLUE's 67,349 labelled phrases, selected on its 872-sentence dev set, a bi-LSTM from scratch.

The corpus `sst2_phrases` (rnnlm/data/corpora.py): train is GLUE SST-2's
train.tsv (sub-phrases of the 6,920 training sentences, each with its own
label), valid is GLUE's dev.tsv (the same 872 sentences as `sst2`'s valid
split), test is the sentence-level SST-2 test set (1,821 sentences; GLUE hides
its own test labels). The embedding starts from random vectors.

Flax's examples/sst2 (a bi-LSTM over 300-wide random embeddings, SGD with
momentum, 10 epochs) reports 85.21% on this dev set (docs/classification.md
has the source); the selection here is the best-dev checkpoint, and the test
accuracy reported is that checkpoint's.

    rnnlm train --config experiments/sst2_phrases.py --workdir runs/sst2_phrases
    rnnlm eval --workdir runs/sst2_phrases --split test --checkpoint best
    rnnlm train --config experiments/sst2_phrases.py:tiny          # seconds
    rnnlm train --config experiments/sst2_phrases.py:attention     # Flax's classifier head (below)

`:attention` swaps max pooling and the linear output for Flax's head: additive
attention over the bi-LSTM's (dropped) outputs, then a tanh layer of 256 units
(dropped) before the logits; `:attention_tiny` is its seconds-long check.

`:lm_vectors` starts the embedding from a language model's instead of random
vectors: those of experiments/wikitext2_vectors.py:wide (300 wide, two million
words of Wikipedia), which must be trained first into runs/wikitext2_vectors_wide. Measured over five
seeds: dev 85.11 ± 0.50%, test 84.92 ± 0.58%, within noise of the random start (docs/classification.md).

`:lm_encoder` starts the embedding and the bi-LSTM itself from language models (Dai & Le 2015's
pretraining, one model per direction): experiments/wikitext2_vectors.py:encoder for the forward LSTM
and :encoder_backward, trained on the text reversed, for the backward one. Measured over three seeds:
dev 83.79 ± 0.48%, test 83.16 ± 0.51%, below the random start (docs/classification.md).

`:adversarial` adds adversarial training (Miyato, Dai & Goodfellow 2017): every batch is read a second
time with each example's embedded words moved by 0.1 in L2 norm along its loss's gradient, and that
reading's cross-entropy joins the loss (`train.adversarial`; three forward-backward passes a step).
Measured over five seeds: dev 85.25 ± 0.30%, test 84.97 ± 0.24% (docs/classification.md).
"""

from rnnlm.config import base_config


ARGS = ("tiny", "attention", "attention_tiny", "lm_vectors", "lm_encoder", "adversarial", "adversarial_tiny")  # what may follow the file name after ':' (`rnnlm` refuses anything else)


def get_config(arg=None):
    config = base_config()
    config.name = "sst2_phrases"
    config.task = "classify"
    config.data.corpus = "sst2_phrases"
    config.data.num_words = 0  # every train word: the phrases cover each training sentence's words
    config.data.maxlen = 64  # the longest dev/test sentence (56 tokens) is not truncated
    config.data.padding = "post"
    config.data.truncating = "post"
    config.data.bucket_by_length = True
    config.model.num_classes = 2
    config.model.cell = "lstm"
    config.model.bidirectional = True
    config.model.pooling = "max"
    config.model.embed_size = 300
    config.model.hidden_size = 256
    config.model.num_layers = 1
    config.model.embed_dropout = 0.5
    config.model.word_dropout = 0.1  # a tenth of the real tokens become <unk> while training
    config.model.dropout = 0.5
    config.train.optimizer = "sgd"  # with momentum: Adam at 1e-3 peaks earlier and lower on dev (docs/classification.md)
    config.train.learning_rate = 0.1
    config.train.momentum = 0.9
    config.train.grad_clip = 5.0
    config.train.batch_size = 64
    config.train.epochs = 10
    config.train.log_every = 200
    config.train.checkpoint_every = 0
    config.train.keep_checkpoints = 1
    config.eval.batch_size = 128
    config.sample.length = 0
    if arg and arg.startswith("attention"):  # Flax's head: attention over the outputs, then a tanh layer
        config.name += "_attention"
        config.model.update(pooling="attention", head_size=256)
    if arg == "lm_vectors":
        config.name += "_lm_vectors"
        config.model.embeddings_from = "runs/wikitext2_vectors_wide"  # 300-wide, as embed_size
        config.data.lowercase = True  # GLUE's SST-2 is lower-cased: match the LM's words lower-cased too
    if arg == "lm_encoder":  # the embedding and both directions' LSTMs from WikiText-2 language models
        config.name += "_lm_encoder"
        config.model.encoder_from = "runs/wikitext2_vectors_encoder"
        config.model.backward_encoder_from = "runs/wikitext2_vectors_encoder_backward"
        config.data.lowercase = True
    if arg and arg.startswith("adversarial"):  # Miyato et al. 2017's adversarial training on the embedded words
        config.name += "_adversarial"
        config.train.adversarial = 0.1  # 0.25 and 0.5 keep a random start at chance (docs/classification.md)
    if arg and arg.endswith("tiny"):
        config.name += "_tiny"
        config.model.update(embed_size=16, hidden_size=16)
        config.train.update(epochs=1, max_steps=10, log_every=5)
    return config
