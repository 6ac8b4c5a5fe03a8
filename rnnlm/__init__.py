"""rnnlm: recurrent neural language models (RNN, LSTM, GRU) in JAX.

    import rnnlm
    run = rnnlm.load_run("runs/ptb_small")     # a saved run: .evaluate, .generate, .predict (rnnlm/runs.py)
    rnnlm.evaluate_ensemble([run, rnnlm.load_run("runs/other")], "test")   # several runs as one

Importing the package loads nothing heavy; `load_run` imports JAX when first used.
"""

__version__ = "0.1.0"


def __getattr__(name):
    if name in ("load_run", "evaluate_ensemble"):
        from rnnlm import runs
        return getattr(runs, name)
    raise AttributeError(f"module 'rnnlm' has no attribute {name!r}")
