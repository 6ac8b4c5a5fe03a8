"""rnnlm/fast/: every fast path equal to the reference path (outputs and gradients, every cell), and the rules
that choose them (`rnnlm.fast.choose`)."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnlm import cells, fast
from rnnlm.cells import CELLS, get_cell
from rnnlm.fast import bptt, decoder_loss, precision, table, wavefront
from rnnlm.models import Classifier, LanguageModel, init_params
from rnnlm.recurrence import scan_layer
from conftest import B, D, H, T
from test_cells import numpy_step, random_carry, random_params

REFERENCE = fast.Speed(reference=True)
CORE_CELLS = [n for n in sorted(CELLS) if CELLS[n].core is not None]
AFFINE_CELLS = [n for n in sorted(CELLS) if CELLS[n].project is cells.project_inputs]  # what a table can fold


def padding_mask():
    return jnp.asarray(np.arange(T)[:, None] < np.array([T, 2, 4])[None, :])


def assert_trees_close(got, want, rtol=1e-4, atol=1e-5):
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want)
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


def weighted_loss(layer, *args):
    final, ys = layer(*args)
    return jnp.sum(ys * jnp.arange(1.0, H + 1.0)[None, None]) + sum(jnp.sum(c ** 2) for c in final)


# --- bptt.py: the hand-written backward pass through time ----------------------------------

SLOW = pytest.mark.slow


@pytest.mark.parametrize("in_loop,masked", [(True, True), pytest.param(False, True, marks=SLOW),
                                            pytest.param(True, False, marks=SLOW)],
                         ids=["projected-in-loop", "projected-before", "unmasked"])
@pytest.mark.parametrize("reverse", [False, pytest.param(True, marks=SLOW)])
@pytest.mark.parametrize("name", [n if n in ("lstm", "gru", "gru_cho") else pytest.param(n, marks=SLOW)
                                  for n in sorted(CELLS)])
def test_bptt_equals_the_reference_scan(name, reverse, in_loop, masked, inputs):
    """Outputs and gradients (parameters, carry, inputs) of `bptt.scan_layer` against the reference
    `scan_layer` differentiated by JAX, with the input projection inside the loop (CPUs) and before it."""
    cell = get_cell(name)
    params, carry = random_params(name), random_carry(name)
    mask = padding_mask() if masked else None
    fast_layer = lambda p, c, xs: bptt.scan_layer(cell, p, c, xs, mask, reverse=reverse, in_loop=in_loop)
    reference = lambda p, c, xs: scan_layer(cell, p, c, xs, mask, reverse=reverse)
    assert_trees_close(jax.jit(fast_layer)(params, carry, inputs), reference(params, carry, inputs), 1e-5, 1e-6)
    got = jax.grad(functools.partial(weighted_loss, fast_layer), argnums=(0, 1, 2))(params, carry, inputs)
    want = jax.grad(functools.partial(weighted_loss, reference), argnums=(0, 1, 2))(params, carry, inputs)
    assert_trees_close(got, want)


@pytest.mark.parametrize("cell_name, residual_units", [
    # LSTM: incoming c and h, the 4H summed pre-activations, the outputs.
    ("lstm", 2 + 4 + 1),
    # GRU: incoming h, r+z summed (2H) and n's two parts, the outputs, n's two gradients.
    ("gru", 1 + 4 + 1 + 2),
])
def test_the_backward_pass_writes_gate_gradients_over_the_pre_activations(cell_name, residual_units):
    """No [T, B, G*H] gradient array beside the residuals: XLA's buffer assignment of one layer's
    gradient, in units of one [T, B, H] float32 array, is what the residuals need and no more (a
    stacked gradient added 4 units for the LSTM and the GRU alike)."""
    steps, batch, width, hidden = 64, 8, 16, 32
    cell = get_cell(cell_name)
    params = cell.init_params(jax.random.PRNGKey(0), width, hidden)
    xs = jnp.ones((steps, batch, width))
    carry = cell.init_carry(batch, hidden)
    grad = jax.grad(lambda p, x: bptt.scan_layer(cell, p, carry, x, in_loop=True)[1].sum(), argnums=(0, 1))
    temp = jax.jit(grad).lower(params, xs).compile().memory_analysis().temp_size_in_bytes
    assert temp / (steps * batch * hidden * 4) < residual_units + 0.5


@pytest.mark.parametrize("name", CORE_CELLS)
def test_summed_gates_is_exactly_what_the_core_sees_only_as_a_sum(name):
    """`Cell.summed_gates` lets the backward pass keep gx + gh alone for those gate blocks; it
    must cover exactly the blocks where that is lossless (one more block must change the output)."""
    cell = get_cell(name)
    params, carry = random_params(name), random_carry(name)
    keys = jax.random.split(jax.random.PRNGKey(3), 2)
    gx, gh = (jax.random.normal(k, (B, cell.gates * H)) for k in keys)
    split = cell.core(params, carry, gx, gh)[0][-1]

    def moved(blocks):  # the recurrent part of the first `blocks` gate blocks moved into gx
        k = blocks * H
        return cell.core(params, carry, gx.at[:, :k].add(gh[:, :k]), gh.at[:, :k].set(0.0))[0][-1]
    np.testing.assert_allclose(moved(cell.summed_gates), split, atol=1e-6)
    if cell.summed_gates < cell.gates:
        assert not np.allclose(moved(cell.summed_gates + 1), split, atol=1e-6)


# --- table.py: the embedding folded into the first layer --------------------------------------

@pytest.mark.parametrize("masked", [True, pytest.param(False, marks=SLOW)], ids=["masked", "unmasked"])
@pytest.mark.parametrize("reverse", [False, pytest.param(True, marks=SLOW)])
@pytest.mark.parametrize("name", [n if n == "lstm" else pytest.param(n, marks=SLOW) for n in AFFINE_CELLS])
def test_a_layer_reading_an_input_table_by_id_equals_embedding_then_projection(name, reverse, masked):
    """bptt.scan_layer over token ids into input_table(embedding, params): the same outputs (forward-only:
    one-hot rows for the GRUs) and the same gradients for the embedding and every weight (gathered rows,
    scatter-added backward) as the reference layer over embedding[ids], differentiated by JAX."""
    cell, vocab = get_cell(name), 7
    params, carry = random_params(name), random_carry(name)
    embedding = jax.random.normal(jax.random.PRNGKey(5), (vocab, D))
    ids = jax.random.randint(jax.random.PRNGKey(6), (T, B), 0, vocab).at[0].set(vocab - 1)
    mask = padding_mask() if masked else None

    def by_table(params, embedding, carry):
        table_params = {**params, "w_x": table.input_table(embedding, params, cells.matmul)}
        return bptt.scan_layer(cell, table_params, carry, ids, mask, reverse=reverse, in_loop=True)

    def by_embedding(params, embedding, carry):
        return scan_layer(cell, params, carry, embedding[ids], mask, reverse=reverse)

    assert_trees_close(jax.jit(by_table)(params, embedding, carry), by_embedding(params, embedding, carry), 1e-5, 1e-6)
    got = jax.grad(functools.partial(weighted_loss, by_table), argnums=(0, 1, 2))(params, embedding, carry)
    want = jax.grad(functools.partial(weighted_loss, by_embedding), argnums=(0, 1, 2))(params, embedding, carry)
    assert_trees_close(got, want)


# --- wavefront.py: all layers in one loop ------------------------------------------------------

@pytest.mark.parametrize("depth,steps,unroll", [(2, 2, 1), pytest.param(3, 7, 2, marks=SLOW)])
@pytest.mark.parametrize("name", [n if n == "gru" else pytest.param(n, marks=SLOW) for n in CORE_CELLS])
def test_a_wavefront_over_the_layers_equals_the_numpy_stack(name, depth, steps, unroll):
    """run_wavefront (layer l a step behind layer l-1, all layers' products batched) against the cell
    equations in numpy, layer after layer: top outputs and every layer's final carry. Covers the
    shortest sequence it takes (one step per layer), where the loop itself has a single step."""
    cell = get_cell(name)
    layers = [cell.init_params(jax.random.PRNGKey(10 + layer), H, H, init_scale=0.8) for layer in range(depth)]
    carries = tuple(random_carry(name, seed=20 + layer) for layer in range(depth))
    xs = jax.random.normal(jax.random.PRNGKey(3), (steps, B, H))
    finals, ys = jax.jit(functools.partial(wavefront.run_wavefront, cell, unroll=unroll))(layers, carries, xs)

    want = np.asarray(xs, np.float64)
    for layer, (params, carry) in enumerate(zip(layers, carries)):
        carry = tuple(np.asarray(c, np.float64) for c in carry)
        outputs = []
        for x in want:
            carry, y = numpy_step(name, params, carry, x)
            outputs.append(y)
        want = np.stack(outputs)
        for got_c, want_c in zip(finals[layer], carry):
            np.testing.assert_allclose(got_c, want_c, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ys, want, rtol=1e-5, atol=1e-5)


def test_a_wavefront_refuses_fewer_steps_than_layers():
    """With T < L the fill would read past the sequence, where indexing clamps instead of failing."""
    cell = get_cell("lstm")
    layers = [cell.init_params(jax.random.PRNGKey(layer), H, H) for layer in range(3)]
    carries = tuple(random_carry("lstm") for _ in range(3))
    with pytest.raises(ValueError, match="one step per layer: 2 steps, 3 layers"):
        wavefront.run_wavefront(cell, layers, carries, jnp.zeros((2, B, H)))


# --- decoder_loss.py: the window's loss in time chunks ---------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("tie", [False, True])
def test_chunked_losses_equal_the_reference_window_loss(tie):
    """Evaluation (lax.map) and training (fused VJP) in time chunks, padded with zero weights, give the
    loss and gradients of the reference: optax's cross-entropy over the whole window's logits."""
    from rnnlm import loss as reference_loss
    model = LanguageModel(vocab_size=11, embed_size=8, hidden_size=8 if tie else 6, num_layers=1, cell="lstm",
                          tie_weights=tie)
    params = init_params(model, jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    features = jnp.asarray(rng.normal(size=(3, 7, model.hidden_size)), jnp.float32)
    targets = jnp.asarray(rng.integers(0, 11, (3, 7)), jnp.int32)
    weights = jnp.asarray(rng.random((3, 7)) > 0.3, jnp.float32)

    def reference(params, features):
        return reference_loss.window_nll(model, params, features, targets, weights)
    # Scaled by 1e3 the logits reach the thousands: exp overflows unless a shift of at least the row's
    # maximum comes off first (evaluation shifts by the target's logit and must fall back to the maximum
    # there). The third case is hard for the training shift (the product's row max plus part of the
    # bias): the bias spans 88, and every row's two largest logits, 5 apart, sit in the columns of the
    # smallest biases while the product peaks there. A shift with the bias's whole max would sit 83 and
    # 88 above them and flush the second to zero (a ~0.7% probability).
    bias = jnp.concatenate([jnp.array([-38.0, -43.0]), jnp.linspace(-10.0, 45.0, 9)])
    worst = {**params, "decoder_bias": bias}
    if tie:
        worst["embedding"] = worst["embedding"].at[:2].set(30.0)
    else:
        worst["decoder"] = worst["decoder"].at[:, :2].set(30.0)
    cases = [(params, features), (params, 1e3 * features), (worst, jnp.abs(features) + 0.5)]
    wants = [jax.value_and_grad(reference, argnums=(0, 1))(p, f) for p, f in cases]
    for chunk_logits in (3 * 11 * 2, 3 * 11 * 3, 10**6):  # 4 chunks of 2 steps, 3 of 3 (7 steps: padded), or 1
        for train in (False, True):
            def chunked(params, features):
                return decoder_loss.window_nll(model, params, features, targets, weights, train=train,
                                               chunk_logits=chunk_logits)
            compiled = jax.jit(jax.value_and_grad(chunked, argnums=(0, 1)))
            for (p, f), (want, want_grads) in zip(cases, wants):
                got, grads = compiled(p, f)
                np.testing.assert_allclose(float(got), float(want), rtol=1e-5)
                for g, w in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(want_grads)):
                    # Float32 error is relative to a leaf's scale: the training loss subtracts the one-hot
                    # term from separately summed products, so where a row's or column's gradient cancels
                    # to ~0 what is left is rounding of the size of its terms (the weight, 30, here).
                    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6 * max(1.0, float(np.abs(w).max())))


# --- precision.py: bfloat16 backward products ---------------------------------------------------

def test_bfloat16_matmul_backward_in_bfloat16_tracks_the_reference():
    x = jax.random.normal(jax.random.PRNGKey(0), (16, 32))
    w = jax.random.normal(jax.random.PRNGKey(1), (32, 24))
    g = jax.random.normal(jax.random.PRNGKey(2), (16, 24))
    for dtype in (jnp.float32, jnp.bfloat16):
        loss = lambda mm, x, w: jnp.sum(mm(x, w) * g)
        want = jax.grad(functools.partial(loss, cells.matmul), argnums=(0, 1))(x, w.astype(dtype))
        got = jax.grad(functools.partial(loss, precision.matmul), argnums=(0, 1))(x, w.astype(dtype))
        for a, b in zip(got, want):
            assert a.dtype == b.dtype
            if dtype == jnp.float32:
                np.testing.assert_array_equal(a, b)  # the very same matmul
            else:  # bf16 rounding of the cotangent: a relative error of the order of 2^-8
                assert float(jnp.linalg.norm((a - b).astype(jnp.float32))) <= 1e-2 * float(
                    jnp.linalg.norm(b.astype(jnp.float32)))


# --- whole models: the fast paths against speed.reference=True ------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CELLS))
def test_a_language_model_with_its_fast_paths_equals_its_reference(name):
    """Logits and carries (evaluation: table, wavefront, bptt forward) and the training loss and gradients
    (dropout between layers and before the decoder; table and bptt) with every fast path the rules choose,
    against the same model with speed.reference=True. E == H and V <= E: every path is taken."""
    vocab, batch = 5, 4
    model = LanguageModel(vocab_size=vocab, embed_size=6, hidden_size=6, num_layers=2, cell=name, dropout=0.3)
    reference = model.clone(speed=REFERENCE)
    tokens = jax.random.randint(jax.random.PRNGKey(3), (batch, T), 0, vocab)
    targets = jnp.roll(tokens, -1, axis=1)
    carry = jax.tree_util.tree_map(lambda c: c + 0.5, model.initial_carry(batch))
    params = init_params(model, jax.random.PRNGKey(0))
    plan = model.plan(tokens.shape)
    # The table feeds ids (so no wavefront); the Mogrifier gates x before projecting it: no table.
    assert plan.input_table == (name in AFFINE_CELLS) and plan.wavefront is False
    assert plan.bptt == (name in CORE_CELLS)
    assert model.clone(speed=fast.Speed(fold_embedding=False)).plan(tokens.shape).wavefront == (name in CORE_CELLS)

    def outputs(m):
        return jax.jit(lambda p: m.apply({"params": p}, tokens, carry))(params)

    def loss_and_grads(m):
        from rnnlm.tasks.lm import window_nll

        def loss(p):
            features, _ = m.apply({"params": p}, tokens, carry, train=True, rngs={"dropout": jax.random.PRNGKey(4)},
                                  method=m.features)
            return window_nll(m, p, features, targets, jnp.ones(tokens.shape), train=True)
        return jax.jit(jax.value_and_grad(loss))(params)

    want_outputs, want_loss = outputs(reference), loss_and_grads(reference)
    for speed in (model.speed, fast.Speed(fold_embedding=False)):  # the table; then the wavefront and bptt
        m = model.clone(speed=speed)
        assert_trees_close(outputs(m), want_outputs, 1e-5, 1e-6)
        assert_trees_close(loss_and_grads(m), want_loss)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lstm", "gru", "gru_cho"])
def test_a_bidirectional_masked_classifier_with_its_fast_paths_equals_its_reference(name):
    model = Classifier(vocab_size=9, num_classes=3, embed_size=5, hidden_size=4, num_layers=2, cell=name,
                       bidirectional=True, pooling="mean", dropout=0.2)
    reference = model.clone(speed=REFERENCE)
    tokens = jax.random.randint(jax.random.PRNGKey(1), (B, T), 1, 9)
    mask = jnp.asarray(np.arange(T)[None, :] < np.array([T, 2, 4])[:, None])
    params = init_params(model, jax.random.PRNGKey(0))

    def loss_and_grads(m):
        def loss(p):
            logits = m.apply({"params": p}, tokens, mask, train=True, rngs={"dropout": jax.random.PRNGKey(2)})
            return jnp.sum(jax.nn.log_softmax(logits)[:, 0])
        return jax.jit(jax.value_and_grad(loss))(params)
    logits = lambda m: jax.jit(lambda p: m.apply({"params": p}, tokens, mask))(params)
    assert_trees_close(logits(model), logits(reference), 1e-5, 1e-6)
    assert_trees_close(loss_and_grads(model), loss_and_grads(reference))


# --- the rules ----------------------------------------------------------------------------------

def test_the_rules_take_each_path_only_where_it_applies(monkeypatch):
    """Each row of `rnnlm.fast.choose`'s table, against the facts that must turn it off."""
    lstm, cho = get_cell("lstm"), get_cell("gru_cho")
    facts = dict(train=False, vocab=5, embed=8, hidden=8, layers=2, steps=T, tokens=2 * T)
    cpu = functools.partial(fast.choose, backend="cpu")
    on = cpu(fast.Speed(), lstm, **facts)
    assert on.bptt and on.in_loop_projection and on.input_table and on.chunked_loss and not on.low_precision_backward
    assert not on.wavefront  # the first layer reads ids from the table
    assert cpu(fast.Speed(reference=True), lstm, **facts) == fast.REFERENCE
    assert cpu(fast.Speed(), lstm, probe=True, **facts) == fast.REFERENCE
    assert cpu(fast.Speed(), lstm, matmul_dtype="bfloat16", **facts).low_precision_backward
    assert not fast.choose(fast.Speed(), lstm, backend="gpu", **facts).in_loop_projection

    # input_table: V <= E, B*T >= 2V, no embedding dropout in this pass, speed.fold_embedding, affine inputs
    assert not cpu(fast.Speed(), lstm, **{**facts, "vocab": 9}).input_table
    assert not cpu(fast.Speed(), lstm, **{**facts, "tokens": 9}).input_table
    assert not cpu(fast.Speed(), lstm, embed_dropout=True, **facts).input_table
    assert not cpu(fast.Speed(fold_embedding=False), lstm, **facts).input_table
    assert cpu(fast.Speed(), cho, **facts).input_table and not cpu(fast.Speed(), cho, **facts).bptt

    # wavefront: forward-only, a core, no table, >= 2 layers, E == H <= 256, T >= layers, a CPU
    wide = {**facts, "vocab": 50}
    assert cpu(fast.Speed(), lstm, **wide).wavefront
    for change in ({"train": True}, {"layers": 1}, {"embed": 4}, {"steps": 1},
                   {"embed": fast.WAVEFRONT_MAX_HIDDEN + 1, "hidden": fast.WAVEFRONT_MAX_HIDDEN + 1}):
        assert not cpu(fast.Speed(), lstm, **{**wide, **change}).wavefront, change
    assert not cpu(fast.Speed(), cho, **wide).wavefront
    assert not cpu(fast.Speed(wavefront=False), lstm, **wide).wavefront
    assert not fast.choose(fast.Speed(), lstm, backend="tpu", **wide).wavefront


def test_a_cell_the_fast_paths_do_not_know_runs_the_reference(monkeypatch, inputs):
    """A new cell without a core, whose inputs are not one affine map: no fast path is chosen, and a
    model built on it trains and evaluates on the reference path."""
    base = get_cell("rnn")
    scaled = lambda params, x: 2.0 * cells.project_inputs(params, x)
    new = dataclasses.replace(base, name="rnn_scaled", core=None, summed_gates=0, project=scaled)
    monkeypatch.setitem(CELLS, new.name, new)
    plan = fast.choose(fast.Speed(), new, train=True, vocab=5, embed=8, hidden=8, layers=2, steps=T, tokens=2 * T)
    assert not (plan.bptt or plan.input_table or plan.wavefront)
    model = LanguageModel(vocab_size=5, embed_size=8, hidden_size=8, num_layers=2, cell="rnn_scaled")
    params = init_params(model, jax.random.PRNGKey(0))
    tokens = jnp.zeros((2, T), jnp.int32)
    logits, _ = model.apply({"params": params}, tokens, model.initial_carry(2))
    reference, _ = model.clone(speed=REFERENCE).apply({"params": params}, tokens, model.initial_carry(2))
    np.testing.assert_array_equal(logits, reference)


def _equations(jaxpr):
    """Every equation, also inside the jaxprs that jit, custom_vjp and scan carry as parameters."""
    for eqn in jaxpr.eqns:
        yield eqn
        for value in eqn.params.values():
            inner = getattr(value, "jaxpr", None)
            if inner is not None:
                yield from _equations(getattr(inner, "jaxpr", inner))


def _dots_per_scan_step(model, tokens):
    carry = model.initial_carry(tokens.shape[0])
    params = init_params(model, jax.random.PRNGKey(0))
    jaxpr = jax.make_jaxpr(lambda p: model.apply({"params": p}, tokens, carry))(params)
    scans = [e for e in _equations(jaxpr.jaxpr) if e.primitive.name == "scan"]
    return [sum(e.primitive.name == "dot_general" for e in _equations(s.params["jaxpr"].jaxpr)) for s in scans]


@pytest.mark.slow
def test_each_loop_step_multiplies_what_the_plan_says():
    """What each loop step multiplies in a forward-only pass (what the benchmark's FLOP count assumes):
    in the loop on CPUs x_t @ w_x beside h @ w_h; folded, an LSTM gathers its rows and makes only
    h @ w_h, a GRU adds a one-hot product for its rows; the wavefront is one loop for both layers."""
    window = jnp.zeros((2, 5), jnp.int32)
    folded = LanguageModel(vocab_size=5, embed_size=6, hidden_size=6, num_layers=1)
    assert _dots_per_scan_step(folded, window) == [1]
    assert _dots_per_scan_step(folded.clone(cell="gru"), window) == [2]
    unfolded = folded.clone(speed=fast.Speed(fold_embedding=False))
    assert _dots_per_scan_step(unfolded, window) == [2 if jax.default_backend() == "cpu" else 1]
    assert _dots_per_scan_step(unfolded.clone(num_layers=2), window) == ([2] if jax.default_backend() == "cpu" else [1, 1])
    assert _dots_per_scan_step(unfolded.clone(speed=REFERENCE), window) == [1]  # projected before the loop


@pytest.mark.slow
def test_speed_linear_scan_picks_the_scan_and_both_give_the_same_model():
    """speed.linear_scan: "auto" is the loop on a CPU and the associative scan elsewhere; a minGRU language
    model's training loss and gradients and a bidirectional masked minLSTM classifier's logits are the same
    under "parallel" and "sequential"."""
    cell = get_cell("mingru")
    assert not fast.choose(fast.Speed(), cell, train=True, backend="cpu").parallel_scan
    assert fast.choose(fast.Speed(), cell, train=True, backend="gpu").parallel_scan
    assert fast.choose(fast.Speed(linear_scan="parallel"), cell, train=True, backend="cpu").parallel_scan
    assert not fast.choose(fast.Speed(linear_scan="parallel"), get_cell("gru"), train=True).parallel_scan
    from rnnlm.tasks.lm import window_nll
    model = LanguageModel(vocab_size=5, embed_size=6, hidden_size=6, num_layers=2, cell="mingru", dropout=0.3)
    tokens = jax.random.randint(jax.random.PRNGKey(3), (4, T), 0, 5)
    carry = jax.tree_util.tree_map(lambda c: c + 0.5, model.initial_carry(4))
    params = init_params(model, jax.random.PRNGKey(0))

    def loss(p, m):
        features, _ = m.apply({"params": p}, tokens, carry, train=True, rngs={"dropout": jax.random.PRNGKey(4)},
                              method=m.features)
        return window_nll(m, p, features, jnp.roll(tokens, -1, axis=1), jnp.ones(tokens.shape), train=True)

    got, want = (jax.value_and_grad(loss)(params, model.clone(speed=fast.Speed(linear_scan=mode)))
                 for mode in ("parallel", "sequential"))
    assert_trees_close(got, want, 1e-5, 1e-6)
    classifier = Classifier(vocab_size=9, num_classes=2, embed_size=4, hidden_size=3, num_layers=1, cell="minlstm",
                            bidirectional=True, pooling="max")
    cparams = init_params(classifier, jax.random.PRNGKey(1))
    ids = jax.random.randint(jax.random.PRNGKey(2), (3, T), 1, 9)
    logits = [classifier.clone(speed=fast.Speed(linear_scan=mode)).apply({"params": cparams}, ids, padding_mask().T)
              for mode in ("parallel", "sequential")]
    np.testing.assert_allclose(logits[0], logits[1], rtol=1e-5, atol=1e-6)
