"""int8 MatMuls with one activation scale per token (what ``onnx-int8`` builds).

Every MatMul whose second input is a 2-D weight initializer ``[K, N]`` becomes

- per input (shared by the MatMuls that read it): ``s = max(|x|, over K) / 127`` per row
  (token), ``q = round(x / s) + 128`` as uint8 (so the zero point is the scalar 128 and ONNX
  Runtime's fast u8 x s8 kernels run; ``round`` is ``Cast`` of ``x * (127 / max) + 128.5``,
  one pass fewer than ``Round``);
- per MatMul: ``MatMulIntegerToFloat(q, W_q, 1, w_scale, 128) * s``, with ``W_q`` the weight
  rounded to int8 with one symmetric scale per output column.

MatMuls of two activations (attention scores, where attention is not fused) stay fp32.
ONNX Runtime's own dynamic quantiser (``quantize_dynamic``) uses ONE activation scale for
the whole input tensor, a micro-batch of up to thousands of tokens, so the few tokens with
large activations coarsen every other token's steps; one scale per token keeps the vectors
closer to fp32 (docs/benchmarks.md, "int8").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["quantize_int8"]

# Constants every rewritten MatMul shares, by initializer name.
_SHARED = {
    "int8/axis": np.array([-1], np.int64),
    "int8/inv127": np.array(1 / 127, np.float32),
    "int8/eps": np.array(1e-12, np.float32),
    "int8/f127": np.array(127, np.float32),
    "int8/f128_5": np.array(128.5, np.float32),
    "int8/zp": np.array(128, np.uint8),
    "int8/one": np.array(1, np.float32),
}


def quantize_int8(src: Path, dst: Path, external_data: bool = False) -> int:
    """Rewrite ``src``'s weight MatMuls as described above into ``dst``; returns how many."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    if not any(op.domain == "com.microsoft" for op in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    consts = [numpy_helper.from_array(value, name) for name, value in _SHARED.items()]
    quantised: dict[str, tuple[str, str]] = {}  # activation -> (uint8 codes, per-row scale)
    nodes: list[Any] = []
    rewritten = 0
    for node in graph.node:
        weight = inits.get(node.input[1]) if node.op_type == "MatMul" else None
        if weight is None or len(weight.dims) != 2:
            nodes.append(node)
            continue
        x = node.input[0]
        if x not in quantised:
            prefix = f"int8/{len(quantised)}/"
            nodes += _quantise_rows(x, prefix)
            quantised[x] = (prefix + "q", prefix + "scale")
        name = node.name or f"matmul{rewritten}"
        consts += _int8_weight(numpy_helper.to_array(weight), name)
        nodes += _int8_matmul(node.output[0], *quantised[x], name)
        rewritten += 1
    _replace_nodes(graph, nodes, consts)
    onnx.save(model, str(dst), save_as_external_data=external_data,
              all_tensors_to_one_file=True, location=dst.name + ".data")
    return rewritten


def _quantise_rows(x: str, p: str) -> list[Any]:
    """Nodes computing ``p + "q"`` (uint8 codes of ``x``) and ``p + "scale"`` (one per row)."""
    from onnx import TensorProto, helper

    return [
        helper.make_node("Abs", [x], [p + "abs"]),
        helper.make_node("ReduceMax", [p + "abs", "int8/axis"], [p + "max"], keepdims=1),
        helper.make_node("Max", [p + "max", "int8/eps"], [p + "max_eps"]),
        helper.make_node("Mul", [p + "max_eps", "int8/inv127"], [p + "scale"]),
        helper.make_node("Div", ["int8/f127", p + "max_eps"], [p + "inverse"]),
        helper.make_node("Mul", [x, p + "inverse"], [p + "scaled"]),
        # + 128.5 then Cast (which truncates; the value is >= 1.5): rounds to nearest
        helper.make_node("Add", [p + "scaled", "int8/f128_5"], [p + "shifted"]),
        helper.make_node("Cast", [p + "shifted"], [p + "q"], to=TensorProto.UINT8)]


def _int8_weight(weight: np.ndarray, name: str) -> list[Any]:
    """The weight rounded to int8 with one symmetric scale per output column."""
    from onnx import numpy_helper

    w = weight.astype(np.float32)
    w_scale = np.maximum(np.abs(w).max(axis=0), 1e-12) / 127
    w_q = np.clip(np.round(w / w_scale), -127, 127).astype(np.int8)
    return [numpy_helper.from_array(w_q, f"int8/{name}/w"),
            numpy_helper.from_array(w_scale.astype(np.float32), f"int8/{name}/w_scale")]


def _int8_matmul(output: str, q: str, scale: str, name: str) -> list[Any]:
    """``output = MatMulIntegerToFloat(q, W_q) * scale``: the int8 MatMul, rescaled per row."""
    from onnx import helper

    return [
        helper.make_node("MatMulIntegerToFloat",
                         [q, f"int8/{name}/w", "int8/one", f"int8/{name}/w_scale", "int8/zp"],
                         [f"int8/{name}/y"], name=f"{name}/int8", domain="com.microsoft"),
        helper.make_node("Mul", [f"int8/{name}/y", scale], [output])]


def _replace_nodes(graph: Any, nodes: list[Any], consts: list[Any]) -> None:
    """``graph`` with ``nodes``, keeping only the initializers (old or new) they read."""
    used = {i for n in nodes for i in n.input}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend(kept + [c for c in consts if c.name in used])
