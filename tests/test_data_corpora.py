"""rnnlm/data/corpora.py: the registry's checksums, the download path, the lookup order."""

import hashlib
import io

import pytest

from conftest import data_dir
from rnnlm.data import corpora
from rnnlm.errors import UserError


def test_checksum_mismatch_is_refused(tmp_path, monkeypatch):
    (tmp_path / "ptb").mkdir()
    for entry in corpora.CORPORA["ptb"].files:
        (tmp_path / "ptb" / entry.name).write_bytes((data_dir() / "ptb" / entry.name).read_bytes())
    with open(tmp_path / "ptb" / "ptb.valid.txt", "ab") as f:
        f.write(b" extra\n")
    with pytest.raises(UserError, match="checksum mismatch for .*ptb.valid.txt"):
        corpora.locate(corpora.CORPORA["ptb"], str(tmp_path))


def test_download_verifies_and_writes_atomically(tmp_path, monkeypatch):
    """The download path with the network replaced: good bytes land, bad bytes never do."""
    payload = "sisterðcity\n".encode("latin-1")
    entry = corpora.CorpusFile("train", "x.txt", "https://example.invalid/x.txt",
                               hashlib.sha256(payload.decode("latin-1").encode("utf-8")).hexdigest(), "latin-1")
    corpus = corpora.Corpus("fake", "fake", (entry,), tokenizer="word")
    monkeypatch.setenv("RNNLM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(corpora.urllib.request, "urlopen", lambda url, timeout: io.BytesIO(payload))
    path = corpora.locate(corpus, str(tmp_path / "empty"))["train"]
    assert path.read_text() == "sisterðcity\n"

    bad = corpora.Corpus("bad", "bad", (corpora.CorpusFile("train", "y.txt", "https://example.invalid/y", "0" * 64),),
                         tokenizer="word")
    with pytest.raises(UserError, match="checksum mismatch for https://example.invalid/y"):
        corpora.locate(bad, str(tmp_path / "empty"))
    assert not list((tmp_path / "cache" / "bad").glob("*"))

    def offline(url, timeout):
        raise OSError("network unreachable")
    monkeypatch.setattr(corpora.urllib.request, "urlopen", offline)
    with pytest.raises(UserError, match="cannot download .*network unreachable"):
        corpora.locate(bad, "")


def test_registry_checksums_match_the_shared_copies():
    for corpus in corpora.CORPORA.values():
        paths = corpora.locate(corpus, str(data_dir()), download=False)
        assert set(paths) == {f.split for f in corpus.files}


def test_a_crlf_copy_is_accepted_and_stored_with_lf(tmp_path, monkeypatch):
    """sst2_phrases' train.tsv is CRLF at its URL: the download checks that sha256, stores LF, and a CRLF copy
    in a data directory is accepted as it is."""
    lf = b"label\tsentence\n1\tgood\n"
    crlf = lf.replace(b"\n", b"\r\n")
    entry = corpora.CorpusFile("train", "train.tsv", "https://example.invalid/train.tsv",
                               hashlib.sha256(lf).hexdigest(), format="tsv", crlf_sha256=hashlib.sha256(crlf).hexdigest())
    corpus = corpora.Corpus("fake", "fake", (entry,), tokenizer="word", task="classify")
    monkeypatch.setenv("RNNLM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(corpora.urllib.request, "urlopen", lambda url, timeout: io.BytesIO(crlf))
    assert corpora.locate(corpus, str(tmp_path / "empty"))["train"].read_bytes() == lf
    (tmp_path / "data" / "fake").mkdir(parents=True)
    (tmp_path / "data" / "fake" / "train.tsv").write_bytes(crlf)
    assert corpora.locate(corpus, str(tmp_path / "data"), download=False)["train"].read_bytes() == crlf
    (tmp_path / "data" / "fake" / "train.tsv").write_bytes(crlf + b"0\tbad\r\n")
    with pytest.raises(UserError, match="checksum mismatch"):
        corpora.locate(corpus, str(tmp_path / "data"), download=False)


def test_sst2_phrases_shares_the_sst2_test_file_and_its_urls_are_pinned():
    corpus = corpora.CORPORA["sst2_phrases"]
    test = next(f for f in corpus.files if f.split == "test")
    assert (test.directory, test.name, test.sha256) == ("sst2", "stsa.binary.test", next(
        f.sha256 for f in corpora.CORPORA["sst2"].files if f.split == "test"))
    assert all("/54e22ca58a656750f474ec61ebccaf5ff596de96/" in f.url for f in corpus.files if f.format == "tsv")
