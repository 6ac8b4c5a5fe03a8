"""Shared test setup: the corpora in ../shared/data, no network, and JAX's strict promotion rules.

With rank promotion raising, an implicit broadcast of a [H] bias over a [B, H] array is an
error, and with strict dtype promotion so is mixing float32 with bfloat16 or int with float:
the code says where it broadcasts and casts. Subprocess tests run the CLI as users do.
"""

import os
import pathlib
import shutil
import tempfile

# Compile for speed of compiling: at the tests' tiny shapes XLA's optimisation passes cost far more than they
# save. The environment carries the flags to the xdist workers and the CLI subprocesses; RNNLM_TEST_XLA_OPT=1
# tests the optimised build users run.
if os.environ.get("RNNLM_TEST_XLA_OPT") != "1":
    os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), "--xla_backend_optimization_level=0",
                                        "--xla_llvm_disable_expensive_passes=true"]).strip()

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")

# One persistent compilation cache, shared by this process, the xdist workers and the CLI subprocesses (through
# the environment): a repeated run loads its executables instead of compiling them, which is most of the inner
# loop's time. Its keys hold the HLO, JAX's version and the flags, so a changed function simply compiles again.
# JAX's own size bound locks the folder on every read and write (a cold run took half as long again), so the
# folder is emptied instead once it passes 1 GiB. RNNLM_TEST_JAX_CACHE=temp starts cold and cleans up after.
_CACHE_SETTING = os.environ.get("RNNLM_TEST_JAX_CACHE", "")
if _CACHE_SETTING == "temp":
    COMPILATION_CACHE = tempfile.mkdtemp(prefix="rnnlm-test-jax-cache-")
else:
    COMPILATION_CACHE = _CACHE_SETTING or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "rnnlm", "test-jax-cache")
    os.makedirs(COMPILATION_CACHE, exist_ok=True)
os.environ.update(JAX_COMPILATION_CACHE_DIR=COMPILATION_CACHE, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                  JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
jax.config.update("jax_compilation_cache_dir", COMPILATION_CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def pytest_sessionstart(session):
    if getattr(session.config, "workerinput", None) is None and _CACHE_SETTING != "temp":  # the controller only
        entries = list(pathlib.Path(COMPILATION_CACHE).iterdir())
        if sum(e.stat().st_size for e in entries if e.is_file()) > 1 << 30:
            for e in entries:
                e.unlink(missing_ok=True)


def pytest_sessionfinish(session, exitstatus):
    if _CACHE_SETTING == "temp":
        shutil.rmtree(COMPILATION_CACHE, ignore_errors=True)


REPO = pathlib.Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"

# Tests read the real corpora from the shared copy (never from the network).
if "RNNLM_DATA_DIR" not in os.environ and SHARED_DATA.is_dir():
    os.environ["RNNLM_DATA_DIR"] = str(SHARED_DATA)
os.environ.setdefault("RNNLM_CACHE_DIR", "/nonexistent-rnnlm-cache")  # a download attempt fails loudly


B, D, H, T = 3, 5, 4, 6  # the cell and layer tests' batch, input width, hidden width and steps


@pytest.fixture(scope="module")
def inputs():
    """[T, B, D] standard-normal inputs of the cell and layer tests."""
    return jax.random.normal(jax.random.PRNGKey(0), (T, B, D))


def data_dir() -> pathlib.Path:
    path = pathlib.Path(os.environ["RNNLM_DATA_DIR"])
    if not (path / "ptb").is_dir():
        pytest.fail(f"the shared corpora are missing at {path}; set RNNLM_DATA_DIR")
    return path


VISUAL_TEXT = 'He said "go (now) [quickly]" and left.\nShe said "stay {here}".\n' * 40


@pytest.fixture(scope="session")
def char_run(tmp_path_factory):
    """One tiny trained character LSTM (2 layers), shared by the plot, page, event-file and study tests."""
    from rnnlm.config import base_config
    from rnnlm.train import train_and_evaluate
    root = tmp_path_factory.mktemp("char_run")
    (root / "text.txt").write_text(VISUAL_TEXT)
    config = base_config()
    config.data.corpus = str(root / "text.txt")
    config.data.tokenizer = "char"
    config.model.update(embed_size=8, hidden_size=12, num_layers=2, cell="lstm")
    config.train.update(batch_size=2, bptt=16, max_steps=6, log_every=2, checkpoint_every=0, learning_rate=1e-2)
    config.eval.batch_size = 2
    config.sample.length = 0
    train_and_evaluate(config, root / "run")
    return root / "run"


def assert_png(path):
    import matplotlib.image
    data = pathlib.Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(path)
    assert image.shape[0] > 50 and image.shape[1] > 50 and image.std() > 0  # not blank
