"""Which tokenizer? Characters, words and SentencePiece subwords on Penn Treebank, compared per word.

Each model is one LSTM layer of 512 units trained for the same wall time
(train.time_budget_minutes), so the tokenizers get equal compute, not equal
steps; perplexity per token is not comparable across them, so the table's
columns are per-word perplexity and bits per character (rnnlm/metrics.py: the
total NLL of the split divided by its words, incl. one <eos> per line, or its
characters). The word model uses PTB's 10,000-word vocabulary with <unk>; the
subword model is a 4,000-piece BPE trained on the train split; both read the
same text, in which rare words are already "<unk>".

    rnnlm sweep --config experiments/ablations/tokenizer.py --workdir runs/ablation_tokenizer   # 3 x 20 min
    rnnlm sweep --config experiments/ablations/tokenizer.py:tiny                               # seconds

The per-word columns need train.py to report them (rnnlm.metrics.with_per_unit_metrics);
`rnnlm eval --workdir runs/ablation_tokenizer/<point> --split test` prints them for every run.
"""

from rnnlm.config import base_config, make_tiny


ARGS = ("tiny",)  # what may follow the file name after ':' (`rnnlm` refuses anything else)


def get_config(arg=None):
    config = base_config()
    config.name = "ablation_tokenizer"
    config.data.corpus = "ptb"
    config.data.tokenizer = "word"
    config.data.spm_vocab_size = 4000
    config.data.spm_model_type = "bpe"
    config.model.cell = "lstm"
    config.model.embed_size = 256
    config.model.hidden_size = 512
    config.model.num_layers = 1
    config.model.dropout = 0.3
    config.train.batch_size = 32
    config.train.bptt = 35
    config.train.epochs = 20
    config.train.time_budget_minutes = 20.0
    config.train.optimizer = "adam"
    config.train.learning_rate = 2e-3
    config.train.log_every = 100
    config.train.checkpoint_every = 1000
    config.sample.length = 0
    if arg == "tiny":
        make_tiny(config)
        config.data.spm_vocab_size = 500
        config.train.max_steps = 5
        config.train.time_budget_minutes = 0.0
        config.sample.length = 0
        config.eval.batch_size, config.eval.bptt = 64, 64  # score PTB's valid/test splits in few windows
    return config


def get_sweep(arg=None):
    tokenizers = [{"data.tokenizer": "char", "train.bptt": 35 * 5},  # ~5 characters per PTB word
                  {"data.tokenizer": "word"},
                  {"data.tokenizer": "sentencepiece", "train.bptt": 35 * 2}]
    if arg == "tiny":
        tokenizers = [{k: (16 if k == "train.bptt" else v) for k, v in t.items()} for t in tokenizers]
    return tokenizers
