"""minGRU (Feng et al. 2024, "Were RNNs All We Needed?") on Tiny Shakespeare characters.

Every gate of minGRU reads x_t only, so a layer's recurrence is linear in the state
and `rnnlm.recurrence.scan_linear` solves a whole window with `jax.lax.associative_scan`
(O(log T) depth) instead of a step-by-step loop. The default is the char-rnn-sized model
of experiments/shakespeare_char.py with minGRU cells widened to the same parameter count
as its 2x512 LSTM (3.45M: 2 x 1,234 minGRU units); `:cpu60` is sized for an hour of
2 CPU cores at the parameter count of shakespeare_char.py:cpu15's 2x256 LSTM (875k:
2 x 612 units). minLSTM's equal-parameter widths are 998 and 497 (`model.hidden_size`).

    rnnlm train --config experiments/mingru_shakespeare.py --workdir runs/mingru_shakespeare
    rnnlm train --config experiments/mingru_shakespeare.py:cpu60 --workdir runs/mingru_shakespeare_cpu60
    rnnlm train --config experiments/mingru_shakespeare.py:cpu60 --config.model.cell=minlstm --config.model.hidden_size=497
    rnnlm train --config experiments/mingru_shakespeare.py:tiny
"""

from rnnlm.config import experiment_config


ARGS = ("cpu60", "tiny")  # what may follow the file name after ':' (`rnnlm` refuses anything else)


def get_config(arg=None):
    if arg == "tiny":
        config = experiment_config("shakespeare_char", "tiny")
        config.model.cell = "mingru"
        config.name = "mingru_shakespeare_tiny"
        return config
    config = experiment_config("shakespeare_char", "cpu15" if arg == "cpu60" else None)
    config.name = "mingru_shakespeare" + ("_cpu60" if arg == "cpu60" else "")
    config.model.cell = "mingru"
    # The hidden size of equal parameters (rnnlm.sweep.matched_hidden_size against the config's LSTM).
    config.model.hidden_size = 612 if arg == "cpu60" else 1234
    if arg == "cpu60":
        config.train.time_budget_minutes = 60.0
    return config
