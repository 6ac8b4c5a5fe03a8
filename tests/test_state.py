"""rnnlm/state.py: a run's parameters start from its seed's init key, and a saved run's are read back."""

import jax
import numpy as np
import pytest

from rnnlm import optim, sharding
from rnnlm.checkpoint import Checkpoints
from rnnlm.config import base_config
from rnnlm.errors import UserError
from rnnlm.models import Classifier, LanguageModel, count_params, init_params
from rnnlm.state import (check_fits, create_train_state, device_memory, initial_params, load_params, seed_keys,
                         train_bytes)


@pytest.mark.slow
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


def test_the_memory_estimate_counts_parameters_optimizer_and_activations():
    model = LanguageModel(vocab_size=11, embed_size=3, hidden_size=5, num_layers=2, cell="lstm")
    config = base_config().train
    config.optimizer = "adam"
    need = train_bytes(model, optim.make_optimizer(config, total_steps=1), (6, 7))
    assert need["parameters"] == need["gradients"] == 4 * count_params(model)
    assert 2 * need["parameters"] <= need["optimizer"] <= 2 * need["parameters"] + 64  # Adam: mu, nu and counters
    # per token: the embedding (3) and per layer 4 gate pre-activations, the carry (c, h) and the output of 5 units
    assert need["activations"] == 4 * 6 * 7 * (3 + 2 * (4 + 2 + 1) * 5)
    bidirectional = Classifier(vocab_size=11, num_classes=2, embed_size=3, hidden_size=5, num_layers=1, cell="gru",
                               bidirectional=True)
    assert train_bytes(bidirectional, optim.make_optimizer(config, 1), (1, 1))["activations"] == 4 * (3 + 2 * 5 * 5)
    config.optimizer = "sgd"
    assert train_bytes(model, optim.make_optimizer(config, 1), (6, 7))["optimizer"] < need["optimizer"] / 2


def test_a_model_larger_than_the_memory_is_refused_naming_both_numbers():
    model = LanguageModel(vocab_size=10_000, embed_size=200, hidden_size=100_000, num_layers=2)
    have, what = device_memory()
    assert have > 1e8 and what
    with pytest.raises(UserError, match=r"needs at least [\d,.]+ GB .* is [\d,.]+ GB"):
        check_fits(model, optim.make_optimizer(base_config().train, 1), (20, 35))
    check_fits(LanguageModel(vocab_size=10, embed_size=4, hidden_size=4, num_layers=1),
               optim.make_optimizer(base_config().train, 1), (20, 35))  # a small one passes
