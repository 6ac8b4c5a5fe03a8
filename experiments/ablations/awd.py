"""AWD-LSTM's techniques at the 60-minute budget, each removed in turn (Merity et al. 2018's Table 4
asks the same of the full model at 500 epochs).

From `experiments/awd_lstm_ptb.py:cpu60`, at the 8 epochs its hour buys on 2 quiet CPU cores (the
time limit is dropped: every point trains the same steps, so a busy machine or a resume after a kill
changes the wall time, never the figure, and a faster point gets no extra steps): the full recipe,
then one technique off per point: weight drop, the three dropouts' locking (a fresh mask per
position instead), embedding-row dropout, AR, TAR, variable-length BPTT, and the cosine anneal
replaced by NT-ASGD (a constant rate, averaging once validation stalls for 2 epochs, as awd); two
seeds each, so the table's mean ± std says how much of a difference is noise. 16 runs of about 55
minutes (8 epochs and their validations), one after another, every point's first seed before any
second seed (a sweep cut short still gives a whole table; rerun, it skips finished points and resumes
a killed one exactly). `:short` is the same recipe with its cosine spanning one epoch (about 7
minutes a run on a quiet machine, 2 hours in all). In one epoch validation runs once,
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
    config.train.time_budget_minutes = 0.0  # the budget is the hour run's 8 epochs, not the clock
    if arg == "short":
        config.train.epochs = 1
    return config


def get_sweep(arg=None):
    return sweep.product(sweep.axis("seed", (141,) if arg == "tiny" else (141, 142)), list(REMOVED.values()))
