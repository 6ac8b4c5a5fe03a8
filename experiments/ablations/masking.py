"""Padding versus masking on SST-2: pre-padding without a mask, post-padding without a mask, masking.

The article's model (one LSTM layer, its last state -> dense softmax, Keras's
fixed-length `pad_sequences`), so every sentence is padded to the longest train
sentence (52 words) and no length bucketing hides the padding:
  * `padding=pre, use_mask=False`: Keras's default; the LSTM reads the padding
    first, then the sentence, and its last state follows the last real word;
  * `padding=post, use_mask=False`: the LSTM reads the sentence, then up to 51
    padding steps, which wash its state out before the last one is read;
  * `padding=post, use_mask=True`: the mask freezes the carry on padded steps,
    so the last state is the state after the last real word (`rnnlm.recurrence.scan_layer`).
Two seeds each (mean ± std in the table); the same optimizer, steps and data.
`:phrases` asks the same question of GLUE's 67,349 training phrases (`sst2_phrases`),
padded to the longest phrase (52 words, as the sentences), batch 64 for 3 epochs.

    rnnlm sweep --config experiments/ablations/masking.py --workdir runs/ablation_masking   # 6 runs
    rnnlm sweep --config experiments/ablations/masking.py:phrases --workdir runs/ablation_masking_phrases
    rnnlm sweep --config experiments/ablations/masking.py:tiny                             # seconds

The table is runs/ablation_masking/results.md (valid acc, test acc; test at the best-valid checkpoint).
"""

from rnnlm import sweep
from rnnlm.config import experiment_config


ARGS = ("tiny", "phrases")  # what may follow the file name after ':' (`rnnlm` refuses anything else)


def get_config(arg=None):
    config = experiment_config("sst2_lstm", "tiny" if arg == "tiny" else "scratch")  # the article's model: no pretrained vectors
    config.name = "ablation_masking" + ("_tiny" if arg == "tiny" else "")
    config.data.bucket_by_length = False  # Keras's fixed maxlen: every batch is all the padding
    config.model.bidirectional = False
    config.model.pooling = "last"  # Keras's LSTM(64) -> Dense: the last state
    if arg != "tiny":
        config.train.epochs = 6
    if arg == "phrases":
        config.name = "ablation_masking_phrases"
        config.data.corpus = "sst2_phrases"
        config.train.update(batch_size=64, epochs=3, log_every=200)
    return config


def get_sweep(arg=None):
    settings = [{"data.padding": "pre", "model.use_mask": False},
                {"data.padding": "post", "model.use_mask": False},
                {"data.padding": "post", "model.use_mask": True}]
    return sweep.product(settings, sweep.axis("seed", (0,) if arg == "tiny" else (0, 1)))
