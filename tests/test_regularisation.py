"""AWD-LSTM's techniques (issue 20): locked and embedding dropout, weight drop, AR/TAR, per-layer widths,
NT-ASGD's trigger and average, variable-length BPTT, finetuning; each against an independent reference."""

import functools
import re
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rnnlm import models, optim, recurrence
from rnnlm.config import base_config, validate
from rnnlm.data.batching import make_streams, variable_lengths
from rnnlm.errors import UserError
from rnnlm.models import LanguageModel, drop_connect, drop_rows, init_params
from rnnlm.tasks.lm import activation_penalties, padded_length

V, E, H, B, T = 23, 8, 8, 5, 6


def awd_model(**fields):
    base = dict(vocab_size=V, embed_size=E, hidden_size=H, num_layers=3, tie_weights=True)
    return LanguageModel(**{**base, **fields})


@pytest.fixture(scope="module")
def tokens():
    return jnp.asarray(np.random.default_rng(0).integers(0, V, (B, T)), jnp.int32)


def features(model, params, tokens, rng, train=True, **kw):
    return model.apply({"params": params}, tokens, model.initial_carry(tokens.shape[0]), train=train,
                       rngs={"dropout": rng}, method=model.features, **kw)


def recorded_dropout(monkeypatch):
    """Every dropout call's (rate, input, output), wherever it is made."""
    calls = []
    original = recurrence.dropout

    def spy(rng, rate, x, locked=False):
        out = original(rng, rate, x, locked)
        if rng is not None and rate:
            calls.append((rate, x, out))
        return out
    monkeypatch.setattr(recurrence, "dropout", spy)
    monkeypatch.setattr(models, "dropout", spy)
    return calls


# --- locked dropout ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_locked_masks_are_constant_over_a_window_and_differ_between_streams_units_and_windows():
    x = jnp.ones((30, 64, 16))
    out = np.asarray(recurrence.dropout(jax.random.PRNGKey(1), 0.5, x, locked=True))
    assert (out == out[:1]).all()  # one mask per stream and unit, at every step
    assert set(np.unique(out)) == {0.0, 2.0}
    assert len({out[0, b].tobytes() for b in range(64)}) > 60  # streams differ
    assert 0 < out[0].mean(axis=0).std()  # units differ
    other = np.asarray(recurrence.dropout(jax.random.PRNGKey(2), 0.5, x, locked=True))
    assert (other[0] != out[0]).any()  # another window (key) draws another mask
    unlocked = np.asarray(recurrence.dropout(jax.random.PRNGKey(1), 0.5, x))
    assert (unlocked != unlocked[:1]).any()  # Zaremba's: a fresh mask per position


def test_dropout_keeps_the_expected_value():
    x = jnp.full((1, 20000, 8), 3.0)
    for locked in (False, True):
        out = recurrence.dropout(jax.random.PRNGKey(3), 0.4, x, locked=locked)
        assert abs(float(out.mean()) - 3.0) < 0.05


@pytest.mark.slow
def test_the_model_locks_all_three_dropouts_and_each_layer_draws_its_own(monkeypatch, tokens):
    model = awd_model(hidden_sizes=(H, H, E), dropout=0.4, embed_dropout=0.3, hidden_dropout=0.25,
                      locked_dropout=True)
    params = init_params(model, jax.random.PRNGKey(0))
    calls = recorded_dropout(monkeypatch)
    features(model, params, tokens, jax.random.PRNGKey(5))
    assert [rate for rate, _, _ in calls] == [0.3, 0.25, 0.25, 0.4]  # embedding, between 1-2 and 2-3, output
    masks = []
    for _, x, out in calls:  # time-major [T, B, D]; no input is exactly 0
        assert (np.asarray(x) != 0).all()
        dropped = np.asarray(out == 0)
        assert dropped.any() and (dropped == dropped[:1]).all()  # the same units of a stream at every step
        masks.append(dropped[0])
    assert (masks[1] != masks[2]).any()  # the two between-layer masks differ


def test_hidden_dropout_minus_one_is_dropout_and_zero_is_none(monkeypatch, tokens):
    params = init_params(awd_model(), jax.random.PRNGKey(0))
    rng = jax.random.PRNGKey(7)
    same = features(awd_model(dropout=0.3), params, tokens, rng)[0]
    explicit = features(awd_model(dropout=0.3, hidden_dropout=0.3), params, tokens, rng)[0]
    np.testing.assert_array_equal(same, explicit)
    calls = recorded_dropout(monkeypatch)
    features(awd_model(dropout=0.3, hidden_dropout=0.0), params, tokens, rng)
    assert [rate for rate, _, _ in calls] == [0.3]  # only the output's


# --- embedding dropout, weight drop -----------------------------------------------------------------

def test_embedding_dropout_drops_whole_rows_and_scales_the_rest():
    table = jax.random.normal(jax.random.PRNGKey(0), (400, 6))
    out = np.asarray(drop_rows(jax.random.PRNGKey(1), 0.25, table))
    zero = (out == 0).all(axis=1)
    assert 0.15 < zero.mean() < 0.35 and not ((out == 0).any(axis=1) & ~zero).any()
    np.testing.assert_allclose(out[~zero], np.asarray(table)[~zero] / 0.75, rtol=1e-6)


def spy_on(monkeypatch, name):
    """The outputs of every call of `rnnlm.models.<name>` made while the model runs."""
    outputs, original = [], getattr(models, name)

    def spy(*args):
        outputs.append(original(*args))
        return outputs[-1]
    monkeypatch.setattr(models, name, spy)
    return outputs


@pytest.mark.slow
def test_the_model_reads_the_row_dropped_embedding(tokens, monkeypatch):
    model = awd_model(embed_row_dropout=0.5)
    plain = awd_model()
    params = init_params(model, jax.random.PRNGKey(0))
    rng = jax.random.PRNGKey(4)
    outputs = spy_on(monkeypatch, "drop_rows")
    ours = features(model, params, tokens, rng)[0]
    (dropped,) = outputs
    zero = np.asarray((dropped == 0).all(axis=1))
    assert zero.any() and not (np.asarray(dropped == 0).any(axis=1) & ~zero).any()
    # The decoder keeps the whole (tied) embedding: only the features are compared.
    np.testing.assert_allclose(ours, features(plain, {**params, "embedding": dropped}, tokens, rng, train=False)[0],
                               rtol=1e-6, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("reference", [False, True], ids=["fast", "reference"])
def test_weight_drop_equals_the_masked_matrix_and_its_gradient_reaches_the_raw_one(tokens, reference, monkeypatch):
    """Outputs and gradients: the model with weight drop against the plain model run on the masked w_h,
    the raw matrix's gradient by the chain rule through the mask (on the hand-written backward pass and
    on the reference)."""
    from rnnlm.fast import Speed
    speed = Speed(reference=reference)
    model, plain = awd_model(weight_drop=0.5, speed=speed), awd_model(speed=speed)
    params = init_params(model, jax.random.PRNGKey(0))
    rng = jax.random.PRNGKey(9)
    layers = [params[f"layer_{d}"] for d in range(3)]
    outputs = spy_on(monkeypatch, "drop_connect")
    features(model, params, tokens, rng)
    masked = outputs[0]
    masked_params = {**params, **{f"layer_{d}": p for d, p in enumerate(masked)}}

    def loss(m, p, train):
        return jnp.sum(jnp.sin(features(m, p, tokens, rng, train=train)[0]))

    np.testing.assert_allclose(loss(model, params, True), loss(plain, masked_params, False), rtol=1e-6)
    grads = jax.grad(functools.partial(loss, model, train=True))(params)
    masked_grads = jax.grad(functools.partial(loss, plain, train=False))(masked_params)
    for d in range(3):
        scale = np.asarray(masked[d]["w_h"]) / np.where(np.asarray(layers[d]["w_h"]) == 0, 1,
                                                         np.asarray(layers[d]["w_h"]))
        np.testing.assert_allclose(grads[f"layer_{d}"]["w_h"], np.asarray(masked_grads[f"layer_{d}"]["w_h"]) * scale,
                                   rtol=1e-5, atol=1e-6)
        assert set(np.round(np.unique(scale), 5)) <= {0.0, 2.0}


def test_weight_drop_mask_is_one_per_window_for_all_steps_and_streams():
    layers = [{"w_h": jnp.ones((16, 64))}, {"w_h": jnp.ones((16, 64))}]
    a = drop_connect(jax.random.PRNGKey(0), 0.5, layers)
    b = drop_connect(jax.random.PRNGKey(1), 0.5, layers)
    assert (a[0]["w_h"] != a[1]["w_h"]).any()  # layers differ
    assert (a[0]["w_h"] != b[0]["w_h"]).any()  # windows differ
    assert abs(float(jnp.mean(a[0]["w_h"])) - 1.0) < 0.1  # the expected value is kept


# --- widths -----------------------------------------------------------------------------------------

@pytest.mark.slow
def test_per_layer_widths_build_awds_stack_and_tie_without_a_projection(tokens):
    model = awd_model(hidden_sizes=(12, 10, E))
    params = init_params(model, jax.random.PRNGKey(0))
    assert params["layer_0"]["w_h"].shape == (12, 48) and params["layer_1"]["w_x"].shape == (12, 40)
    assert params["layer_2"]["w_h"].shape == (E, 4 * E) and "projection" not in params
    carry = model.initial_carry(B)
    assert [c[0].shape[-1] for c in carry] == [12, 10, E]
    out, _ = model.apply({"params": params}, tokens, carry)
    assert out.shape == (B, T, V)
    uniform, plain = awd_model(hidden_sizes=(H, H, H)), awd_model()
    same = init_params(uniform, jax.random.PRNGKey(1))
    assert jax.tree_util.tree_structure(same) == jax.tree_util.tree_structure(init_params(plain, jax.random.PRNGKey(1)))
    np.testing.assert_array_equal(uniform.apply({"params": same}, tokens, uniform.initial_carry(B))[0],
                                  plain.apply({"params": same}, tokens, plain.initial_carry(B))[0])


# --- AR and TAR ----------------------------------------------------------------------------------------

def test_ar_and_tar_against_numpy():
    rng = np.random.default_rng(0)
    raw, dropped = rng.normal(size=(7, 3, 4)).astype(np.float32), rng.normal(size=(7, 3, 4)).astype(np.float32)
    weights = np.ones((3, 7), np.float32)
    weights[2, 5:] = 0  # the grid's padding
    out = activation_penalties(jnp.asarray(raw), jnp.asarray(dropped), jnp.asarray(weights), 2.0, 1.0)
    real = [(t, b) for t in range(7) for b in range(3) if weights[b, t]]
    ar = 2.0 * np.mean([dropped[t, b] ** 2 for t, b in real])
    pairs = [(t, b) for t, b in real if t > 0 and weights[b, t - 1]]
    tar = 1.0 * np.mean([(raw[t, b] - raw[t - 1, b]) ** 2 for t, b in pairs])
    np.testing.assert_allclose(out["ar"], ar, rtol=1e-5)
    np.testing.assert_allclose(out["tar"], tar, rtol=1e-5)
    assert activation_penalties(jnp.asarray(raw), jnp.asarray(dropped), jnp.asarray(weights), 0.0, 1.0).keys() == {"tar"}


# --- NT-ASGD --------------------------------------------------------------------------------------------

def first_trigger(losses, n):
    """awd-lstm-lm main.py's rule, written out: at evaluation t (0-based), t earlier losses logged,
    switch when t > n and the loss is above the smallest of those logged at 0 .. t - n - 1."""
    for t, loss in enumerate(losses):
        if t > n and loss > min(losses[i] for i in range(0, t - n)):
            return t
    return None


@pytest.mark.parametrize("n", [1, 2, 5])
def test_the_nonmono_trigger_against_an_independent_reading_of_the_rule(n):
    rng = np.random.default_rng(n)
    for _ in range(200):
        losses = list(np.cumsum(rng.normal(-0.1, 0.3, size=25)) + 10)
        trigger = optim.Averaging("nonmono", n)
        fired = [t for t, loss in enumerate(losses) if trigger.should_start(loss, step=100 * t)]
        expected = first_trigger(losses, n)
        assert fired == ([] if expected is None else [expected])
        assert trigger.started_step == (None if expected is None else 100 * expected)
    always = optim.Averaging("always", 5)
    assert not any(always.should_start(x, 0) for x in (3, 2, 5, 6, 7, 8, 9, 10))


def test_tail_averaging_starts_once_at_the_end_of_its_epoch_and_resumes_without_firing_again():
    trigger = optim.Averaging("epoch", 5, start_epoch=3)
    losses = [5.0, 4.0, 3.0, 2.0, 1.0, 0.5]  # improving throughout: nonmono would never fire
    fired = [epoch for epoch, loss in enumerate(losses, 1) if trigger.should_start(loss, 10 * epoch, epoch)]
    assert fired == [3] and trigger.started_step == 30
    resumed = optim.Averaging.from_config(
        _train_config(averaging="epoch", average_start_epoch=3, epochs=10), trigger.to_dict())
    assert resumed.started_step == 30 and not resumed.should_start(0.1, 70, 7)
    late = optim.Averaging.from_config(_train_config(averaging="epoch", average_start_epoch=3, epochs=10),
                                       optim.Averaging("epoch", 5, start_epoch=3).to_dict())
    assert late.should_start(9.0, 40, 4)  # a run resumed past its start epoch before the switch switches at once


def _train_config(**fields):
    config = base_config().train
    config.update(fields)
    return config


def test_the_average_is_the_mean_of_the_iterates_since_the_trigger():
    rng = np.random.default_rng(0)
    iterates = [{"w": jnp.asarray(rng.normal(size=(3, 2)), jnp.float32), "b": jnp.asarray(rng.normal(size=4), jnp.float32)}
                for _ in range(12)]
    average = optim.initial_average(iterates[0], "nonmono")
    for k, params in enumerate(iterates):
        if k == 5:
            average = optim.start_averaging(average)
        average = optim.update_average(average, params)
    assert int(average["count"]) == 7
    for name in ("w", "b"):
        np.testing.assert_allclose(average["params"][name], np.mean([np.asarray(p[name]) for p in iterates[5:]], axis=0),
                                   rtol=1e-6, atol=1e-6)


def test_evaluation_reads_the_average_once_it_holds_an_iterate():
    from rnnlm.state import TrainState
    params = {"w": jnp.ones(3)}
    average = optim.initial_average({"w": jnp.zeros(3)}, "nonmono")
    state = TrainState(step=jnp.int32(0), params=params, opt_state=(), rng=jax.random.PRNGKey(0), average=average)
    np.testing.assert_array_equal(optim.evaluation_params(state)["w"], params["w"])  # not on yet
    on = optim.update_average(optim.start_averaging(average), {"w": jnp.full(3, 4.0)})
    np.testing.assert_array_equal(optim.evaluation_params(state.replace(average=on))["w"], jnp.full(3, 4.0))


def test_sgd_weight_decay_is_l2_added_to_the_clipped_gradient_and_the_lr_scale_is_the_rates():
    config = base_config().train
    config.update(optimizer="sgd", learning_rate=30.0, weight_decay=0.1, grad_clip=0.25)
    tx = optim.make_optimizer(config, 10)
    params = {"w": jnp.asarray([1.0, -2.0, 3.0])}
    grads = {"w": jnp.asarray([3.0, 4.0, 0.0])}  # norm 5, clipped to 0.25
    state = tx.init(params)
    new, _, _, _ = optim.apply_gradients(tx, grads, state, params, jnp.float32(1.0), False, jnp.float32(0.5))
    expected = np.asarray(params["w"]) - 30.0 * 0.5 * (np.asarray(grads["w"]) * 0.25 / 5.0 + 0.1 * np.asarray(params["w"]))
    np.testing.assert_allclose(new["w"], expected, rtol=1e-6)
    momentum = base_config().train
    momentum.update(optimizer="sgd", learning_rate=1.0, momentum=0.9)
    for name in ("sgd", "adam"):
        momentum.optimizer = name
        tx, tx_half = optim.make_optimizer(momentum, 10), None
        half = base_config().train
        half.update(optimizer=name, learning_rate=0.5, momentum=0.9)
        tx_half = optim.make_optimizer(half, 10)
        s, s_half, p, p_half = tx.init(params), tx_half.init(params), params, params
        for _ in range(3):
            p, s, _, _ = optim.apply_gradients(tx, grads, s, p, jnp.float32(1.0), False, jnp.float32(0.5))
            p_half, s_half, _, _ = optim.apply_gradients(tx_half, grads, s_half, p_half, jnp.float32(1.0), False)
        np.testing.assert_allclose(p["w"], p_half["w"], rtol=1e-6)


# --- variable-length BPTT ----------------------------------------------------------------------------

def test_drawn_lengths_follow_awd_and_tile_the_streams_once():
    lengths = variable_lengths(np.random.default_rng(0), 70, 200_000)
    assert lengths.sum() == 200_000
    body = lengths[:-1]
    assert body.min() >= 5 and body.max() <= 90
    assert 0.03 < np.mean(body < 50) < 0.07  # the bptt / 2 draws, 5%
    np.testing.assert_allclose(np.mean(body[body >= 50]), 69.5, atol=0.3)  # int() truncates: mean ~ bptt - 0.5
    np.testing.assert_allclose(np.std(body[body >= 50]), 5.0, atol=0.2)
    assert len({padded_length(int(n), 8) for n in lengths}) <= 12  # a bounded number of compiled shapes


def test_drawn_windows_hold_every_target_once_and_mask_their_padding():
    ids = np.arange(1, 2001) % 37
    streams = make_streams(ids, 4, 16)
    lengths = variable_lengths(np.random.default_rng(3), 16, streams.columns)
    seen, start = [], 0
    for n in lengths:
        window = streams.span(start, int(n), padded_length(int(n), 8))
        assert window["tokens"].shape[1] % 8 == 0 and (window["mask"][:, n:] == 0).all()
        assert (window["weights"][:, n:] == 0).all()
        seen.append(window["targets"][:, :n][window["weights"][:, :n] > 0])
        start += int(n)
    np.testing.assert_array_equal(np.sort(np.concatenate(seen)), np.sort(ids[1:]))


@pytest.mark.slow
def test_a_masked_padding_step_keeps_the_carry(tokens):
    model = awd_model()
    params = init_params(model, jax.random.PRNGKey(0))
    carry = model.initial_carry(B)
    short, short_carry = model.apply({"params": params}, tokens[:, :4], carry, method=model.features)
    mask = jnp.arange(T)[None, :] < 4
    padded, padded_carry = model.apply({"params": params}, tokens, carry, jnp.broadcast_to(mask, (B, T)),
                                       method=model.features)
    np.testing.assert_allclose(padded[:, :4], short, rtol=1e-6, atol=1e-6)
    for a, b in zip(jax.tree_util.tree_leaves(padded_carry), jax.tree_util.tree_leaves(short_carry)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


# --- settings ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("field, value, message", [
    ("model.weight_drop", 1.0, "model.weight_drop must be in [0, 1)"),
    ("model.embed_row_dropout", -0.1, "model.embed_row_dropout must be in [0, 1)"),
    ("model.hidden_dropout", 1.5, "model.hidden_dropout must be in [0, 1) or -1"),
    ("train.ar", -1.0, "train.ar must not be negative"),
    ("train.tar", -0.5, "train.tar must not be negative"),
    ("train.nonmono", 0, "train.nonmono must be at least 1"),
    ("train.averaging", "polyak", "unknown train.averaging"),
    ("train.weight_decay", -1e-6, "train.weight_decay must not be negative"),
    ("model.hidden_sizes", (8, 8), "model.hidden_sizes must list 3 positive widths"),
])
def test_bad_settings_are_one_line_errors(field, value, message):
    config = base_config()
    config.model.num_layers = 3
    section, key = field.split(".")
    config[section][key] = value
    with pytest.raises(UserError, match=re.escape(message)):
        validate(config)


@pytest.mark.parametrize("start", [0, 10, -1])
def test_tail_averaging_must_start_inside_the_run(start):
    config = base_config()
    config.train.update(averaging="epoch", average_start_epoch=start, epochs=10)
    with pytest.raises(UserError, match=re.escape(f"must be from 1 to train.epochs - 1 (9), got {start}")):
        validate(config)


def test_bad_combinations_are_one_line_errors():
    config = base_config()
    config.train.update(variable_bptt=True, bptt=4)
    with pytest.raises(UserError, match="at least 5"):
        validate(config)
    config = base_config()
    config.model.update(cell="mingru", weight_drop=0.5)
    with pytest.raises(UserError, match="has none"):
        validate(config)
    config = base_config()
    config.task = "classify"
    config.model.locked_dropout = True
    with pytest.raises(UserError, match="model.locked_dropout is for task=lm"):
        validate(config)


def test_every_experiment_variant_is_valid():
    from rnnlm.config import experiment_config
    for name in ("awd_lstm_ptb", "awd_lstm_wt2"):
        for arg in (None, "cpu60", "finetune", "cpu60_finetune", "tiny"):
            config = experiment_config(name, arg)
            validate(config)
            assert len(config.model.hidden_sizes) == config.model.num_layers
            assert config.model.hidden_sizes[-1] == config.model.embed_size  # tied without a projection
    wt2 = experiment_config("awd_lstm_wt2")
    assert (wt2.train.batch_size, wt2.model.embed_dropout, wt2.model.hidden_dropout, wt2.seed) == (80, 0.65, 0.2, 1882)
    assert pathlib.Path(experiment_config("awd_lstm_wt2", "finetune").train.init_from).name == "awd_lstm_wt2"
