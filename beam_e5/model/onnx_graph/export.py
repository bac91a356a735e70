"""Export a Hugging Face encoder to ONNX and fuse it for ONNX Runtime.

The graph is exported with PyTorch's ONNX exporter (``torch.onnx.export(dynamo=True)``:
dynamic batch and sequence axes, output ``last_hidden_state``), then rewritten with
onnxscript's ONNX Runtime fusions (:func:`fuse_for_ort`: each self-attention block becomes one
``Attention`` operator with a packed QKV projection, plus skip-LayerNorm and bias-GELU
fusions). Every step can write its weights to an external-data file beside the graph (one
ONNX file holds at most 2 GiB).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import torch

LOG = logging.getLogger(__name__)

_OPTIMIZER_MODEL_TYPES = ("bert", "xlm-roberta", "roberta", "electra")


class LastHidden(torch.nn.Module):
    """The encoder as a function of (input_ids, attention_mask) -> last_hidden_state."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def fp32_bytes(model: torch.nn.Module) -> int:
    """What the model's parameters and buffers take in fp32: the size of the exported graph."""
    tensors = list(model.parameters()) + list(model.buffers())
    return sum(4 * t.numel() for t in tensors if t.is_floating_point())


def export_graph(model: torch.nn.Module, out_file: Path, external_data: bool = False) -> None:
    """Export with dynamic batch and sequence axes (PyTorch's dynamo-based exporter).

    ``external_data`` writes the weights to ``<out_file>.data`` (required over 2 GiB).
    Attention is exported in its eager form (matmul, additive mask, softmax): the SDPA form
    exports with NaN guards (``IsNaN``/``Where`` over every score tensor) that ONNX Runtime
    pays for on every pass (docs/benchmarks.md).
    """
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation("eager")
    else:
        model.config._attn_implementation = "eager"  # older transformers
    ids = torch.full((2, 8), 5, dtype=torch.long)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0  # a padded row, so the mask path is traced, not constant-folded
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence", max=8192)
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)  # "torchvision is not installed" and similar
    try:
        with warnings.catch_warnings():  # axis-renaming chatter from the exporter
            warnings.simplefilter("ignore", UserWarning)
            program = torch.onnx.export(
                LastHidden(model.float().eval()).eval(), (ids, mask),
                input_names=["input_ids", "attention_mask"], output_names=["last_hidden_state"],
                dynamo=True, verbose=False, dynamic_shapes={
                    "input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}})
    finally:
        exporter_log.setLevel(level)
    program.save(str(out_file), external_data=external_data)


def save_ir(model: Any, dst: Path, external_data: bool) -> None:
    """Write an onnx-ir model, its weights in ``<dst>.data`` when ``external_data``."""
    import onnx_ir as ir

    if external_data:
        ir.save(model, str(dst), external_data=dst.name + ".data")
    else:
        ir.save(model, str(dst))


def fuse_for_ort(src: Path, dst: Path, external_data: bool = False) -> dict[str, int]:
    """Rewrite the exported graph into ONNX Runtime's fused transformer operators.

    onnxscript's ORT rewriter (the one built for the dynamo exporter's graphs; ONNX Runtime's
    own optimiser does not recognise their attention) turns each eager attention block into
    one ``com.microsoft`` ``Attention`` operator (Q, K and V projected by one packed GEMM,
    the padding mask passed as an additive bias) and fuses skip-LayerNorm and bias-GELU.
    Models whose attention has another shape (MPNet's relative position bias) keep it
    unfused. Returns the number of each fusion applied.
    """
    import onnx_ir as ir
    from onnxscript.rewriter.ort_fusions import optimize_for_ort

    model, counts = optimize_for_ort(ir.load(str(src)))
    save_ir(model, dst, external_data)
    return {name: int(n) for name, n in counts.items() if n}


def optimize_graph(src: Path, dst: Path, model_type: str, num_heads: int, hidden: int,
                   fuse_attention: bool = False, external_data: bool = False) -> dict[str, Any]:
    """Fuse the graph for ONNX Runtime; returns what was done (kept in ``build.json``).

    ``fuse_attention`` (what both shipped variants build, fp32 and int8) uses
    :func:`fuse_for_ort`; if that rewriter fails on an unusual graph, the build goes on with
    ORT's optimiser (same vectors, slower). Otherwise ORT's transformer optimiser fuses
    LayerNorm/GELU/bias where it knows the family (``bench/bench_int8.py`` builds that graph
    for the older recipes it compares).
    """
    if fuse_attention:
        try:
            return {"fuser": "onnxscript.ort_fusions",
                    "fusions": fuse_for_ort(src, dst, external_data)}
        except Exception as e:  # noqa: BLE001  (a rewriter bug must not cost the backend)
            LOG.warning("beam-e5: attention fusion failed (%s: %s); using ONNX Runtime's "
                        "optimiser instead", type(e).__name__, e)
    if model_type not in _OPTIMIZER_MODEL_TYPES:
        import onnx_ir as ir

        save_ir(ir.load(str(src)), dst, external_data)  # rewritten: the .data file is renamed
        return {"fuser": None, "fusions": {}}
    from onnxruntime.transformers.optimizer import optimize_model

    optimized = optimize_model(str(src), model_type="bert", num_heads=num_heads,
                               hidden_size=hidden, opt_level=0)
    optimized.save_model_to_file(str(dst), use_external_data_format=external_data)
    return {"fuser": "onnxruntime.transformers",
            "fusions": {k: int(v) for k, v in optimized.get_fused_operator_statistics().items()
                        if v}}


__all__ = ["export_graph", "fp32_bytes", "fuse_for_ort", "optimize_graph",
           "save_ir"]
