"""Shared test setup: the corpora in ../shared/data, no network."""

import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"

# Tests read the real corpora from the shared copy (never from the network).
if "RNNLM_DATA_DIR" not in os.environ and SHARED_DATA.is_dir():
    os.environ["RNNLM_DATA_DIR"] = str(SHARED_DATA)
os.environ.setdefault("RNNLM_CACHE_DIR", "/nonexistent-rnnlm-cache")  # a download attempt fails loudly



def data_dir() -> pathlib.Path:
    path = pathlib.Path(os.environ["RNNLM_DATA_DIR"])
    if not (path / "ptb").is_dir():
        pytest.fail(f"the shared corpora are missing at {path}; set RNNLM_DATA_DIR")
    return path
