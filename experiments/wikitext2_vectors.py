"""Word vectors for the classifiers: a small LSTM language model on WikiText-2 (cased, 33,278 words).

The classifiers (experiments/trec_lstm.py, experiments/sst2_lstm.py) start
their embedding from this run's embedding matrix (model.embeddings_from), so
that words rare or absent in their few thousand labelled sentences arrive with
what two million words of Wikipedia say about them. Embeddings are 128 wide,
the classifiers' width; a 512-unit LSTM reads them and a projection ties the
softmax to the embedding (Press & Wolf 2017), so every output word trains its
own vector too. One epoch fits the CPU budget (time_budget_minutes).

    rnnlm train --config experiments/wikitext2_vectors.py --workdir runs/wikitext2_vectors
    rnnlm train --config experiments/wikitext2_vectors.py:tiny     # seconds
    rnnlm train --config experiments/wikitext2_vectors.py:wide --workdir runs/wikitext2_vectors_wide

`:wide` makes the vectors 300 wide, the width of experiments/sst2_phrases.py's
embedding (its `:lm_vectors` variant starts from them). On this project's 2
cores its two epochs took 18 minutes each (valid perplexity 180.64, test 164.30,
2026-12-07), inside the same 40-minute budget.

`:encoder` is sized as that classifier's encoder (300-wide embedding, 256 units), so that the classifier's
forward LSTM can start from its first layer (model.encoder_from); `:encoder_backward` is the same model
reading WikiText-2 backwards (data.reverse), for the backward direction (model.backward_encoder_from):
the pretraining of Dai & Le 2015 (arXiv 1511.01432), in both directions. Measured 2026-12-08, the two
side by side on the 2 cores, the test suite beside them for 13 of the 40 minutes (so the budget stopped both at step
2,200, 1.2 epochs): forward valid 226.29, test 212.61; backward valid 236.61, test 218.65.

    rnnlm train --config experiments/wikitext2_vectors.py:encoder --workdir runs/wikitext2_vectors_encoder
    rnnlm train --config experiments/wikitext2_vectors.py:encoder_backward --workdir runs/wikitext2_vectors_encoder_backward
"""

from rnnlm.config import experiment_config


ARGS = ("tiny", "wide", "encoder", "encoder_backward")  # what may follow the file name after ':' (`rnnlm` refuses anything else)


def get_config(arg=None):
    config = experiment_config("wikitext2", "tiny" if arg == "tiny" else None)
    config.name = "wikitext2_vectors" + (f"_{arg}" if arg else "")
    if arg == "tiny":
        return config
    config.model.embed_size = 300 if arg in ("wide", "encoder", "encoder_backward") else 128
    config.model.hidden_size = 256 if arg in ("encoder", "encoder_backward") else 512
    config.data.reverse = arg == "encoder_backward"
    config.model.num_layers = 1
    config.model.dropout = 0.3
    config.model.embed_dropout = 0.1
    config.train.batch_size = 32
    config.train.epochs = 2
    config.train.time_budget_minutes = 40.0
    config.sample.length = 0
    return config
