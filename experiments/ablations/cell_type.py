"""Which cell? rnn / lstm / gru / gru_cho / gru_seed at equal parameter count, on characters and on PTB.

The reference is the config's cell (an LSTM) at its hidden size; every other cell
gets the hidden size that brings its whole model (embedding, recurrent layer,
softmax) nearest to the reference's parameter count (`rnnlm.sweep.matched_hidden_size`).
On PTB the 10,000-word softmax holds most parameters, so the sizes stay close; on
characters the recurrent layer dominates and a vanilla RNN gets about twice the
LSTM's units. Every cell has the same optimizer, schedule and number of steps;
three seeds on characters, two on PTB (mean ± std in the table).

`:char_wall` and `:ptb_wall` ask issue 22's question instead: the LSTM, the
Mogrifier (5 rounds; rank 32 on characters, 84 on PTB as the paper's 24M
model), minGRU and minLSTM, two layers each, at equal parameters and **equal wall time**, each
trained for 60 minutes (`train.time_budget_minutes`; one seed, one run at a
time on an otherwise idle machine) and scored on test at the checkpoint that
validated best. Dropout is 0.2 on characters (0.3 on PTB) between layers and
before the softmax, the same for every cell.

    rnnlm sweep --config experiments/ablations/cell_type.py:char --workdir runs/ablation_cell_type_char  # 15 runs, ~1 h on 2 idle CPU cores
    rnnlm sweep --config experiments/ablations/cell_type.py:ptb --workdir runs/ablation_cell_type_ptb    # 10 runs, ~2 h on 2 idle CPU cores
    rnnlm sweep --config experiments/ablations/cell_type.py:char_wall --workdir runs/cell_wall_char      # 4 runs, 4 h 10 min
    rnnlm sweep --config experiments/ablations/cell_type.py:ptb_wall --workdir runs/cell_wall_ptb        # 4 runs, 4 h 10 min
    rnnlm sweep --config experiments/ablations/cell_type.py:tiny                                         # ~1 min (char_tiny; ptb_tiny too)
    rnnlm plot --workdir runs/ablation_cell_type_char                          # the training curves, overlaid
    rnnlm study gradients --workdir runs/ablation_cell_type_char               # gradient norm against lag per cell

The tables are runs/ablation_cell_type_<char|ptb>/results.md (and results.json, results.png).
"""

from rnnlm import sweep
from rnnlm.config import base_config, make_tiny

CELLS = ("rnn", "lstm", "gru", "gru_cho", "gru_seed")
WALL_CELLS = ("lstm", "mogrifier", "mingru", "minlstm")  # the `_wall` variants: issue 22's comparison
ARGS = ("char", "ptb", "tiny", "char_tiny", "ptb_tiny", "char_wall", "ptb_wall")
WALL_MINUTES = 60.0


def _parse(arg):
    arg = arg or "char"
    if arg not in ARGS:
        raise ValueError(f"cell_type: unknown argument {arg!r}; choose one of {', '.join(ARGS)}")
    return ("ptb" if arg.startswith("ptb") else "char"), arg.endswith("tiny")


def _wall(arg) -> bool:
    return bool(arg) and arg.endswith("_wall")


def get_config(arg=None):
    corpus, tiny = _parse(arg)
    config = base_config()
    config.name = f"ablation_cell_type_{corpus}"
    config.model.cell = "lstm"
    config.model.num_layers = 1
    config.train.optimizer = "adam"
    config.train.learning_rate = 2e-3
    config.train.lr_schedule = "constant"
    config.train.grad_clip = 5.0
    config.sample.length = 0  # a sweep compares numbers; sample with rnnlm generate --workdir <run>
    if corpus == "char":
        config.data.corpus = "tinyshakespeare"
        config.data.tokenizer = "char"
        config.model.embed_size = 64
        config.model.hidden_size = 256
        config.train.batch_size = 32
        config.train.bptt = 64
        config.train.epochs = 3
        config.train.log_every = 50
    else:
        config.data.corpus = "ptb"
        config.data.tokenizer = "word"
        config.model.embed_size = 200
        config.model.hidden_size = 200
        config.model.dropout = 0.3
        config.train.batch_size = 20
        config.train.bptt = 35
        config.train.epochs = 2
        config.train.log_every = 100
        config.train.checkpoint_every = 1000
    if _wall(arg):
        config.name = f"cell_wall_{corpus}"
        config.model.mogrifier_rank = 84 if corpus == "ptb" else 32
        config.model.num_layers = 2  # a minGRU layer's gates read only its input: one layer would be a filter
        config.train.update(time_budget_minutes=WALL_MINUTES, epochs=1000)  # the budget ends every run
        if corpus == "char":  # an hour is ~100 epochs of Tiny Shakespeare: without dropout every cell overfits
            config.model.dropout = 0.2
    if tiny:
        make_tiny(config)
        config.model.num_layers = 1
        config.sample.length = 0
    return config


def get_sweep(arg=None, config=None):
    corpus, tiny = _parse(arg)
    config = config if config is not None else get_config(arg)
    vocab = sweep.vocab_size(config)
    target = sweep.model_params(config, vocab)
    cells = [{"model.cell": cell, "model.hidden_size": sweep.matched_hidden_size(config, vocab, cell, target)}
             for cell in (WALL_CELLS if _wall(arg) else CELLS)]
    seeds = (0,) if tiny or _wall(arg) else (0, 1, 2) if corpus == "char" else (0, 1)
    return sweep.product(cells, sweep.axis("seed", seeds))
