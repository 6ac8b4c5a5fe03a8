"""WikiText-2 with SentencePiece subwords: the wikitext2 recipe (PyTorch's word_language_model) on BPE pieces.

A 16,000-piece BPE model is trained on the train split (deterministic; saved as
runs/wikitext2_spm/tokenizer.model and reused on resume, eval and generate).
Everything else is experiments/wikitext2.py: 2x650 tied LSTM, dropout 0.5, SGD
lr 20 divided by 4 on a plateau, clip 0.25, BPTT 35 (subword steps here).
Compare it with the word model by per-word perplexity, not per-token
perplexity (see docs/results.md and rnnlm/metrics.py).

    rnnlm train --config experiments/wikitext2_spm.py --workdir runs/wikitext2_spm
    rnnlm eval --workdir runs/wikitext2_spm --split test      # per piece, per word and bits per char
    rnnlm train --config experiments/wikitext2_spm.py --config.data.spm_model_type=unigram --workdir runs/wikitext2_unigram
    rnnlm train --config experiments/wikitext2_spm.py --config.data.spm_model=path/to/existing.model
    rnnlm train --config experiments/wikitext2_spm.py:tiny    # seconds
"""

from rnnlm.config import experiment_config


ARGS = ("tiny",)  # what may follow the file name after ':' (`rnnlm` refuses anything else)


def get_config(arg=None):
    config = experiment_config("wikitext2", arg)
    config.name = "wikitext2_spm" + ("_tiny" if arg == "tiny" else "")
    config.data.tokenizer = "sentencepiece"
    config.data.spm_model_type = "bpe"
    config.data.spm_vocab_size = 16000 if arg != "tiny" else 1000
    if arg == "tiny":  # score the ~350,000-piece valid split in few windows
        config.eval.batch_size, config.eval.bptt = 64, 64
    return config
