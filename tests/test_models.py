"""rnnlm/models.py: the language model (carried state, weight tying, dropout, precision), the classifier
(padding invariance), the one initialiser and parameter counter, and the configs that build them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnlm import fast
from rnnlm.cells import CELLS
from rnnlm.config import base_config
from rnnlm.data.classification import pad_sequences, padding_mask
from rnnlm.models import (OOV_ID, Classifier, LanguageModel, drop_words, classifier_from_config, count_params, init_params,
                          language_model_from_config)
from conftest import D, H
from test_cells import numpy_step
from test_fast import _equations

V, B, T = 11, 2, 8


@pytest.fixture(scope="module", params=["lstm", pytest.param("gru", marks=pytest.mark.slow)])
def model_and_params(request):
    model = LanguageModel(vocab_size=V, embed_size=6, hidden_size=5, num_layers=2, cell=request.param,
                          dropout=0.3, embed_dropout=0.2)
    return model, init_params(model, jax.random.PRNGKey(0))


def test_two_half_windows_with_carry_equal_one_window(model_and_params):
    model, params = model_and_params
    tokens = jax.random.randint(jax.random.PRNGKey(1), (B, T), 0, V)
    apply = jax.jit(lambda p, t, c: model.apply({"params": p}, t, c))
    full, full_carry = apply(params, tokens, model.initial_carry(B))
    first, carry = apply(params, tokens[:, :T // 2], model.initial_carry(B))
    second, half_carry = apply(params, tokens[:, T // 2:], carry)
    np.testing.assert_allclose(jnp.concatenate([first, second], axis=1), full, rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree_util.tree_leaves(half_carry), jax.tree_util.tree_leaves(full_carry)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_dropout_only_when_training(model_and_params):
    model, params = model_and_params
    tokens = jnp.ones((B, T), jnp.int32)
    carry = model.initial_carry(B)
    eval_a, _ = model.apply({"params": params}, tokens, carry)
    eval_b, _ = model.apply({"params": params}, tokens, carry)
    np.testing.assert_array_equal(eval_a, eval_b)
    train_a, _ = model.apply({"params": params}, tokens, carry, train=True, rngs={"dropout": jax.random.PRNGKey(1)})
    train_b, _ = model.apply({"params": params}, tokens, carry, train=True, rngs={"dropout": jax.random.PRNGKey(2)})
    assert not np.allclose(train_a, train_b)
    assert not np.allclose(train_a, eval_a)


@pytest.mark.slow
def test_unroll_factors_change_neither_outputs_nor_gradients(model_and_params):
    """eval_unroll=3 over T=8 leaves a remainder step; training's unroll applies to forward and backward."""
    model, params = model_and_params
    tokens = jax.random.randint(jax.random.PRNGKey(3), (B, T), 0, V)
    carry = model.initial_carry(B)
    rolled = model.clone(speed=fast.Speed(unroll=1, eval_unroll=1))
    unrolled = model.clone(speed=fast.Speed(unroll=3, eval_unroll=3))
    np.testing.assert_allclose(unrolled.apply({"params": params}, tokens, carry)[0],
                               rolled.apply({"params": params}, tokens, carry)[0], rtol=1e-6, atol=1e-7)

    def grads(m):
        def loss(p):
            logits, _ = m.apply({"params": p}, tokens, carry, train=True, rngs={"dropout": jax.random.PRNGKey(4)})
            return jnp.sum(jax.nn.log_softmax(logits)[..., 0])
        return jax.grad(loss)(params)
    for a, b in zip(jax.tree_util.tree_leaves(grads(unrolled)), jax.tree_util.tree_leaves(grads(rolled))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

    def scan_unrolls(train):  # which factor each pass hands to lax.scan
        m = model.clone(speed=fast.Speed(unroll=2, eval_unroll=3))
        jaxpr = jax.make_jaxpr(lambda p: m.apply({"params": p}, tokens, carry, train=train,
                                                 rngs={"dropout": jax.random.PRNGKey(4)}))(params)
        return {str(e.params["unroll"]) for e in _equations(jaxpr.jaxpr) if e.primitive.name == "scan"}
    assert scan_unrolls(train=False) == {"3"}
    assert scan_unrolls(train=True) == {"2"}


@pytest.mark.parametrize("embed,hidden", [(6, 6), (4, 6)])
def test_tied_weights_share_the_embedding(embed, hidden):
    model = LanguageModel(vocab_size=V, embed_size=embed, hidden_size=hidden, num_layers=1, tie_weights=True)
    params = init_params(model, jax.random.PRNGKey(0))
    assert "decoder" not in params
    assert ("projection" in params) == (embed != hidden)
    features, _ = model.apply({"params": params}, jnp.ones((1, 3), jnp.int32), model.initial_carry(1),
                              method=LanguageModel.features)
    logits, _ = model.apply({"params": params}, jnp.ones((1, 3), jnp.int32), model.initial_carry(1))
    np.testing.assert_allclose(logits, features @ params["embedding"].T + params["decoder_bias"][None, None],
                               rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("cell", ["lstm", "gru", "gru_cho"])
def test_bfloat16_matmuls_track_float32(cell):
    """matmul_dtype=bfloat16: same loss and gradients as float32 to bf16 precision; gradients stay float32."""
    full = LanguageModel(vocab_size=V, embed_size=6, hidden_size=8, num_layers=2, cell=cell, tie_weights=True)
    half = full.clone(matmul_dtype="bfloat16")
    tokens = jax.random.randint(jax.random.PRNGKey(3), (B, T), 0, V)
    params = init_params(full, jax.random.PRNGKey(0))

    def loss(params, model):
        logits, _ = model.apply({"params": params}, tokens, model.initial_carry(B))
        return -jax.nn.log_softmax(logits)[..., 1].mean()

    (l32, g32), (l16, g16) = [jax.jit(jax.value_and_grad(loss), static_argnums=1)(params, m) for m in (full, half)]
    np.testing.assert_allclose(l16, l32, rtol=1e-2)
    for a, b in zip(jax.tree_util.tree_leaves(g32), jax.tree_util.tree_leaves(g16)):
        assert b.dtype == jnp.float32
        assert float(jnp.linalg.norm(a - b)) <= 3e-2 * float(jnp.linalg.norm(a)) + 1e-6


def test_the_configs_sections_reach_the_models():
    config = base_config()
    config.model.update(cell="gru", embed_size=7, hidden_size=9, num_layers=3, tie_weights=True,
                        matmul_dtype="bfloat16", bidirectional=True, pooling="max")
    config.speed.update(reference=True, unroll=3, eval_unroll=4, fold_embedding=False, wavefront=False)
    lm = language_model_from_config(config, vocab_size=5)
    assert (lm.cell, lm.embed_size, lm.hidden_size, lm.num_layers, lm.tie_weights, lm.matmul_dtype) == (
        "gru", 7, 9, 3, True, "bfloat16")
    assert lm.speed == fast.Speed(reference=True, unroll=3, eval_unroll=4, fold_embedding=False, wavefront=False)
    classifier = classifier_from_config(config, vocab_size=5, num_classes=2)
    assert classifier.bidirectional and classifier.pooling == "max" and classifier.speed == lm.speed


def test_one_initialiser_and_one_counter():
    """init_params starts every model from its own example inputs; count_params counts a model from its
    initialiser's shapes (nothing allocated) and a tree alike, here against a count by hand."""
    model = LanguageModel(vocab_size=10, embed_size=4, hidden_size=3, num_layers=2, cell="lstm")
    by_hand = 10 * 4 + (4 * 12 + 3 * 12 + 12) + (3 * 12 + 3 * 12 + 12) + 3 * 10 + 10
    assert count_params(model) == count_params(init_params(model, jax.random.PRNGKey(1))) == by_hand
    classifier = Classifier(vocab_size=10, num_classes=2, embed_size=4, hidden_size=3, num_layers=1, cell="gru",
                            bidirectional=True)
    assert count_params(classifier) == 10 * 4 + 2 * (4 * 9 + 3 * 9 + 9 + 3) + 6 * 2 + 2


# --- the classifier --------------------------------------------------------------------------

POOLING = ("last", "mean", "max", "attention")
MODELS = [pytest.param(cell, bidirectional, POOLING[(i + bidirectional) % len(POOLING)], 9 + 2 * i + bidirectional,
                       marks=() if cell == "lstm" else pytest.mark.slow)
          for i, cell in enumerate(CELLS) for bidirectional in (False, True)]  # each pooling both ways


@pytest.mark.slow
@pytest.mark.parametrize("cell,bidirectional,pooling,width", MODELS)
def test_classifier_logits_do_not_depend_on_padding(cell, bidirectional, pooling, width):
    model = Classifier(vocab_size=20, num_classes=3, embed_size=6, hidden_size=5, num_layers=2, cell=cell,
                       bidirectional=bidirectional, pooling=pooling)
    params = init_params(model, jax.random.PRNGKey(0))
    sentence = [3, 4, 5, 6]
    # The same sentence pre- and post-padded (width - 4 padding steps; the width differs from
    # case to case), beside neighbours of other lengths padded either way.
    rows = [sentence, [7, 8, 9, 10, 11, 12, 13, 14, 15], sentence, [2], [16, 17, 18, 19, 2, 3]]
    sides = ["pre", "post", "post", "pre", "post"]
    tokens = np.stack([pad_sequences([r], width, side)[0] for r, side in zip(rows, sides)])
    mask = np.stack([padding_mask([len(r)], width, side)[0] for r, side in zip(rows, sides)])

    check_unmasked = cell == "lstm"  # once each way is enough; the suite's time is mostly compiling

    @jax.jit  # one compilation for all the applications
    def run(params):
        apply = lambda t, m: model.apply({"params": params}, t, m)
        return (apply(jnp.array([sentence]), jnp.ones((1, 4), bool))[0], apply(tokens, mask),
                apply(tokens, None) if check_unmasked else None)

    alone, logits, unmasked = run(params)
    np.testing.assert_allclose(logits[0], alone, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(logits[2], alone, rtol=1e-5, atol=1e-6)
    # Without the mask, padding is read like any token, and the logits move.
    assert not check_unmasked or not (np.allclose(unmasked[0], alone, rtol=1e-4, atol=1e-5)
                and np.allclose(unmasked[2], alone, rtol=1e-4, atol=1e-5))


@pytest.mark.slow
def test_attention_pooling_and_the_tanh_head_match_numpy():
    """pooling="attention" with head_size: a masked bi-LSTM's logits against numpy, written from the
    docstring: each direction over the valid tokens only, a_t = softmax_t(v . tanh(W y_t)), context
    sum_t a_t y_t, then tanh(context @ W_head + b_head) @ dense + bias. A row of padding alone gives
    finite logits and gradients."""
    model = Classifier(vocab_size=12, num_classes=3, embed_size=D, hidden_size=H, num_layers=1, cell="lstm",
                       bidirectional=True, pooling="attention", head_size=4, init_scale=0.5)
    params = init_params(model, jax.random.PRNGKey(5))
    params["dense_bias"] = jnp.array([0.3, -0.2, 0.1])
    params["head_bias"] = jnp.linspace(-0.5, 0.5, 4)
    params["attention_energy"] = 30.0 * params["attention_energy"]  # weights far from uniform
    rows = [[3, 4, 5], [6, 7, 8, 9, 10], [2, 11, 3, 4, 5, 6]]
    tokens = np.stack([pad_sequences([r], 6, "post")[0] for r in rows])
    mask = np.stack([padding_mask([len(r)], 6, "post")[0] for r in rows])
    logits = model.apply({"params": params}, tokens, mask)
    p = {k: np.asarray(v, np.float64) for k, v in params.items() if not isinstance(v, dict)}

    def direction(layer, xs):
        carry, hs = (np.zeros(H), np.zeros(H)), []
        for x in xs:
            carry, h = numpy_step("lstm", params[layer], carry, x)
            hs.append(h)
        return np.stack(hs)

    for row, out in zip(rows, logits):
        xs = p["embedding"][row]
        ys = np.concatenate([direction("layer_0", xs), direction("backward_layer_0", xs[::-1])[::-1]], axis=1)
        scores = np.tanh(ys @ p["attention_keys"]) @ p["attention_energy"]
        weights = np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum()
        assert weights.max() - weights.min() > 0.05  # far from a uniform mean
        hidden = np.tanh(weights @ ys @ p["head"] + p["head_bias"])
        np.testing.assert_allclose(out, hidden @ p["dense"] + p["dense_bias"], rtol=1e-5, atol=1e-6)
    empty = jnp.zeros((1, 6), bool)
    loss = lambda q: model.apply({"params": q}, jnp.zeros((1, 6), jnp.int32), empty).sum()
    assert np.isfinite(loss(params)) and all(np.isfinite(g).all() for g in jax.tree.leaves(jax.grad(loss)(params)))


@pytest.mark.slow
def test_word_dropout_replaces_real_tokens_by_oov_only_in_training():
    """model.word_dropout: a real token becomes <oov> (id 1) with the given probability, padding never does,
    and the classifier reads the replaced ids in training only."""
    tokens = jax.random.randint(jax.random.PRNGKey(2), (64, 50), 2, 20)
    mask = jnp.arange(50)[None, :] < jax.random.randint(jax.random.PRNGKey(3), (64, 1), 1, 51)
    tokens = jnp.where(mask, tokens, 0)
    out = drop_words(jax.random.PRNGKey(4), 0.3, tokens, mask)
    changed = out != tokens
    assert bool(jnp.all(out[changed] == OOV_ID)) and not bool(jnp.any(changed & ~mask))
    assert 0.27 < float(changed.sum() / mask.sum()) < 0.33
    kwargs = dict(vocab_size=20, num_classes=2, embed_size=6, hidden_size=3, num_layers=1, pooling="mean")
    model = Classifier(word_dropout=0.999, **kwargs)
    params = init_params(model, jax.random.PRNGKey(0))
    small, small_mask = jnp.array([[3, 4, 5, 0, 0], [6, 7, 8, 9, 10]]), jnp.array([[1, 1, 1, 0, 0], [1] * 5], bool)
    dropped = model.apply({"params": params}, small, small_mask, train=True, rngs={"dropout": jax.random.PRNGKey(1)})
    all_oov = model.apply({"params": params}, jnp.where(small_mask, OOV_ID, 0), small_mask)
    np.testing.assert_allclose(dropped, all_oov, rtol=1e-6)
    assert not np.allclose(model.apply({"params": params}, small, small_mask), all_oov, atol=1e-4)


@pytest.mark.slow
def test_residual_and_layer_norm_keep_the_fast_paths_equal_and_the_classifier_blind_to_padding():
    """model.residual and model.layer_norm: the language model's fast paths (bptt; the table and the
    wavefront turned off by the rules) equal its reference, and a masked bi-classifier's logits do not move
    with padding."""
    model = LanguageModel(vocab_size=5, embed_size=6, hidden_size=6, num_layers=2, cell="gru", residual=True,
                          layer_norm=True)
    tokens = jax.random.randint(jax.random.PRNGKey(3), (4, 7), 0, 5)
    plan = model.plan(tokens.shape)
    assert plan.bptt and not plan.input_table and not plan.wavefront
    assert LanguageModel(vocab_size=5, embed_size=6, hidden_size=6, num_layers=2, cell="gru",
                         residual=True).plan(tokens.shape).input_table  # a residual alone keeps the table
    params = init_params(model, jax.random.PRNGKey(0))
    params["norm_1"] = {"scale": jnp.linspace(0.5, 2.0, 6), "bias": jnp.linspace(-1.0, 1.0, 6)}
    carry = model.initial_carry(4)
    fast_logits = model.apply({"params": params}, tokens, carry)[0]
    ref_logits = model.clone(speed=fast.Speed(reference=True)).apply({"params": params}, tokens, carry)[0]
    np.testing.assert_allclose(fast_logits, ref_logits, rtol=1e-5, atol=1e-5)
    plain = {k: v for k, v in params.items() if not k.startswith("norm")}
    assert not np.allclose(LanguageModel(vocab_size=5, embed_size=6, hidden_size=6, num_layers=2, cell="gru").apply(
        {"params": plain}, tokens, carry)[0], fast_logits, atol=1e-3)

    classifier = Classifier(vocab_size=20, num_classes=3, embed_size=5, hidden_size=5, num_layers=2, cell="minlstm",
                            bidirectional=True, pooling="mean", residual=True, layer_norm=True)
    cparams = init_params(classifier, jax.random.PRNGKey(1))
    assert cparams["norm_1"]["scale"].shape == (10,)  # the second layer reads both directions
    sentence = [3, 4, 5, 6]
    alone = classifier.apply({"params": cparams}, jnp.array([sentence]), jnp.ones((1, 4), bool))
    padded = classifier.apply({"params": cparams}, jnp.array([[0, 0] + sentence, sentence + [0, 0]]),
                              jnp.array([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]], bool))
    np.testing.assert_allclose(padded, jnp.concatenate([alone, alone]), rtol=1e-5, atol=1e-6)
