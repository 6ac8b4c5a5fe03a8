"""AWD-LSTM's techniques at the 60-minute budget, each removed in turn (Merity et al. 2018's Table 4
asks the same of the full model at 500 epochs).

From `experiments/awd_lstm_ptb.py:cpu60` (60 minutes of training on 2 CPU cores each): the full
recipe, then one technique off per point: weight drop, the three dropouts' locking (a fresh mask per
position instead), embedding-row dropout, AR, TAR, variable-length BPTT, and the cosine anneal
replaced by NT-ASGD (a constant rate, averaging once validation stalls for 2 epochs, as awd); two
seeds each, so the table's mean ± std says how much of a difference is noise. 16 runs: 16 hours on
2 cores, one after another, every point's first seed before any second seed (a sweep cut short still
gives a whole table). `:short` is the same recipe with its cosine spanning one epoch and no time
limit (about 7 minutes a run on a quiet machine, 2 hours in all): a complete training at an epoch's
budget, whose figures do not depend on how busy the machine is. In one epoch validation runs once,
so NT-ASGD never triggers there: that point is a constant rate against the cosine.

    rnnlm sweep --config experiments/ablations/awd.py --workdir runs/ablation_awd
    rnnlm sweep --config experiments/ablations/awd.py:short --workdir runs/ablation_awd_short   # one epoch each
    rnnlm sweep --config experiments/ablations/awd.py:tiny                                      # seconds
"""

from rnnlm import sweep
from rnnlm.config import experiment_config

ARGS = ("tiny", "short")

REMOVED = {
    "full": {},
    "no_weight_drop": {"model.weight_drop": 0.0},
    "no_locking": {"model.locked_dropout": False},
    "no_embed_rows": {"model.embed_row_dropout": 0.0},
    "no_ar": {"train.ar": 0.0},
    "no_tar": {"train.tar": 0.0},
    "nt_asgd_not_cosine": {"train.lr_schedule": "constant", "train.averaging": "nonmono", "train.nonmono": 2},
    "no_variable_bptt": {"train.variable_bptt": False},
}


def get_config(arg=None):
    config = experiment_config("awd_lstm_ptb", "tiny" if arg == "tiny" else "cpu60")
    config.name = "ablation_awd" + {"tiny": "_tiny", "short": "_short"}.get(arg, "")
    if arg == "short":
        config.train.update(epochs=1, time_budget_minutes=0.0)
    return config


def get_sweep(arg=None):
    return sweep.product(sweep.axis("seed", (141,) if arg == "tiny" else (141, 142)), list(REMOVED.values()))
