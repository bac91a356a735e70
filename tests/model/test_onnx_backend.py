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
    # per-token int8 measured 0.9988 mean, 0.9933 min here (ORT's per-tensor dynamic
    # quantiser: about 0.997 mean); quantisation really happened if it is not ~1.0
    assert 0.998 <= cos.mean() < 0.99999 and cos.min() >= 0.99


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
                                                                 cache, caplog):
    caplog.set_level("INFO", logger="beam_e5")
    enc = Encoder.load(EncoderConfig(minilm_dir, model_cache_dir=cache).resolve())
    assert enc.backend == "onnx" and isinstance(enc.model, onnx_backend.OnnxEncoderModel)
    # the log line that names the backend says it is ONNX Runtime and how to get torch
    assert "with the onnx backend (ONNX Runtime, fp32; default on CPU; --backend torch" \
        in caplog.text
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


@pytest.mark.parametrize("variant", ["onnx", pytest.param("onnx-int8", marks=pytest.mark.slow)])
def test_external_data_graph_matches_torch_and_is_cached(minilm_dir, texts, torch_vectors,  # noqa: F811
                                                         tmp_path, monkeypatch, variant):
    """Encoders over 2 GiB (multilingual-e5-large) are written as graph + weights file; the
    limit is lowered so that MiniLM's 90 MB take that path, the same code as the real size."""
    import json

    import onnx
    from transformers import AutoConfig

    monkeypatch.setattr(onnx_backend, "EXTERNAL_DATA_BYTES", 0)
    enc = Encoder.load(EncoderConfig(minilm_dir, backend=variant,
                                     model_cache_dir=str(tmp_path)).resolve())
    graph = enc.model.graph_file
    folder = graph.parent
    assert sorted(p.name for p in folder.iterdir()) == [
        onnx_backend.BUILD_FILE, "config.json", onnx_backend.GRAPH_FILE, onnx_backend.DATA_FILE]
    build = json.loads((folder / onnx_backend.BUILD_FILE).read_text())
    assert build["external_data"] is True and build["fp32_weight_bytes"] > 80_000_000
    # the weights are in the .data file, the graph file holds only the graph
    assert graph.stat().st_size < 1_000_000 < (folder / onnx_backend.DATA_FILE).stat().st_size
    proto = onnx.load(str(graph), load_external_data=False)
    assert any(init.data_location == onnx.TensorProto.EXTERNAL
               for init in proto.graph.initializer)
    assert {e.value for init in proto.graph.initializer for e in init.external_data
            if e.key == "location"} == {onnx_backend.DATA_FILE}
    vecs, _ = enc.encode(texts)
    cos = np.sum(vecs * torch_vectors, axis=1)
    if variant == "onnx":
        assert cos.min() >= 0.99999, f"worst cosine {cos.min()} at {cos.argmin()}"
    else:
        assert 0.998 <= cos.mean() < 0.99999
    loads = []  # cached per machine: a second worker opens it without loading torch
    again = onnx_backend.ensure_graph(minilm_dir, AutoConfig.from_pretrained(minilm_dir), variant,
                                      str(tmp_path), lambda: loads.append(1))
    assert again == graph and loads == []
    assert [p.name for p in (tmp_path / "onnx").iterdir() if p.name.startswith(".building")] == []


def test_small_encoders_stay_one_self_contained_file(minilm_dir, cache):  # noqa: F811
    import json

    enc = Encoder.load(EncoderConfig(minilm_dir, backend="onnx", model_cache_dir=cache).resolve())
    folder = enc.model.graph_file.parent
    assert json.loads((folder / onnx_backend.BUILD_FILE).read_text())["external_data"] is False
    assert not (folder / onnx_backend.DATA_FILE).exists()
    # and the size no longer sends anything to torch: auto runs onnx for every CPU encoder
    assert onnx_backend.pick_backend("auto", "cpu", "xlm-roberta") == "onnx"


@pytest.mark.slow
@pytest.mark.parametrize("family", ["bert", "mpnet"])
def test_external_data_without_the_attention_fuser(tiny_models, tmp_path, monkeypatch,  # noqa: F811
                                                   family):
    """The other optimiser paths (ORT's for BERT-likes, none for MPNet) also keep the .data."""
    path = tiny_models(family, f"tiny-{family}")
    monkeypatch.setattr(onnx_backend, "EXTERNAL_DATA_BYTES", 0)
    monkeypatch.setattr(onnx_backend, "fuse_for_ort", _broken_fuser)
    texts = ["hello world", "query passage " * 60, "the quick brown fox"]
    ref, _ = Encoder.load(EncoderConfig(path, backend="torch").resolve()).encode(texts)
    enc = Encoder.load(EncoderConfig(path, backend="onnx", model_cache_dir=str(tmp_path))
                       .resolve())
    assert (enc.model.graph_file.parent / onnx_backend.DATA_FILE).exists()
    vecs, _ = enc.encode(texts)
    assert np.min(np.sum(vecs * ref, axis=1)) >= 0.99999


def _broken_fuser(src, dst, external_data=False):
    raise RuntimeError("pattern matcher bug")


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
def test_int8_graph_keeps_fused_attention_and_quantises_every_weight_matmul(minilm_dir,  # noqa: F811
                                                                           cache):
    import json

    import onnx

    enc = Encoder.load(EncoderConfig(minilm_dir, backend="onnx-int8",
                                     model_cache_dir=cache).resolve())
    graph = enc.model.graph_file
    build = json.loads((graph.parent / onnx_backend.BUILD_FILE).read_text())
    layers = enc.model.config.num_hidden_layers
    # the fp32 fused graph's Attention (packed QKV) stays; per layer the attention output
    # projection and both feed-forward MatMuls are int8, quantised per token
    assert build["recipe"] == onnx_backend.EXPORT_RECIPE and build["int8_matmuls"] == 3 * layers
    proto = onnx.load(str(graph))
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("Attention") == layers and ops.count("MatMulIntegerToFloat") == 3 * layers
    assert "DynamicQuantizeLinear" not in ops and "MatMulInteger" not in ops
    weights = {init.name for init in proto.graph.initializer}
    assert not [n.name for n in proto.graph.node if n.op_type == "MatMul"
                and n.input[1] in weights]  # no fp32 weight MatMul left


def _matmul_graph(path, weight, second_weight=None):
    """x [rows, K] -> x @ weight (and x @ second_weight), plus a MatMul of two activations."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    k = weight.shape[0]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"], name="proj"),
             helper.make_node("MatMul", ["x", "xt"], ["gram"], name="activations"),
             helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0])]
    inits = [numpy_helper.from_array(weight, "w")]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
               helper.make_tensor_value_info("gram", TensorProto.FLOAT, None)]
    if second_weight is not None:
        nodes.append(helper.make_node("MatMul", ["x", "w2"], ["y2"], name="proj2"))
        inits.append(numpy_helper.from_array(second_weight, "w2"))
        outputs.append(helper.make_tensor_value_info("y2", TensorProto.FLOAT, None))
    nodes = [nodes[2], nodes[0], nodes[1]] + nodes[3:]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, ["rows", k])], outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 10
    onnx.save(model, str(path))


def test_int8_scales_each_token_on_its_own(tmp_path):
    """One token with activations 1000x larger does not coarsen the others (a single scale
    for the whole tensor would leave them ~8 steps of 127), and MatMuls reading the same
    input share its quantisation; MatMuls of two activations stay fp32."""
    import onnx
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 48)).astype(np.float32) * 0.1
    w2 = rng.standard_normal((64, 16)).astype(np.float32)
    x = rng.standard_normal((6, 64)).astype(np.float32)
    x[3] *= 1000.0
    _matmul_graph(tmp_path / "fp32.onnx", w, w2)
    assert onnx_backend.quantize_int8(tmp_path / "fp32.onnx", tmp_path / "int8.onnx") == 2
    ops = [n.op_type for n in onnx.load(str(tmp_path / "int8.onnx")).graph.node]
    assert ops.count("MatMulIntegerToFloat") == 2 and ops.count("MatMul") == 1
    assert ops.count("ReduceMax") == 1  # one per-token scale for x, shared by both
    session = ort.InferenceSession(str(tmp_path / "int8.onnx"),
                                   providers=["CPUExecutionProvider"])
    y, gram, y2 = session.run(["y", "gram", "y2"], {"x": x})
    np.testing.assert_allclose(gram, x @ x.T, rtol=1e-5)
    for got, ref in ((y, x @ w), (y2, x @ w2)):
        rel = np.abs(got - ref).max(axis=1) / np.abs(ref).max(axis=1)
        assert rel.max() < 0.02, rel  # every row, the small ones included
        cos = np.sum(got * ref, axis=1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
        assert cos.min() > 0.9999 and not np.array_equal(got, ref)


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

    monkeypatch.setattr(onnx_backend, "fuse_for_ort", _broken_fuser)
    texts = ["hello world", "query passage " * 60, "the quick brown fox"]
    ref, _ = Encoder.load(EncoderConfig(path, backend="torch").resolve()).encode(texts)
    enc = Encoder.load(EncoderConfig(path, backend="onnx", model_cache_dir=str(tmp_path))
                       .resolve())
    assert "attention fusion failed" in caplog.text
    build = json.loads((enc.model.graph_file.parent / onnx_backend.BUILD_FILE).read_text())
    assert build["fuser"] == "onnxruntime.transformers"
    vecs, _ = enc.encode(texts)
    assert np.min(np.sum(vecs * ref, axis=1)) >= 0.99999
