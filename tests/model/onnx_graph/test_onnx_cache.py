"""The cached graph build: once per machine, atomic, keyed by weights and variant."""

import json
import threading

import numpy as np
import pytest

from beam_e5.model.config import EncoderConfig
from beam_e5.model.encoder import Encoder
from beam_e5.model.onnx_graph import cache


@pytest.mark.slow
def test_graph_is_cached_and_reused_without_loading_torch(minilm_dir, onnx_cache):
    loads = []

    def load_torch():
        from transformers import AutoModel

        loads.append(1)
        return AutoModel.from_pretrained(minilm_dir)

    first = cache.ensure_graph(minilm_dir, None, "onnx", onnx_cache, load_torch)
    again = cache.ensure_graph(minilm_dir, None, "onnx", onnx_cache, load_torch)
    assert first == again and first.exists() and len(loads) <= 1
    # a different variant is a different graph
    assert cache.graph_dir(onnx_cache, minilm_dir, None, "onnx-int8") != first.parent


@pytest.mark.slow
def test_concurrent_builds_export_once(tiny_models, tmp_path):
    from transformers import AutoModel

    path = tiny_models("bert", "e5-small-v2")
    loads = []

    def load_torch():
        loads.append(1)
        return AutoModel.from_pretrained(path)

    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.ensure_graph(
        path, None, "onnx", str(tmp_path), load_torch))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(loads) == 1 and len(set(results)) == 1 and results[0].exists()
    leftovers = [p.name for p in (tmp_path / "onnx").iterdir() if p.name.startswith(".building")]
    assert leftovers == []


def test_failed_build_leaves_nothing_under_the_final_name(tiny_models, tmp_path):
    path = tiny_models("bert", "e5-small-v2")

    def broken():
        raise RuntimeError("export died")

    with pytest.raises(RuntimeError, match="export died"):
        cache.ensure_graph(path, None, "onnx", str(tmp_path), broken)
    target = cache.graph_dir(str(tmp_path), path, None, "onnx")
    assert not target.exists()
    assert [p for p in (tmp_path / "onnx").iterdir() if p.is_dir()] == []


def test_the_cache_key_names_the_weights_and_the_variant(tiny_models, tmp_path):
    path = tiny_models("bert", "e5-small-v2")
    onnx = cache.graph_dir(str(tmp_path), path, None, "onnx")
    assert onnx == cache.graph_dir(str(tmp_path), path.rstrip("/") + "/", None, "onnx")
    assert onnx.parent == tmp_path / "onnx" and onnx.name.startswith("e5-small-v2-onnx-")
    assert cache.graph_dir(str(tmp_path), path, None, "onnx-int8").name.startswith(
        "e5-small-v2-onnx-int8-")
    # a hub model (no local directory) is identified by its resolved commit
    assert cache.weights_key("org/model", "abc") != cache.weights_key("org/model", "abd")


@pytest.mark.parametrize("variant", ["onnx", pytest.param("onnx-int8", marks=pytest.mark.slow)])
def test_external_data_graph_matches_torch_and_is_cached(minilm_dir, texts, torch_vectors,
                                                         tmp_path, monkeypatch, variant):
    """Encoders over 2 GiB (multilingual-e5-large) are written as graph + weights file; the
    limit is lowered so that MiniLM's 90 MB take that path, the same code as the real size."""
    import onnx

    monkeypatch.setattr(cache, "EXTERNAL_DATA_BYTES", 0)
    enc = Encoder.load(EncoderConfig(minilm_dir, backend=variant,
                                     model_cache_dir=str(tmp_path)).resolve())
    graph = enc.backend.graph_file
    folder = graph.parent
    assert sorted(p.name for p in folder.iterdir()) == [
        cache.BUILD_FILE, "config.json", cache.GRAPH_FILE, cache.DATA_FILE]
    build = json.loads((folder / cache.BUILD_FILE).read_text())
    assert build["external_data"] is True and build["fp32_weight_bytes"] > 80_000_000
    # the weights are in the .data file, the graph file holds only the graph
    assert graph.stat().st_size < 1_000_000 < (folder / cache.DATA_FILE).stat().st_size
    proto = onnx.load(str(graph), load_external_data=False)
    assert any(init.data_location == onnx.TensorProto.EXTERNAL
               for init in proto.graph.initializer)
    assert {e.value for init in proto.graph.initializer for e in init.external_data
            if e.key == "location"} == {cache.DATA_FILE}
    vecs, _ = enc.encode(texts)
    cos = np.sum(vecs * torch_vectors, axis=1)
    if variant == "onnx":
        assert cos.min() >= 0.99999, f"worst cosine {cos.min()} at {cos.argmin()}"
    else:
        assert 0.998 <= cos.mean() < 0.99999
    loads = []  # cached per machine: a second worker opens it without loading torch
    again = cache.ensure_graph(minilm_dir, None, variant, str(tmp_path),
                               lambda: loads.append(1))
    assert again == graph and loads == []
    assert [p.name for p in (tmp_path / "onnx").iterdir() if p.name.startswith(".building")] == []


def test_small_encoders_stay_one_self_contained_file(minilm_dir, onnx_cache):
    enc = Encoder.load(EncoderConfig(minilm_dir, backend="onnx",
                                     model_cache_dir=onnx_cache).resolve())
    folder = enc.backend.graph_file.parent
    assert json.loads((folder / cache.BUILD_FILE).read_text())["external_data"] is False
    assert not (folder / cache.DATA_FILE).exists()


def test_the_key_reads_torchs_version_without_importing_it(monkeypatch):
    """The package metadata gives torch.__version__'s string (so caches built before keep
    their key); a torch without metadata is asked itself."""
    import importlib.metadata

    import torch

    assert cache.torch_version() == torch.__version__

    def no_metadata(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", no_metadata)
    assert cache.torch_version() == torch.__version__
