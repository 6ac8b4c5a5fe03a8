"""Studies of what recurrent networks do, each one command away.

    gradients.py    ‖∂ loss_t / ∂ h_{t-k}‖ against the lag k, trained vs freshly initialised (rnnlm study gradients)
    synthetic.py    the adding problem: success rate against distance per cell (rnnlm study synthetic)
    activations.py  hidden states, gates and surprisal of a run over a text; units that track a text feature
                    (rnnlm visualize, rnnlm units)
"""
