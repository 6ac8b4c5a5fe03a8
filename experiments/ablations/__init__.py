"""Ablations: experiment files with `get_sweep()`, run by `rnnlm sweep --config experiments/ablations/<name>.py`.

    cell_type.py    rnn / lstm / gru / gru_cho / gru_seed at equal parameter count (characters, PTB)
    hidden_size.py  LSTM hidden size 64 ... 1024 on PTB: validation perplexity against parameters
    masking.py      SST-2 classifier: pre-padding / post-padding without a mask, and masking
    tokenizer.py    char / word / SentencePiece on PTB, compared by per-word perplexity and bits per char
"""
