"""rnnlm/sampling.py: decoding rules against numpy, and the jitted generator against a step-by-step loop."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnlm import fast, sampling
from rnnlm.errors import UserError
from rnnlm.models import LanguageModel, init_params
from rnnlm.sampling import choose, filter_logits, generate


def numpy_nucleus(logits, p):
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    order = np.argsort(-probs)
    kept, mass = [], 0.0
    for i in order:
        kept.append(i)
        mass += probs[i]
        if mass >= p:
            break
    return set(kept)


@pytest.mark.parametrize("top_p", [0.1, 0.5, 0.9, 0.99, 1.0])
def test_top_p_keeps_the_smallest_set_reaching_p(top_p):
    logits = np.asarray(jax.random.normal(jax.random.PRNGKey(3), (17,)), np.float32) * 2
    kept = set(np.nonzero(np.isfinite(np.asarray(filter_logits(jnp.asarray(logits), 1.0, 0, top_p))))[0])
    assert kept == numpy_nucleus(logits.astype(np.float64), top_p)


@pytest.mark.parametrize("k", [1, 3, 17])
def test_top_k_keeps_the_k_largest(k):
    logits = jax.random.normal(jax.random.PRNGKey(4), (2, 17))
    out = np.asarray(filter_logits(logits, 1.0, k, 1.0))
    for row, original in zip(out, np.asarray(logits)):
        assert set(np.nonzero(np.isfinite(row))[0]) == set(np.argsort(-original)[:k])


@pytest.mark.slow
def test_temperature_scales_and_zero_is_greedy():
    logits = jax.random.normal(jax.random.PRNGKey(5), (64, 9))
    np.testing.assert_allclose(filter_logits(logits, 0.5, 0, 1.0), logits / 0.5, rtol=1e-6)
    greedy = choose(jax.random.PRNGKey(0), logits, jnp.float32(0.0))
    np.testing.assert_array_equal(greedy, jnp.argmax(logits, -1))
    # Sampling at temperature 1 follows the softmax: frequencies over many draws.
    row = jnp.array([[0.0, 1.0, 2.0]])
    draws = jax.vmap(lambda k: choose(k, row, jnp.float32(1.0))[0])(jax.random.split(jax.random.PRNGKey(1), 20000))
    freq = np.bincount(np.asarray(draws), minlength=3) / 20000
    np.testing.assert_allclose(freq, jax.nn.softmax(row[0]), atol=0.015)
    # With top-k, filtered tokens (probability 0, some at the ends of the row) are never drawn; the kept
    # ones follow the renormalised softmax.
    row = jnp.array([[-2.0, 5.0, 0.0, 2.0, 5.5, 1.0]])
    draws = jax.vmap(lambda k: choose(k, row, jnp.float32(1.0), 3)[0])(jax.random.split(jax.random.PRNGKey(2), 20000))
    freq = np.bincount(np.asarray(draws), minlength=6) / 20000
    kept = np.array([-np.inf, 5.0, -np.inf, 2.0, 5.5, -np.inf])
    np.testing.assert_allclose(freq, np.exp(kept - kept.max()) / np.exp(kept - kept.max()).sum(), atol=0.015)
    assert freq[[0, 2, 5]].sum() == 0


@pytest.fixture(scope="module")
def tiny_lm():
    # Embedding as wide as the layers: a prompt's forward pass runs them as a wavefront.
    model = LanguageModel(vocab_size=13, embed_size=8, hidden_size=8, num_layers=2, cell="gru")
    return model, init_params(model, jax.random.PRNGKey(0))


def test_greedy_generation_matches_a_python_loop(tiny_lm):
    model, params = tiny_lm
    prompt = jnp.array([[3, 5, 7]], jnp.int32)
    got = generate(model, params, prompt, jax.random.PRNGKey(0), jnp.float32(0.0), jnp.float32(1.0), length=6)
    assert model.plan(prompt[:, :-1].shape).wavefront == (jax.default_backend() == "cpu")
    model = model.clone(speed=fast.Speed(reference=True))  # the reference: layer by layer, one token at a time
    carry = model.initial_carry(1)
    logits, carry = model.apply({"params": params}, prompt, carry)
    token, want = int(jnp.argmax(logits[0, -1])), []
    for _ in range(6):
        want.append(token)
        logits, carry = model.apply({"params": params}, jnp.array([[token]]), carry)
        token = int(jnp.argmax(logits[0, -1]))
    assert np.asarray(got[0]).tolist() == want


def test_sampling_is_seeded(tiny_lm):
    model, params = tiny_lm
    prompt = jnp.array([[1], [1]], jnp.int32)
    run = lambda seed: np.asarray(generate(model, params, prompt, jax.random.PRNGKey(seed), jnp.float32(1.5),
                                           jnp.float32(1.0), length=30))
    np.testing.assert_array_equal(run(7), run(7))
    assert not np.array_equal(run(7), run(8))


@pytest.fixture(scope="module")
def word_tokenizer():
    from rnnlm.data.tokenizers import WordTokenizer
    return WordTokenizer.fit("the cat sat on the mat .\na dog ran to the red door .\n")


@pytest.mark.slow
def test_a_long_text_streams_in_chunks_that_continue_one_another(tiny_lm, word_tokenizer, monkeypatch):
    """Greedy decoding does not depend on the keys, so a text sampled in chunks of 4 tokens must equal
    the one-shot `generate` of the same length: the carry and the last token flow between chunks."""
    model, params = tiny_lm
    ids = word_tokenizer.encode("the cat", strict=True)
    want = np.asarray(generate(model, params, jnp.asarray(ids[None]), jax.random.PRNGKey(0), jnp.float32(0.0),
                               jnp.float32(1.0), length=10))[0]
    monkeypatch.setattr(sampling, "CHUNK", 4)
    pieces = list(sampling.sample_stream(model, params, word_tokenizer, "the cat", length=10, temperature=0.0))
    assert [len(p) for p in pieces] == [1, 1, 1]  # chunks of 4, 4 and 2 tokens, one sample
    assert "".join(p[0] for p in pieces) == "the cat " + word_tokenizer.decode(want)  # a space after the prompt
    # A text of at most one chunk is `generate`'s, key for key.
    sampled = np.asarray(generate(model, params, jnp.asarray(ids[None]), jax.random.PRNGKey(5), jnp.float32(1.0),
                                  jnp.float32(1.0), length=4))[0]
    assert sampling.sample_text(model, params, word_tokenizer, "the cat", length=4, seed=5) == [
        "the cat " + word_tokenizer.decode(sampled)]


@pytest.mark.parametrize("settings, message", [
    ((float("nan"), 0, 1.0), "temperature must be a number >= 0"),
    ((-1.0, 0, 1.0), "temperature must be a number >= 0"),
    ((1.0, 14, 1.0), "top-k must be between 0 and the vocabulary size 13"),
    ((1.0, 0, 2.0), "top-p must be in (0, 1]"),
    ((1.0, 0, 0.0), "top-p must be in (0, 1]"),
])
def test_bad_decoding_settings_are_one_line_errors(settings, message):
    with pytest.raises(UserError, match=re.escape(message)):
        sampling.check_settings(*settings, vocab_size=13)


# --- beam search -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def beam_model():
    model = LanguageModel(vocab_size=11, embed_size=6, hidden_size=8, num_layers=2)
    return model, init_params(model, jax.random.PRNGKey(3))


def sequence_log_prob(model, params, prompt, continuation):
    """log p(continuation | prompt) read token by token from the logits of the whole text."""
    ids = np.concatenate([prompt, continuation])
    logits, _ = model.apply({"params": params}, jnp.asarray(ids[None, :-1]), model.initial_carry(1))
    logp = np.asarray(jax.nn.log_softmax(logits[0].astype(jnp.float32), axis=-1), np.float64)
    return float(sum(logp[len(prompt) - 1 + i, t] for i, t in enumerate(continuation)))


@pytest.mark.slow
def test_beam_one_is_greedy(beam_model):
    model, params = beam_model
    prompt = jnp.asarray([[1, 4, 2]], jnp.int32)
    tokens, totals, lengths, _ = sampling.beam_search(model, params, prompt, jnp.float32(0.0), jnp.int32(-1),
                                                      length=12, beam=1)
    greedy = generate(model, params, prompt, jax.random.PRNGKey(0), 0.0, 1.0, length=12)
    np.testing.assert_array_equal(tokens[0], greedy[0])
    assert int(lengths[0]) == 12
    np.testing.assert_allclose(float(totals[0]), sequence_log_prob(model, params, np.asarray(prompt[0]),
                                                                   np.asarray(tokens[0])), rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(4))
def test_the_best_beam_is_never_less_likely_than_greedy(beam_model, seed):
    model, params = beam_model
    prompt = np.random.default_rng(seed).integers(0, 11, 3).astype(np.int32)
    greedy = np.asarray(generate(model, params, jnp.asarray(prompt[None]), jax.random.PRNGKey(0), 0.0, 1.0,
                                 length=10))[0]
    tokens, totals, _, _ = sampling.beam_search(model, params, jnp.asarray(prompt[None]), jnp.float32(0.0),
                                                jnp.int32(-1), length=10, beam=4)
    best = sequence_log_prob(model, params, prompt, np.asarray(tokens[0]))
    np.testing.assert_allclose(float(totals[0]), best, rtol=1e-5)  # the reported score is the text's
    assert best >= sequence_log_prob(model, params, prompt, greedy) - 1e-5
    assert (np.diff(np.asarray(totals)) <= 1e-6).all()  # best first


def test_a_beam_stops_at_the_end_token(beam_model):
    model, params = beam_model
    prompt = jnp.asarray([[1, 4]], jnp.int32)
    free, _, _, _ = sampling.beam_search(model, params, prompt, jnp.float32(0.0), jnp.int32(-1), length=8, beam=3)
    end = int(free[0, 2])  # the best beam's third token becomes the end token
    tokens, totals, lengths, _ = sampling.beam_search(model, params, prompt, jnp.float32(0.0), jnp.int32(end),
                                                      length=8, beam=3)
    for row, n in zip(np.asarray(tokens), np.asarray(lengths)):
        hits = np.nonzero(row == end)[0]
        if len(hits):
            assert n == hits[0] + 1 and (row[n:] == end).all()  # frozen after its end
    first = np.asarray(tokens[0])[:int(lengths[0])]
    np.testing.assert_allclose(float(totals[0]), sequence_log_prob(model, params, np.asarray(prompt[0]), first),
                               rtol=1e-5)


def test_beam_settings_are_checked():
    from rnnlm.data.tokenizers import CharTokenizer
    model = LanguageModel(vocab_size=4, embed_size=4, hidden_size=4, num_layers=1)
    params = init_params(model, jax.random.PRNGKey(0))
    tokenizer = CharTokenizer.fit("ab\nab")
    with pytest.raises(UserError, match="must not exceed the vocabulary size 4"):
        sampling.beam_text(model, params, tokenizer, "ab", length=3, beam=5)
    with pytest.raises(UserError, match="length penalty must be a number >= 0"):
        sampling.beam_text(model, params, tokenizer, "ab", length=3, beam=2, length_penalty=-1.0)
    text, log_prob = sampling.beam_text(model, params, tokenizer, "ab", length=3, beam=2)
    assert text.startswith("ab") and len(text) == 5 and log_prob < 0
