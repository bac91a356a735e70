"""Export and fusion: one fused attention per layer, and the fallbacks when fusion fails."""

import json

import numpy as np
import pytest

from beam_e5.model.config import EncoderConfig
from beam_e5.model.encoder import Encoder
from beam_e5.model.onnx_graph import cache, export


def graph_ops(graph_file) -> set[str]:
    import onnx

    return {n.op_type for n in onnx.load(str(graph_file), load_external_data=False).graph.node}


@pytest.fixture
def fuser_fails(monkeypatch):
    """onnxscript's attention rewriter raising, as a bug in it would on an unusual graph."""
    def broken(src, dst, external_data=False):
        raise RuntimeError("pattern matcher bug")

    monkeypatch.setattr(export, "fuse_for_ort", broken)


def test_fp32_graph_has_one_fused_attention_per_layer(minilm_dir, onnx_cache):
    from transformers import AutoConfig

    enc = Encoder.load(EncoderConfig(minilm_dir, backend="onnx",
                                     model_cache_dir=onnx_cache).resolve())
    graph = enc.backend.graph_file
    build = json.loads((graph.parent / cache.BUILD_FILE).read_text())
    layers = AutoConfig.from_pretrained(minilm_dir).num_hidden_layers
    assert build["variant"] == "onnx" and build["fuser"] == "onnxscript.ort_fusions"
    assert build["fusions"]["attention"] == layers
    assert build["fusions"]["skip_layer_normalization"] == 2 * layers
    assert {"Attention", "SkipLayerNormalization", "BiasGelu"} <= graph_ops(graph)
    assert "Softmax" not in graph_ops(graph)  # no unfused attention left


@pytest.mark.slow
@pytest.mark.parametrize("family", ["bert", "mpnet"])
def test_external_data_without_the_attention_fuser(tiny_models, tmp_path, monkeypatch,
                                                   fuser_fails, family):
    """The other optimiser paths (ORT's for BERT-likes, none for MPNet) also keep the .data."""
    path = tiny_models(family, f"tiny-{family}")
    monkeypatch.setattr(cache, "EXTERNAL_DATA_BYTES", 0)
    texts = ["hello world", "query passage " * 60, "the quick brown fox"]
    ref, _ = Encoder.load(EncoderConfig(path, backend="torch").resolve()).encode(texts)
    enc = Encoder.load(EncoderConfig(path, backend="onnx", model_cache_dir=str(tmp_path))
                       .resolve())
    assert (enc.backend.graph_file.parent / cache.DATA_FILE).exists()
    vecs, _ = enc.encode(texts)
    assert np.min(np.sum(vecs * ref, axis=1)) >= 0.99999


@pytest.mark.slow
def test_a_failing_attention_rewrite_falls_back_to_ort_fusions(tiny_models, tmp_path,
                                                               fuser_fails, caplog):
    path = tiny_models("bert", "e5-small-v2")
    texts = ["hello world", "query passage " * 60, "the quick brown fox"]
    ref, _ = Encoder.load(EncoderConfig(path, backend="torch").resolve()).encode(texts)
    enc = Encoder.load(EncoderConfig(path, backend="onnx", model_cache_dir=str(tmp_path))
                       .resolve())
    assert "attention fusion failed" in caplog.text
    build = json.loads((enc.backend.graph_file.parent / cache.BUILD_FILE).read_text())
    assert build["fuser"] == "onnxruntime.transformers"
    vecs, _ = enc.encode(texts)
    assert np.min(np.sum(vecs * ref, axis=1)) >= 0.99999
