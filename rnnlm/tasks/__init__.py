"""What the one training loop (`rnnlm.train`) needs to know about a task, with the same names per task.

    lm.py        language models: streams of token windows, a carried state, perplexity
    classify.py  text classifiers: padded and masked sentence batches, accuracy
    base.py      the interface both implement (`Task`) and what a saved run offers (`Run`)
    registry.py  task name -> module
"""
