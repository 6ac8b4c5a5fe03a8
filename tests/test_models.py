"""The language model: carried state, weight tying, dropout."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnlm import recurrence
from rnnlm.cells import get_cell
from rnnlm.config import base_config
from rnnlm.models import WAVEFRONT_MAX_HIDDEN, LanguageModel, language_model_from_config

V, B, T = 11, 2, 8


@pytest.fixture(scope="module", params=["lstm", "gru"])
def model_and_params(request):
    model = LanguageModel(vocab_size=V, embed_size=6, hidden_size=5, num_layers=2, cell=request.param,
                          dropout=0.3, embed_dropout=0.2)
    params = model.init({"params": jax.random.PRNGKey(0)}, jnp.zeros((1, 1), jnp.int32), model.initial_carry(1))["params"]
    return model, params


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


def test_unroll_factors_change_neither_outputs_nor_gradients(model_and_params):
    """eval_unroll=3 over T=8 leaves a remainder step; training's unroll applies to forward and backward."""
    model, params = model_and_params
    tokens = jax.random.randint(jax.random.PRNGKey(3), (B, T), 0, V)
    carry = model.initial_carry(B)
    rolled, unrolled = model.clone(eval_unroll=1, unroll=1), model.clone(eval_unroll=3, unroll=3)
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
        m = model.clone(eval_unroll=3, unroll=2)
        jaxpr = jax.make_jaxpr(lambda p: m.apply({"params": p}, tokens, carry, train=train,
                                                 rngs={"dropout": jax.random.PRNGKey(4)}))(params)
        return {str(e.params["unroll"]) for e in _equations(jaxpr.jaxpr) if e.primitive.name == "scan"}
    assert scan_unrolls(train=False) == {"3"}
    assert scan_unrolls(train=True) == {"2"}


def test_the_input_projection_runs_where_it_measured_faster(model_and_params, monkeypatch):
    """On CPUs x_t @ w_x runs inside every scan step next to h @ w_h; on accelerators once before the scan."""
    model, params = model_and_params
    tokens = jnp.ones((B, T), jnp.int32)

    def dots_per_scan_step():
        return _dots_per_scan_step(model, params, tokens, model.initial_carry(B))
    assert dots_per_scan_step() == [2 if jax.default_backend() == "cpu" else 1] * 2
    monkeypatch.setattr(recurrence, "project_in_loop", lambda: False)
    assert dots_per_scan_step() == [1, 1]


def _scans(model, params, tokens, carry):
    """The scan equations of the model's forward-only pass over tokens."""
    jaxpr = jax.make_jaxpr(lambda p: model.apply({"params": p}, tokens, carry))(params)
    return [e for e in _equations(jaxpr.jaxpr) if e.primitive.name == "scan"]


def _dots_per_scan_step(model, params, tokens, carry):
    """How many matmuls each of those scans makes per step."""
    return [sum(e.primitive.name == "dot_general" for e in _equations(scan.params["jaxpr"].jaxpr))
            for scan in _scans(model, params, tokens, carry)]


def _equations(jaxpr):
    """Every equation, also inside the jaxprs that jit, custom_vjp and scan carry as parameters."""
    for eqn in jaxpr.eqns:
        yield eqn
        for value in eqn.params.values():
            inner = getattr(value, "jaxpr", None)
            if inner is not None:
                yield from _equations(getattr(inner, "jaxpr", inner))


@pytest.mark.parametrize("embed,hidden", [(6, 6), (4, 6)])
def test_tied_weights_share_the_embedding(embed, hidden):
    model = LanguageModel(vocab_size=V, embed_size=embed, hidden_size=hidden, num_layers=1, tie_weights=True)
    params = model.init({"params": jax.random.PRNGKey(0)}, jnp.zeros((1, 1), jnp.int32), model.initial_carry(1))["params"]
    assert "decoder" not in params
    assert ("projection" in params) == (embed != hidden)
    features, _ = model.apply({"params": params}, jnp.ones((1, 3), jnp.int32), model.initial_carry(1),
                              method=LanguageModel.features)
    logits, _ = model.apply({"params": params}, jnp.ones((1, 3), jnp.int32), model.initial_carry(1))
    np.testing.assert_allclose(logits, features @ params["embedding"].T + params["decoder_bias"], rtol=1e-5)


@pytest.mark.parametrize("cell", ["lstm", "gru", "gru_cho"])
def test_bfloat16_matmuls_track_float32(cell):
    """matmul_dtype=bfloat16: same loss and gradients as float32 to bf16 precision; gradients stay float32."""
    full = LanguageModel(vocab_size=V, embed_size=6, hidden_size=8, num_layers=2, cell=cell, tie_weights=True,
                         embed_dropout=0.0)
    half = full.clone(matmul_dtype="bfloat16")
    tokens = jax.random.randint(jax.random.PRNGKey(3), (B, T), 0, V)
    params = full.init({"params": jax.random.PRNGKey(0)}, tokens, full.initial_carry(B))["params"]

    def loss(params, model):
        logits, _ = model.apply({"params": params}, tokens, model.initial_carry(B))
        return -jax.nn.log_softmax(logits)[..., 1].mean()

    (l32, g32), (l16, g16) = [jax.jit(jax.value_and_grad(loss), static_argnums=1)(params, m) for m in (full, half)]
    np.testing.assert_allclose(l16, l32, rtol=1e-2)
    for a, b in zip(jax.tree_util.tree_leaves(g32), jax.tree_util.tree_leaves(g16)):
        assert b.dtype == jnp.float32
        assert float(jnp.linalg.norm(a - b)) <= 3e-2 * float(jnp.linalg.norm(a)) + 1e-6


@pytest.mark.parametrize("cell_name, residual_units", [
    # LSTM: incoming c and h, the 4H summed pre-activations, the outputs.
    ("lstm", 2 + 4 + 1),
    # GRU: incoming h, r+z summed (2H) and n's two parts, the outputs, n's two gradients.
    ("gru", 1 + 4 + 1 + 2),
])
def test_the_backward_pass_writes_gate_gradients_over_the_pre_activations(cell_name, residual_units):
    """recurrence._scan_fused_bwd: no [T, B, G*H] gradient array beside the residuals.

    XLA's buffer assignment of one layer's gradient, in units of one [T, B, H]
    float32 array: what the residuals need and no more (the stacked gradient
    this replaced added 4 units for the LSTM and the GRU alike).
    """
    steps, batch, inputs, hidden = 64, 8, 16, 32
    cell = get_cell(cell_name)
    params = cell.init_params(jax.random.PRNGKey(0), inputs, hidden)
    xs = jnp.ones((steps, batch, inputs))
    carry = cell.init_carry(batch, hidden)
    grad = jax.grad(lambda p, x: recurrence.scan_layer(cell, p, carry, x, in_loop=True)[1].sum(), argnums=(0, 1))
    temp = jax.jit(grad).lower(params, xs).compile().memory_analysis().temp_size_in_bytes
    assert temp / (steps * batch * hidden * 4) < residual_units + 0.5


@pytest.mark.parametrize("cell,matmul_dtype,tie", [("lstm", "float32", False), ("gru", "float32", True),
                                                   ("gru_cho", "float32", False), ("lstm", "bfloat16", False)])
def test_folding_the_embedding_into_the_first_layer_changes_no_number(cell, matmul_dtype, tie):
    """fold_embedding (the first layer reads embedding @ w_x + b by id) against the plain lookup: same
    logits (evaluation) and same loss and gradients (training, with dropout between layers). With bfloat16
    matmuls the gradients are rounded to bfloat16 at different points (a table row's summed gradient
    instead of each token's), so there they agree to bfloat16 precision."""
    vocab, batch = 5, 4
    plain = LanguageModel(vocab_size=vocab, embed_size=6, hidden_size=6, num_layers=2, cell=cell, dropout=0.3,
                          tie_weights=tie, matmul_dtype=matmul_dtype, fold_embedding=False)
    folded = plain.clone(fold_embedding=True)
    tokens = jax.random.randint(jax.random.PRNGKey(3), (batch, T), 0, vocab)
    carry = plain.initial_carry(batch)
    params = plain.init({"params": jax.random.PRNGKey(0)}, tokens, carry)["params"]
    assert folded._folds(tokens, None) and not plain._folds(tokens, None)

    def logits(model):
        return jax.jit(lambda p: model.apply({"params": p}, tokens, carry)[0])(params)

    def loss_and_grads(model):
        def loss(p):
            out, _ = model.apply({"params": p}, tokens, carry, train=True, rngs={"dropout": jax.random.PRNGKey(4)})
            return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(out), tokens[..., None], -1))
        return jax.jit(jax.value_and_grad(loss))(params)

    np.testing.assert_allclose(logits(folded), logits(plain), rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree_util.tree_leaves(loss_and_grads(folded)), jax.tree_util.tree_leaves(loss_and_grads(plain))):
        if matmul_dtype == "float32":
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
        else:
            assert float(jnp.linalg.norm(a - b)) <= 1e-2 * float(jnp.linalg.norm(b)) + 1e-7


def test_the_embedding_is_folded_only_where_it_is_cheaper_and_exact():
    """Folded only for a vocabulary no larger than the embedding, a call of at least 2V tokens, and no
    embedding dropout in training; the traced program changes exactly then."""
    model = LanguageModel(vocab_size=5, embed_size=6, hidden_size=6, num_layers=1, embed_dropout=0.2)
    rng = jax.random.PRNGKey(0)
    window, short = jnp.zeros((2, 5), jnp.int32), jnp.zeros((1, 9), jnp.int32)
    assert model._folds(window, None)
    assert not model._folds(short, None)  # 9 tokens < 2 * 5
    assert not model._folds(window, rng)  # embedding dropout: each position's input differs
    assert model.clone(embed_dropout=0.0)._folds(window, rng)
    assert not model.clone(vocab_size=7)._folds(jnp.zeros((4, 5), jnp.int32), None)  # V > E
    assert not model.clone(fold_embedding=False)._folds(window, None)

    params = model.init({"params": rng}, window, model.initial_carry(2))["params"]

    def program(m, tokens):
        return str(jax.make_jaxpr(lambda p: m.apply({"params": p}, tokens, m.initial_carry(tokens.shape[0])))(params))
    off = model.clone(fold_embedding=False)
    assert program(model, window) != program(off, window)
    assert program(model, short) == program(off, short)

    # What each loop step multiplies in a forward-only pass (what the benchmark's FLOP count assumes):
    # folded, an LSTM gathers its rows and makes only h @ w_h; a GRU adds a one-hot product for its rows.
    def dots_per_scan_step(m):
        carry = m.initial_carry(2)
        return _dots_per_scan_step(m, m.init({"params": rng}, window, carry)["params"], window, carry)
    assert dots_per_scan_step(model) == [1]
    assert dots_per_scan_step(model.clone(cell="gru")) == [2]
    assert dots_per_scan_step(off) == [2 if jax.default_backend() == "cpu" else 1]

    config = base_config().model
    config.fold_embedding = False  # the config field reaches the model
    assert language_model_from_config(config, vocab_size=5).fold_embedding is False


@pytest.mark.parametrize("cell,matmul_dtype", [("lstm", "float32"), ("gru", "float32"), ("lstm", "bfloat16")])
def test_evaluating_a_narrow_stack_as_a_wavefront_changes_no_number(cell, matmul_dtype):
    """The wavefront (all layers in one loop, each a step behind the one below) against layer by layer:
    the same logits and final carries, in one loop instead of one per layer."""
    model = LanguageModel(vocab_size=V, embed_size=6, hidden_size=6, num_layers=3, cell=cell, matmul_dtype=matmul_dtype)
    tokens = jax.random.randint(jax.random.PRNGKey(1), (B, T), 0, V)
    carry = jax.tree_util.tree_map(lambda c: c + 0.5, model.initial_carry(B))
    params = model.init({"params": jax.random.PRNGKey(0)}, tokens, carry)["params"]
    off = model.clone(wavefront=False)
    assert model._runs_wavefront(jnp.zeros((T, B, 6)), train=False)

    def run(m):
        return jax.jit(lambda p: m.apply({"params": p}, tokens, carry))(params)

    on_out, off_out = run(model), run(off)
    assert jax.tree_util.tree_structure(on_out) == jax.tree_util.tree_structure(off_out)
    for a, b in zip(jax.tree_util.tree_leaves(on_out), jax.tree_util.tree_leaves(off_out)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

    assert (len(_scans(model, params, tokens, carry)), len(_scans(off, params, tokens, carry))) == (1, 3)


def test_the_wavefront_runs_only_where_it_measured_faster(monkeypatch):
    """Forward-only, two or more layers, H-wide inputs (embedding as wide as the layers, not folded ids),
    H <= WAVEFRONT_MAX_HIDDEN, a cell with a separable recurrent product, a step per layer at least, and
    a CPU (where the inputs are projected inside the loop anyway)."""
    model = LanguageModel(vocab_size=V, embed_size=8, hidden_size=8, num_layers=2)
    xs = jnp.zeros((T, B, 8))
    assert model._runs_wavefront(xs, train=False)
    assert not model._runs_wavefront(xs, train=True)  # training's backward pass is the hand-written one
    assert not model._runs_wavefront(jnp.zeros((T, B), jnp.int32), train=False)  # folded ids
    assert not model._runs_wavefront(xs[:1], train=False)  # fewer steps than layers
    assert not model.clone(num_layers=1)._runs_wavefront(xs, train=False)
    assert not model.clone(embed_size=4)._runs_wavefront(jnp.zeros((T, B, 4)), train=False)
    assert not model.clone(cell="gru_cho")._runs_wavefront(xs, train=False)
    assert not model.clone(wavefront=False)._runs_wavefront(xs, train=False)
    wide = WAVEFRONT_MAX_HIDDEN + 1
    assert not model.clone(embed_size=wide, hidden_size=wide)._runs_wavefront(jnp.zeros((T, B, wide)), train=False)
    monkeypatch.setattr("rnnlm.models.project_in_loop", lambda: False)  # as on a GPU or TPU
    assert not model._runs_wavefront(xs, train=False)

    config = base_config().model
    config.wavefront = False  # the config field reaches the model
    assert language_model_from_config(config, vocab_size=5).wavefront is False
