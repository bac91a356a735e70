"""The ONNX Runtime CPU backend (``--backend onnx`` or ``onnx-int8``; ``auto``, the default,
picks ``onnx`` on CPU workers for encoder models: ONNX Runtime and the exporter's packages are
core dependencies, so a plain ``pip install beam-e5`` runs it).

The Hugging Face encoder is exported once per machine with PyTorch's ONNX exporter
(``torch.onnx.export(dynamo=True)``: dynamic batch and sequence axes, output
``last_hidden_state``). For ``onnx`` (fp32) the graph is rewritten with onnxscript's ONNX
Runtime fusions (:func:`fuse_for_ort`: each self-attention block becomes one ``Attention``
operator with a packed QKV projection, plus skip-LayerNorm and bias-GELU fusions). For
``onnx-int8`` the same fused graph then has every remaining MatMul with a constant weight
(attention output projection, both feed-forward MatMuls) computed in int8: weights with one
scale per output column, activations with one scale per token, computed at run time
(:func:`quantize_int8`). Encoders whose fp32 weights exceed
:data:`EXTERNAL_DATA_BYTES` (one ONNX file holds at most 2 GiB) are written as ``model.onnx``
(the graph) plus ``model.onnx.data`` (the weights) at every step. The result is
cached under ``<model cache dir>/onnx/`` keyed by the weights, the variant and the library
versions; the build is guarded by a thread lock and an ``fcntl`` file lock and written to a
temporary folder that is renamed into place, so concurrent workers build it once and a crash
never leaves a half-written graph under the final name.

Only the forward pass changes: tokenisation, token-budget micro-batching, pooling (fp32, over
the attention mask) and normalisation are the same code as the torch backend. Decoder models
(e5-mistral) and CUDA stay on the torch backend; :func:`check_backend_supported` says so
before the pipeline starts.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from beam_e5.errors import ConfigError

LOG = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnx", "onnx-int8")
# Encoder families the exporter and ORT's BERT optimiser handle (graph: embeddings, then
# post-LN self-attention blocks). Others are refused up front rather than failing on workers.
ONNX_MODEL_TYPES = ("bert", "xlm-roberta", "roberta", "distilbert", "mpnet", "electra")
_OPTIMIZER_MODEL_TYPES = ("bert", "xlm-roberta", "roberta", "electra")
GRAPH_FILE = "model.onnx"
DATA_FILE = GRAPH_FILE + ".data"  # the weights, beside the graph, for encoders over the limit
BUILD_FILE = "build.json"  # what the build did (fusions applied), next to the graph
# One ONNX file holds at most 2 GiB (protobuf). Encoders whose fp32 weights exceed this
# (multilingual-e5-large: 2.2 GB) are written as a small graph plus one external-data file of
# weights (model.onnx.data) beside it; below it, one self-contained file. The margin leaves
# room for the graph itself and for tensors the fusions add.
EXTERNAL_DATA_BYTES = 1_500_000_000
# Part of the cache key: a new export recipe builds a new graph.
EXPORT_RECIPE = "eager-attention-v1+ort-fusions-v1+int8-per-token-v2"
_BUILD_LOCK = threading.Lock()


def onnx_available() -> bool:
    """ONNX Runtime and the exporter are installed. Looked up, not imported: importing
    onnxscript costs over a second, and a worker whose graph is cached never needs it."""
    return all(importlib.util.find_spec(name) is not None
               for name in ("onnxruntime", "onnxscript"))


def pick_backend(requested: str, device_type: str, model_type: Optional[str],
                 fp32: bool = True) -> str:
    """The backend a worker runs: ``auto`` is ``onnx`` on CPU for encoder models (ONNX Runtime
    is a core dependency, so every install has it: same vectors, faster), whatever their size
    (weights over 2 GiB go to external data), else ``torch`` (GPUs, decoder models, and an
    explicit non-fp32 ``--dtype``, which only torch computes in)."""
    if requested != "auto":
        return requested
    if device_type == "cpu" and fp32 and model_type in ONNX_MODEL_TYPES and onnx_available():
        return "onnx"
    return "torch"


def describe_backend(backend: str, requested: str, dtype: str = "float32") -> str:
    """What the log line that names the backend says: the runtime, its precision (``dtype``
    is what torch computes in) and how it was chosen."""
    runtime = {"torch": f"PyTorch, {dtype}", "onnx": "ONNX Runtime, fp32",
               "onnx-int8": "ONNX Runtime, int8 weights"}.get(backend, backend)
    if requested == "auto":
        how = ("default on CPU; --backend torch for PyTorch" if backend == "onnx"
               else "--backend auto")
    else:
        how = f"--backend {requested}"
    return f"the {backend} backend ({runtime}; {how})"


def check_backend_supported(backend: str, model_type: Optional[str], device: str) -> None:
    """Fail before the pipeline when ``backend`` cannot run this model or device."""
    if backend in ("torch", "auto"):  # auto falls back to torch wherever onnx cannot run
        return
    if device == "cuda":
        raise ConfigError(f"--backend {backend} runs on CPU only; use --backend torch for "
                          "--device cuda")
    if model_type not in ONNX_MODEL_TYPES:
        raise ConfigError(f"--backend {backend} supports encoder models "
                          f"({', '.join(ONNX_MODEL_TYPES)}), not model_type {model_type!r}; "
                          "use --backend torch for this model")
    if not onnx_available():
        raise ConfigError(f"--backend {backend} needs ONNX Runtime and onnxscript, which are "
                          "dependencies of beam-e5: reinstall it (pip install beam-e5, also in "
                          "the worker container) or use --backend torch")


def weights_key(model_path: str, commit_hash: Optional[str]) -> str:
    """A cheap identity of the weights this worker loads: file names, sizes, mtimes.

    A hub model (no local directory) is identified by its resolved commit instead.
    """
    digest = hashlib.sha256()
    path = Path(model_path)
    if path.is_dir():
        for f in sorted(path.rglob("*")):
            if f.is_file() and f.suffix in (".safetensors", ".bin", ".json", ".txt", ".model"):
                st = f.stat()
                digest.update(f"{f.relative_to(path)}:{st.st_size}:{st.st_mtime_ns}\n".encode())
        digest.update(str(path.resolve()).encode())
    else:
        digest.update(f"hub:{model_path}@{commit_hash or 'unknown'}".encode())
    return digest.hexdigest()[:24]


def graph_dir(cache_root: str, model_path: str, commit_hash: Optional[str], variant: str) -> Path:
    """Where the graph for these weights, this variant and these library versions lives."""
    import onnxruntime

    key = hashlib.sha256(json.dumps([weights_key(model_path, commit_hash), variant, EXPORT_RECIPE,
                                     torch.__version__, onnxruntime.__version__]).encode())
    name = model_path.rstrip("/").split("/")[-1] or "model"
    return Path(cache_root) / "onnx" / f"{name}-{variant}-{key.hexdigest()[:16]}"


class _LastHidden(torch.nn.Module):
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
    exports with NaN guards (``IsNaN``/``Where`` over every score tensor) that cost about a
    tenth of the fp32 run time and a fifth of the int8 one in ONNX Runtime.
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
                _LastHidden(model.float().eval()).eval(), (ids, mask),
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
    the padding mask passed as an additive bias) and fuses skip-LayerNorm and bias-GELU: 5-8%
    more real tokens/s on all-MiniLM-L6-v2 here (docs/benchmarks.md). Models whose attention
    has another shape (MPNet's relative position bias) keep it unfused. Returns the number of
    each fusion applied.
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


def quantize_int8(src: Path, dst: Path, external_data: bool = False) -> int:
    """int8 MatMuls with one activation scale per token; returns how many were rewritten.

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
    large activations coarsen every other token's steps. On all-MiniLM-L6-v2 over the
    benchmark corpus (docs/benchmarks.md, "int8"), against the fp32 vectors: every MatMul
    through ``quantize_dynamic`` gave mean cosine 0.9934 and top-10 neighbour overlap 0.901;
    this rewrite of the fused graph gives 0.9991 and 0.960, and runs faster.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    if not any(op.domain == "com.microsoft" for op in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    consts = [numpy_helper.from_array(np.array([-1], np.int64), "int8/axis"),
              numpy_helper.from_array(np.array(1 / 127, np.float32), "int8/inv127"),
              numpy_helper.from_array(np.array(1e-12, np.float32), "int8/eps"),
              numpy_helper.from_array(np.array(127, np.float32), "int8/f127"),
              numpy_helper.from_array(np.array(128.5, np.float32), "int8/f128_5"),
              numpy_helper.from_array(np.array(128, np.uint8), "int8/zp"),
              numpy_helper.from_array(np.array(1, np.float32), "int8/one")]
    quantised: dict[str, tuple[str, str]] = {}  # activation -> (uint8 codes, per-row scale)
    nodes: list = []
    rewritten = 0
    for node in graph.node:
        weight = inits.get(node.input[1]) if node.op_type == "MatMul" else None
        if weight is None or len(weight.dims) != 2:
            nodes.append(node)
            continue
        x = node.input[0]
        if x not in quantised:
            p = f"int8/{len(quantised)}/"
            nodes += [
                helper.make_node("Abs", [x], [p + "abs"]),
                helper.make_node("ReduceMax", [p + "abs", "int8/axis"], [p + "max"], keepdims=1),
                helper.make_node("Max", [p + "max", "int8/eps"], [p + "max_eps"]),
                helper.make_node("Mul", [p + "max_eps", "int8/inv127"], [p + "scale"]),
                helper.make_node("Div", ["int8/f127", p + "max_eps"], [p + "inverse"]),
                helper.make_node("Mul", [x, p + "inverse"], [p + "scaled"]),
                # + 128.5 then Cast (which truncates; the value is >= 1.5): rounds to nearest
                helper.make_node("Add", [p + "scaled", "int8/f128_5"], [p + "shifted"]),
                helper.make_node("Cast", [p + "shifted"], [p + "q"], to=TensorProto.UINT8)]
            quantised[x] = (p + "q", p + "scale")
        q, scale = quantised[x]
        w = numpy_helper.to_array(weight).astype(np.float32)
        w_scale = np.maximum(np.abs(w).max(axis=0), 1e-12) / 127
        w_q = np.clip(np.round(w / w_scale), -127, 127).astype(np.int8)
        name = node.name or f"matmul{rewritten}"
        consts += [numpy_helper.from_array(w_q, f"int8/{name}/w"),
                   numpy_helper.from_array(w_scale.astype(np.float32), f"int8/{name}/w_scale")]
        nodes += [
            helper.make_node("MatMulIntegerToFloat",
                             [q, f"int8/{name}/w", "int8/one", f"int8/{name}/w_scale", "int8/zp"],
                             [f"int8/{name}/y"], name=f"{name}/int8", domain="com.microsoft"),
            helper.make_node("Mul", [f"int8/{name}/y", scale], [node.output[0]])]
        rewritten += 1
    used = {i for n in nodes for i in n.input}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend(kept + [c for c in consts if c.name in used])
    onnx.save(model, str(dst), save_as_external_data=external_data,
              all_tensors_to_one_file=True, location=dst.name + ".data")
    return rewritten


def build_graph(model: torch.nn.Module, target: Path, variant: str,
                external_data: Optional[bool] = None) -> None:
    """Export, optimise and (``onnx-int8``) quantise into ``target`` atomically.

    ``external_data`` (default: when the fp32 weights exceed :data:`EXTERNAL_DATA_BYTES`)
    writes ``model.onnx`` as the graph alone and the weights as ``model.onnx.data`` beside it;
    both are renamed into place together with the folder.
    """
    cfg = model.config
    weight_bytes = fp32_bytes(model)
    if external_data is None:
        external_data = weight_bytes > EXTERNAL_DATA_BYTES
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=str(target.parent)))
    try:
        export_graph(model, tmp / "exported.onnx", external_data)
        # an external-data graph names its .data file: each step writes under its final name
        fused = tmp / (GRAPH_FILE if variant == "onnx" else "fused.onnx")
        build = optimize_graph(tmp / "exported.onnx", fused, cfg.model_type,
                               int(cfg.num_attention_heads), int(cfg.hidden_size),
                               fuse_attention=True, external_data=external_data)
        LOG.info("beam-e5: %s graph fusions: %s", variant, build["fusions"] or "none")
        if variant == "onnx-int8":
            build["int8_matmuls"] = quantize_int8(fused, tmp / GRAPH_FILE, external_data)
        for name in os.listdir(tmp):
            if name not in (GRAPH_FILE, DATA_FILE):
                path = tmp / name
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    os.remove(path)
        (tmp / "config.json").write_text(cfg.to_json_string())
        (tmp / BUILD_FILE).write_text(json.dumps(
            {"variant": variant, "recipe": EXPORT_RECIPE, "fp32_weight_bytes": weight_bytes,
             "external_data": bool(external_data), **build}, indent=2))
        if target.exists():
            shutil.rmtree(target)
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def ensure_graph(model_path: str, config: Any, variant: str, cache_root: str,
                 load_torch_model, external_data: Optional[bool] = None) -> Path:
    """The cached graph for ``model_path``; built (once per machine) on a miss.

    ``config`` is the model's ``AutoConfig``; ``load_torch_model()`` is only called on a miss.
    """
    commit = getattr(config, "_commit_hash", None)
    target = graph_dir(cache_root, model_path, commit, variant)
    if (target / GRAPH_FILE).exists():
        return target / GRAPH_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    with _BUILD_LOCK, open(str(target) + ".lock", "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            if not (target / GRAPH_FILE).exists():
                LOG.info("beam-e5: building the %s graph of %s in %s", variant, model_path,
                         target)
                build_graph(load_torch_model(), target, variant, external_data)
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)
    return target / GRAPH_FILE


class OnnxEncoderModel:
    """An ONNX Runtime session with the encoder's forward signature.

    ``model(input_ids=..., attention_mask=...)`` returns the float32 last hidden state as a
    torch tensor (zero-copy from ONNX Runtime's numpy output), so pooling is shared code.
    """

    def __init__(self, graph_file: Path, config: Any, threads: int = 0) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Idle intra-op threads sleep instead of spinning: a spinning thread takes a core from
        # tokenisation and Beam's own threads between passes. Measured here with 2 threads:
        # 1-8% more real tokens/s on every one of 9 paired runs.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(graph_file), options,
                                            providers=["CPUExecutionProvider"])
        self.config = config
        self.graph_file = graph_file

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        feeds = {"input_ids": input_ids.cpu().numpy().astype(np.int64, copy=False),
                 "attention_mask": attention_mask.cpu().numpy().astype(np.int64, copy=False)}
        (hidden,) = self.session.run(["last_hidden_state"], feeds)
        return torch.from_numpy(hidden)


def load_onnx_model(model_path: str, config: Any, variant: str, cache_root: str, threads: int,
                    load_torch_model) -> OnnxEncoderModel:
    """Build or reuse the cached graph, then open it (the torch model is then released)."""
    graph = ensure_graph(model_path, config, variant, cache_root, load_torch_model)
    return OnnxEncoderModel(graph, config, threads)


__all__ = ["BACKENDS", "ONNX_MODEL_TYPES", "OnnxEncoderModel", "check_backend_supported",
           "fp32_bytes", "onnx_available", "pick_backend",
           "describe_backend", "ensure_graph", "graph_dir", "load_onnx_model", "weights_key"]
