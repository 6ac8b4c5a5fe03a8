"""rnnlm: recurrent neural language models (RNN, LSTM, GRU) in JAX.

    import rnnlm
    run = rnnlm.load_run("runs/ptb_small")     # a saved run: .evaluate, .generate, .predict (rnnlm/runs.py)

Importing the package loads nothing heavy; `load_run` imports JAX when first used.
"""

__version__ = "0.1.0"


def __getattr__(name):
    if name == "load_run":
        from rnnlm.runs import load_run
        return load_run
    raise AttributeError(f"module 'rnnlm' has no attribute {name!r}")
