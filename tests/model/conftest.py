"""Fixtures the ONNX tests share (tests/model/backends, tests/model/onnx_graph): one graph
cache for the session, so all-MiniLM-L6-v2's graphs are built once, not once per module."""

import pytest
from realtext import mixed_length_texts

from beam_e5.model.config import EncoderConfig
from beam_e5.model.encoder import Encoder


@pytest.fixture(scope="session")
def onnx_cache(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("onnx-cache"))


@pytest.fixture(scope="session")
def texts() -> list[str]:
    return mixed_length_texts(320)


@pytest.fixture(scope="session")
def torch_vectors(minilm_dir, texts):
    enc = Encoder.load(EncoderConfig(minilm_dir, backend="torch").resolve())
    assert enc.backend.name == "torch"
    return enc.encode(texts)[0]

