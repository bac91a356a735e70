"""The ONNX Runtime backend: same vectors as torch, cached graph, refusals before the run."""

import threading

import numpy as np
import pytest
from model_fixtures import minilm_dir, tiny_models  # noqa: F401  (pytest fixtures)
from realtext import mixed_length_texts

from beam_e5.model import onnx_backend
from beam_e5.errors import ConfigError
from beam_e5.model.config import EncoderConfig
from beam_e5.model.encoder import Encoder


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("onnx-cache"))


@pytest.fixture(scope="module")
def texts():
    return mixed_length_texts(320)


@pytest.fixture(scope="module")
def torch_vectors(minilm_dir, texts):  # noqa: F811
    enc = Encoder.load(EncoderConfig(minilm_dir, backend="torch").resolve())
    assert enc.backend == "torch" and not isinstance(enc.model, onnx_backend.OnnxEncoderModel)
    return enc.encode(texts)[0]


@pytest.mark.slow
def test_onnx_matches_torch_and_keeps_order(minilm_dir, cache, texts, torch_vectors):  # noqa: F811
    enc = Encoder.load(EncoderConfig(minilm_dir, backend="onnx", model_cache_dir=cache).resolve())
    assert isinstance(enc.model, onnx_backend.OnnxEncoderModel)
    vecs, stats = enc.encode(texts)
    assert vecs.shape == torch_vectors.shape and vecs.dtype == np.float32
    cos = np.sum(vecs * torch_vectors, axis=1)
    assert cos.min() >= 0.99999, f"worst cosine {cos.min()} at {cos.argmin()}"
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert stats.truncated >= 20 and stats.micro_batches >= 1


@pytest.mark.slow
def test_onnx_int8_is_close_but_not_identical(minilm_dir, cache, texts, torch_vectors):  # noqa: F811
    enc = Encoder.load(EncoderConfig(minilm_dir, backend="onnx-int8",
                                     model_cache_dir=cache).resolve())
    vecs, _ = enc.encode(texts)
    cos = np.sum(vecs * torch_vectors, axis=1)
    # measured about 0.997 mean; quantisation really happened if it is not ~1.0
    assert 0.99 <= cos.mean() < 0.99999 and cos.min() >= 0.95


@pytest.mark.slow
def test_graph_is_cached_and_reused_without_loading_torch(minilm_dir, cache):  # noqa: F811
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(minilm_dir)
    loads = []

    def load_torch():
        from transformers import AutoModel

        loads.append(1)
        return AutoModel.from_pretrained(minilm_dir)

    first = onnx_backend.ensure_graph(minilm_dir, config, "onnx", cache, load_torch)
    again = onnx_backend.ensure_graph(minilm_dir, config, "onnx", cache, load_torch)
    assert first == again and first.exists() and len(loads) <= 1
    # a different variant is a different graph
    assert onnx_backend.graph_dir(cache, minilm_dir, None, "onnx-int8") != first.parent


@pytest.mark.slow
def test_concurrent_builds_export_once(tiny_models, tmp_path):  # noqa: F811
    from transformers import AutoConfig, AutoModel

    path = tiny_models("bert", "e5-small-v2")
    config = AutoConfig.from_pretrained(path)
    loads = []

    def load_torch():
        loads.append(1)
        return AutoModel.from_pretrained(path)

    results = []
    threads = [threading.Thread(target=lambda: results.append(onnx_backend.ensure_graph(
        path, config, "onnx", str(tmp_path), load_torch))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(loads) == 1 and len(set(results)) == 1 and results[0].exists()
    leftovers = [p.name for p in (tmp_path / "onnx").iterdir() if p.name.startswith(".building")]
    assert leftovers == []


def test_failed_build_leaves_nothing_under_the_final_name(tiny_models, tmp_path):  # noqa: F811
    from transformers import AutoConfig

    path = tiny_models("bert", "e5-small-v2")

    def broken():
        raise RuntimeError("export died")

    with pytest.raises(RuntimeError, match="export died"):
        onnx_backend.ensure_graph(path, AutoConfig.from_pretrained(path), "onnx", str(tmp_path),
                                  broken)
    target = onnx_backend.graph_dir(str(tmp_path), path, None, "onnx")
    assert not target.exists()
    assert [p for p in (tmp_path / "onnx").iterdir() if p.is_dir()] == []


@pytest.mark.slow
def test_tiny_xlm_roberta_with_prefix_matches_torch(tiny_models, tmp_path):  # noqa: F811
    path = tiny_models("xlm-roberta", "multilingual-e5-base")
    texts = ["hello world", "query passage " * 40, "", "the quick brown fox"]
    ref, _ = Encoder.load(EncoderConfig(path, role="query", backend="torch").resolve()).encode(texts)
    enc = Encoder.load(EncoderConfig(path, role="query", backend="onnx",
                                     model_cache_dir=str(tmp_path)).resolve())
    vecs, _ = enc.encode(texts)
    assert enc.prefix == "query: "
    assert np.min(np.sum(vecs * ref, axis=1)) >= 0.99999


def test_decoder_models_are_refused_before_the_run(tiny_models):  # noqa: F811
    path = tiny_models("mistral", "e5-mistral-7b-instruct")
    with pytest.raises(ConfigError, match="use --backend torch"):
        EncoderConfig(path, backend="onnx").resolve()


@pytest.mark.parametrize("kwargs,message", [
    (dict(backend="onnx", dtype="bfloat16"), "computes in float32"),
    (dict(backend="tensorrt"), "--backend must be one of"),
])
def test_bad_backend_options_are_refused(minilm_dir, kwargs, message):  # noqa: F811
    with pytest.raises(ConfigError, match=message):
        EncoderConfig(minilm_dir, **kwargs).resolve()


def test_onnx_on_cuda_is_refused(minilm_dir):  # noqa: F811
    with pytest.raises(ConfigError, match="CPU only"):
        EncoderConfig(minilm_dir, backend="onnx", device="cuda").resolve()


def test_only_the_approximate_backend_enters_the_signature(minilm_dir):  # noqa: F811
    for same in ("auto", "torch", "onnx"):  # one function: snapshots carry over between them
        assert "backend" not in EncoderConfig(minilm_dir, backend=same).resolve().signature()
    assert EncoderConfig(minilm_dir, backend="onnx-int8").resolve().signature()["backend"] == \
        "onnx-int8"


def test_auto_picks_onnx_on_cpu_and_torch_where_onnx_cannot_run(minilm_dir, tiny_models,  # noqa: F811
                                                                 cache):
    enc = Encoder.load(EncoderConfig(minilm_dir, model_cache_dir=cache).resolve())
    assert enc.backend == "onnx" and isinstance(enc.model, onnx_backend.OnnxEncoderModel)
    mistral = tiny_models("mistral", "e5-mistral-7b-instruct")
    assert Encoder.load(EncoderConfig(mistral, model_cache_dir=cache).resolve()).backend == "torch"
    bf16 = EncoderConfig(minilm_dir, dtype="bfloat16", device="cpu", model_cache_dir=cache)
    assert Encoder.load(bf16.resolve()).backend == "torch"
    assert onnx_backend.pick_backend("auto", "cuda", "bert") == "torch"
    assert onnx_backend.pick_backend("auto", "cpu", "bert") == "onnx"


def test_auto_falls_back_to_torch_when_the_graph_cannot_be_built(minilm_dir, tmp_path,  # noqa: F811
                                                                  monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("exporter crashed")

    monkeypatch.setattr(onnx_backend, "load_onnx_model", broken)
    enc = Encoder.load(EncoderConfig(minilm_dir, model_cache_dir=str(tmp_path)).resolve())
    assert enc.backend == "torch" and enc.encode(["still embeds"])[0].shape == (1, 384)
    with pytest.raises(RuntimeError, match="exporter crashed"):  # explicit onnx: no fallback
        Encoder.load(EncoderConfig(minilm_dir, backend="onnx",
                                   model_cache_dir=str(tmp_path)).resolve())


def test_encoders_over_two_gib_stay_on_torch(tmp_path):
    big = tmp_path / "multilingual-e5-large"
    big.mkdir()
    with open(big / "model.safetensors", "wb") as f:  # sparse: no disk used
        f.truncate(1_200_000_000)
    assert onnx_backend.fp32_weight_bytes(str(big), "float32") == 1_200_000_000
    assert onnx_backend.fp32_weight_bytes(str(big), "torch.bfloat16") == 2_400_000_000
    fp16 = onnx_backend.fp32_weight_bytes(str(big), "float16")
    assert fp16 == 2_400_000_000  # stored in half precision, exported in fp32
    assert onnx_backend.pick_backend("auto", "cpu", "xlm-roberta", fp16) == "torch"
    assert onnx_backend.pick_backend("auto", "cpu", "xlm-roberta", 1_200_000_000) == "onnx"
    with pytest.raises(ConfigError, match="exceed what one ONNX file holds"):
        onnx_backend.check_backend_supported("onnx", "xlm-roberta", "cpu", fp16)
    assert onnx_backend.fp32_weight_bytes("intfloat/e5-large-v2") is None  # hub: unknown


def _graph_ops(graph_file) -> set[str]:
    import onnx

    return {n.op_type for n in onnx.load(str(graph_file), load_external_data=False).graph.node}


def test_fp32_graph_has_one_fused_attention_per_layer(minilm_dir, cache):  # noqa: F811
    import json

    enc = Encoder.load(EncoderConfig(minilm_dir, backend="onnx", model_cache_dir=cache).resolve())
    graph = enc.model.graph_file
    build = json.loads((graph.parent / onnx_backend.BUILD_FILE).read_text())
    layers = enc.model.config.num_hidden_layers
    assert build["variant"] == "onnx" and build["fuser"] == "onnxscript.ort_fusions"
    assert build["fusions"]["attention"] == layers
    assert build["fusions"]["skip_layer_normalization"] == 2 * layers
    assert {"Attention", "SkipLayerNormalization", "BiasGelu"} <= _graph_ops(graph)
    assert "Softmax" not in _graph_ops(graph)  # no unfused attention left


@pytest.mark.slow
def test_int8_graph_quantises_the_qkv_projections(minilm_dir, cache):  # noqa: F811
    enc = Encoder.load(EncoderConfig(minilm_dir, backend="onnx-int8",
                                     model_cache_dir=cache).resolve())
    ops = _graph_ops(enc.model.graph_file)
    # Attention stays unfused so that its Q, K, V MatMuls are int8 too
    assert "Attention" not in ops and "MatMulInteger" in ops


@pytest.mark.slow
@pytest.mark.parametrize("family", ["bert", "roberta", "distilbert", "mpnet", "electra"])
def test_every_onnx_encoder_family_matches_torch(tiny_models, tmp_path, family):  # noqa: F811
    path = tiny_models(family, f"tiny-{family}")
    texts = ["hello world", "query passage " * 60, "", "the quick brown fox", "licence " * 7]
    ref, _ = Encoder.load(EncoderConfig(path, backend="torch").resolve()).encode(texts)
    enc = Encoder.load(EncoderConfig(path, backend="onnx", model_cache_dir=str(tmp_path))
                       .resolve())
    assert isinstance(enc.model, onnx_backend.OnnxEncoderModel)
    vecs, _ = enc.encode(texts)
    assert np.min(np.sum(vecs * ref, axis=1)) >= 0.99999


@pytest.mark.slow
def test_a_failing_attention_rewrite_falls_back_to_ort_fusions(tiny_models, tmp_path,  # noqa: F811
                                                               monkeypatch, caplog):
    import json

    path = tiny_models("bert", "e5-small-v2")

    def broken(src, dst):
        raise RuntimeError("pattern matcher bug")

    monkeypatch.setattr(onnx_backend, "fuse_for_ort", broken)
    texts = ["hello world", "query passage " * 60, "the quick brown fox"]
    ref, _ = Encoder.load(EncoderConfig(path, backend="torch").resolve()).encode(texts)
    enc = Encoder.load(EncoderConfig(path, backend="onnx", model_cache_dir=str(tmp_path))
                       .resolve())
    assert "attention fusion failed" in caplog.text
    build = json.loads((enc.model.graph_file.parent / onnx_backend.BUILD_FILE).read_text())
    assert build["fuser"] == "onnxruntime.transformers"
    vecs, _ = enc.encode(texts)
    assert np.min(np.sum(vecs * ref, axis=1)) >= 0.99999
