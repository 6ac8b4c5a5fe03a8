"""rnnlm: recurrent neural language models (RNN, LSTM, GRU) in JAX."""

__version__ = "0.1.0"
