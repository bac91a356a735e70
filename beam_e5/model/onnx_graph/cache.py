"""The cached build of the ONNX graph: once per machine, shared by every worker process.

The graph is cached under ``<model cache dir>/onnx/`` keyed by the weights, the variant
(``onnx`` or ``onnx-int8``), the export recipe and the library versions. The build is guarded
by a thread lock and an ``fcntl`` file lock and written to a temporary folder that is renamed
into place, so concurrent workers build it once and a crash never leaves a half-written graph
under the final name. Encoders whose fp32 weights exceed :data:`EXTERNAL_DATA_BYTES` are
written as ``model.onnx`` (the graph) plus ``model.onnx.data`` (the weights) at every step.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

from beam_e5.model.loading import machine_lock, weights_key

if TYPE_CHECKING:
    import torch

LOG = logging.getLogger(__name__)

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

__all__ = ["BUILD_FILE", "DATA_FILE", "EXPORT_RECIPE", "EXTERNAL_DATA_BYTES", "GRAPH_FILE",
           "build_atomically", "build_graph", "ensure_built", "ensure_graph", "graph_dir",
           "torch_version", "weights_key"]


def graph_dir(cache_root: str, model_path: str, commit_hash: Optional[str], variant: str,
              runtime_version: Optional[str] = None, recipe: str = EXPORT_RECIPE) -> Path:
    """Where the graph for these weights, this variant and these library versions lives
    (``runtime_version``: the runtime that reads it, ONNX Runtime's by default)."""
    if runtime_version is None:
        import onnxruntime

        runtime_version = onnxruntime.__version__
    key = hashlib.sha256(json.dumps([weights_key(model_path, commit_hash), variant, recipe,
                                     torch_version(), runtime_version]).encode())
    name = model_path.rstrip("/").split("/")[-1] or "model"
    return Path(cache_root) / "onnx" / f"{name}-{variant}-{key.hexdigest()[:16]}"


def torch_version() -> str:
    """torch's version as installed (the same string as ``torch.__version__``), read from its
    package metadata without importing torch: a worker whose graph is cached never imports
    it. A torch without metadata (vendored into an image or a zipapp) is asked itself."""
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        import torch

        return torch.__version__


def build_graph(model: torch.nn.Module, target: Path, variant: str,
                external_data: Optional[bool] = None) -> None:
    """Export, optimise and (``onnx-int8``) quantise into ``target`` atomically.

    ``external_data`` (default: when the fp32 weights exceed :data:`EXTERNAL_DATA_BYTES`)
    writes ``model.onnx`` as the graph alone and the weights as ``model.onnx.data`` beside it;
    both are renamed into place together with the folder.
    """
    from beam_e5.model.onnx_graph.export import fp32_bytes  # torch: on a miss only

    weight_bytes = fp32_bytes(model)
    if external_data is None:
        external_data = weight_bytes > EXTERNAL_DATA_BYTES

    def fill(tmp: Path) -> None:
        build = _build_files(model, tmp, variant, external_data)
        (tmp / "config.json").write_text(model.config.to_json_string())
        (tmp / BUILD_FILE).write_text(json.dumps(
            {"variant": variant, "recipe": EXPORT_RECIPE, "fp32_weight_bytes": weight_bytes,
             "external_data": bool(external_data), **build}, indent=2))

    build_atomically(target, fill)


def build_atomically(target: Path, fill: Callable[[Path], None]) -> None:
    """``fill(tmp)`` writes the files into a temporary folder beside ``target``, which is then
    renamed to ``target``: a crash never leaves a half-written build under the final name."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=str(target.parent)))
    try:
        fill(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _build_files(model: torch.nn.Module, tmp: Path, variant: str,
                 external_data: bool) -> dict[str, Any]:
    """Export, fuse and quantise in ``tmp``, leaving only the graph (and its weights)."""
    from beam_e5.model.onnx_graph.export import export_graph, optimize_graph
    from beam_e5.model.onnx_graph.quantize import quantize_int8

    cfg = model.config
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
    return build


def ensure_graph(model_path: str, commit_hash: Optional[str], variant: str, cache_root: str,
                 load_torch_model: Callable[[], torch.nn.Module],
                 external_data: Optional[bool] = None) -> Path:
    """The cached graph for ``model_path``; built (once per machine) on a miss.

    ``commit_hash``: the hub commit transformers resolved (None for a local directory);
    ``load_torch_model()`` is only called on a miss.
    """
    target = graph_dir(cache_root, model_path, commit_hash, variant)
    return ensure_built(target / GRAPH_FILE, f"the {variant} graph of {model_path}",
                        lambda: build_graph(load_torch_model(), target, variant, external_data))


def ensure_built(path: Path, what: str, build: Callable[[], None]) -> Path:
    """``path``, built by ``build()`` on a miss: once per machine (a thread lock and an
    ``fcntl`` lock beside the folder), checked again under the lock. A hit costs one
    ``stat``: a cached build is not validated again."""
    if path.exists():
        return path
    target = path.parent
    with machine_lock(target, _BUILD_LOCK):
        if not path.exists():
            LOG.info("beam-e5: building %s in %s", what, target)
            build()
    return path
