"""The weights' fingerprint of a local model: the SHA-256 of its weight files, hashed once and
read back from the model cache while the files are unchanged."""

import hashlib
import time

import pytest

from beam_e5.model import fingerprint
from beam_e5.model.fingerprint import cached_local_digest


def _model(root, weights: bytes = b"w" * 1000):
    root.mkdir()
    (root / "model.safetensors").write_bytes(weights)
    (root / "config.json").write_text("{}")  # not a weight file
    return root


def _records(cache):
    return sorted((cache / "fingerprints").glob("*.json"))


@pytest.fixture
def settled(monkeypatch):
    """Files written by the test count as settled at once (they are minutes old in use)."""
    monkeypatch.setattr(fingerprint, "SETTLED_S", 0.0)


def test_the_digest_is_the_files_sha256_and_is_read_back_while_unchanged(
        tmp_path, monkeypatch, settled) -> None:
    root, cache = _model(tmp_path / "m"), tmp_path / "cache"
    want = hashlib.sha256(b"w" * 1000).hexdigest()
    assert cached_local_digest(root, cache) == want
    assert len(_records(cache)) == 1

    def no_hashing(files):
        raise AssertionError("hashed again although nothing changed")

    monkeypatch.setattr(fingerprint, "sha256_files", no_hashing)
    assert cached_local_digest(root, cache) == want


def test_weights_rewritten_in_place_with_the_same_size_are_hashed_again(
        tmp_path, settled) -> None:
    root, cache = _model(tmp_path / "m"), tmp_path / "cache"
    first = cached_local_digest(root, cache)
    time.sleep(0.05)  # past the file system's timestamp tick
    with open(root / "model.safetensors", "r+b") as f:
        f.write(b"x")  # same size, same inode
    assert cached_local_digest(root, cache) == hashlib.sha256(b"x" + b"w" * 999).hexdigest()
    assert cached_local_digest(root, cache) != first


def test_files_changed_just_now_are_hashed_but_not_recorded(tmp_path) -> None:
    root, cache = _model(tmp_path / "m"), tmp_path / "cache"
    assert cached_local_digest(root, cache) == hashlib.sha256(b"w" * 1000).hexdigest()
    assert _records(cache) == []  # a change within the same timestamp tick would go unseen


def test_without_a_writable_cache_the_files_are_hashed_every_time(tmp_path, settled) -> None:
    root = _model(tmp_path / "m")
    blocked = tmp_path / "cache"
    blocked.write_text("a file where the cache directory would be")
    want = hashlib.sha256(b"w" * 1000).hexdigest()
    assert cached_local_digest(root, blocked) == want
    assert cached_local_digest(root, None) == want
