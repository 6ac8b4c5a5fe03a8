"""What hidden size? A one-layer LSTM on PTB at 64, 128, 256, 512 and 1024 units.

The article's FAQ answers "choose by experiment and cross-validation": this sweep is
that experiment. Everything but `model.hidden_size` is fixed (embedding 200, dropout
0.3, Adam 2e-3, one epoch, two seeds). `results.md` states the size with the best mean
validation perplexity and the smallest size within one standard deviation of it (the
one-standard-error rule), which is the one to choose; `results.png` plots validation
perplexity against parameters.

    rnnlm sweep --config experiments/ablations/hidden_size.py --workdir runs/ablation_hidden_size  # 10 runs, ~2-3 h on 2 idle CPU cores (1024 is half of it)
    rnnlm sweep --config experiments/ablations/hidden_size.py --workdir runs/ablation_hidden_size --config.train.epochs=4  # longer
    rnnlm sweep --config experiments/ablations/hidden_size.py:tiny                              # ~1 min
    rnnlm plot --workdir runs/ablation_hidden_size
"""

from rnnlm import sweep
from rnnlm.config import base_config, make_tiny

SIZES = (64, 128, 256, 512, 1024)


ARGS = ("tiny",)  # what may follow the file name after ':' (`rnnlm` refuses anything else)


def get_config(arg=None):
    if arg not in (None, "tiny"):
        raise ValueError(f"hidden_size: unknown argument {arg!r}; choose tiny or nothing")
    config = base_config()
    config.name = "ablation_hidden_size"
    config.data.corpus = "ptb"
    config.data.tokenizer = "word"
    config.model.cell = "lstm"
    config.model.embed_size = 200
    config.model.hidden_size = 256
    config.model.num_layers = 1
    config.model.dropout = 0.3
    config.train.batch_size = 20
    config.train.bptt = 35
    config.train.epochs = 1
    config.train.optimizer = "adam"
    config.train.learning_rate = 2e-3
    config.train.grad_clip = 5.0
    config.train.log_every = 100
    config.train.checkpoint_every = 500
    config.sample.length = 0
    if arg == "tiny":
        make_tiny(config)
        config.model.num_layers = 1
        config.sample.length = 0
    return config


def get_sweep(arg=None):
    sizes = (8, 16) if arg == "tiny" else SIZES
    return sweep.product(sweep.axis("model.hidden_size", sizes), sweep.axis("seed", (0, 1)))
