"""rnnlm/state.py: a run's parameters start from its seed's init key, and a saved run's are read back."""

import jax
import numpy as np

from rnnlm import optim, sharding
from rnnlm.checkpoint import Checkpoints
from rnnlm.config import base_config
from rnnlm.models import LanguageModel, init_params
from rnnlm.state import create_train_state, initial_params, load_params, seed_keys


def test_the_train_state_starts_from_the_seeds_keys_and_reads_back(tmp_path):
    model = LanguageModel(vocab_size=7, embed_size=4, hidden_size=4, num_layers=1)
    tx = optim.make_optimizer(base_config().train, total_steps=1)
    state = create_train_state(model, tx, seed=3, mesh=sharding.make_mesh(1))
    init_key, dropout_key = seed_keys(3)
    for a, b, c in zip(jax.tree_util.tree_leaves(state.params), jax.tree_util.tree_leaves(initial_params(model, 3)),
                       jax.tree_util.tree_leaves(init_params(model, init_key))):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
    np.testing.assert_array_equal(state.rng, dropout_key)
    assert int(state.step) == 0
    checkpoints = Checkpoints(tmp_path)
    checkpoints.save(0, state, {"none": np.zeros(1, np.int32)}, {"epoch": 0})
    checkpoints.wait()
    checkpoints.close()
    params, step = load_params(tmp_path, model, "latest")
    assert step == 0
    for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(state.params)):
        np.testing.assert_array_equal(a, b)
