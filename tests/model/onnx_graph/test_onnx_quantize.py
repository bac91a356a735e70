"""int8 quantisation: one activation scale per token, every weight MatMul rewritten."""

import json

import numpy as np
import pytest

from beam_e5.model.config import EncoderConfig
from beam_e5.model.encoder import Encoder
from beam_e5.model.onnx_graph import cache
from beam_e5.model.onnx_graph.quantize import quantize_int8


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
    assert quantize_int8(tmp_path / "fp32.onnx", tmp_path / "int8.onnx") == 2
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


def test_only_the_initializers_still_read_are_kept(tmp_path):
    import onnx

    w = np.ones((8, 4), np.float32)
    _matmul_graph(tmp_path / "fp32.onnx", w)
    quantize_int8(tmp_path / "fp32.onnx", tmp_path / "int8.onnx")
    names = {init.name for init in onnx.load(str(tmp_path / "int8.onnx")).graph.initializer}
    assert "w" not in names  # the fp32 weight is gone, its int8 copy and scale stay
    assert {"int8/proj/w", "int8/proj/w_scale", "int8/zp", "int8/one"} <= names


@pytest.mark.slow
def test_int8_graph_keeps_fused_attention_and_quantises_every_weight_matmul(minilm_dir,
                                                                           onnx_cache):
    import onnx
    from transformers import AutoConfig

    enc = Encoder.load(EncoderConfig(minilm_dir, backend="onnx-int8",
                                     model_cache_dir=onnx_cache).resolve())
    graph = enc.backend.graph_file
    build = json.loads((graph.parent / cache.BUILD_FILE).read_text())
    layers = AutoConfig.from_pretrained(minilm_dir).num_hidden_layers
    # the fp32 fused graph's Attention (packed QKV) stays; per layer the attention output
    # projection and both feed-forward MatMuls are int8, quantised per token
    assert build["recipe"] == cache.EXPORT_RECIPE and build["int8_matmuls"] == 3 * layers
    proto = onnx.load(str(graph))
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("Attention") == layers and ops.count("MatMulIntegerToFloat") == 3 * layers
    assert "DynamicQuantizeLinear" not in ops and "MatMulInteger" not in ops
    weights = {init.name for init in proto.graph.initializer}
    assert not [n.name for n in proto.graph.node if n.op_type == "MatMul"
                and n.input[1] in weights]  # no fp32 weight MatMul left
