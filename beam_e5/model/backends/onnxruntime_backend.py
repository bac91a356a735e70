"""ONNX Runtime on CPU (``--backend onnx``, fp32, or ``onnx-int8``; ``auto``, the default,
picks ``onnx`` on CPU workers for encoder models: ONNX Runtime and the exporter's packages are
core dependencies, so a plain ``pip install beam-e5`` runs it).

The session runs the graph that :mod:`beam_e5.model.onnx_graph` exports from the same weights
and caches once per machine; only the forward pass changes, so the vectors are the torch
backend's (``onnx-int8``: close to them). Decoder models (e5-mistral) and CUDA stay on torch.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np

from beam_e5.model.backends.base import InferenceBackend, LoadRequest, PaddedBatch
from beam_e5.model.onnx_graph import ONNX_MODEL_TYPES
from beam_e5.model.onnx_graph.cache import ensure_graph
from beam_e5.model.pooling import pooled_vectors
from beam_e5.model.profiles import Pooling

if TYPE_CHECKING:
    import torch

__all__ = ["OnnxRuntimeBackend", "fp32_model", "onnx_available"]

# backend name -> (precision, how the log names it)
_VARIANTS = {"onnx": ("float32", "fp32"), "onnx-int8": ("int8", "int8 weights")}


def onnx_available() -> bool:
    """ONNX Runtime and the exporter are installed. Looked up, not imported: importing
    onnxscript costs over a second, and a worker whose graph is cached never needs it."""
    return all(importlib.util.find_spec(name) is not None
               for name in ("onnxruntime", "onnxscript"))


class OnnxRuntimeBackend(InferenceBackend):
    """An ONNX Runtime CPU session over the encoder's graph (``last_hidden_state`` out)."""

    device = "cpu"
    # one call's price in tokens for the micro-batch planner: bench/bench_call_cost.py,
    # all-MiniLM-L6-v2, 2 threads, medians of the CPU-second fits: -13 to 8, a new shape 4-5
    # more (docs/benchmarks.md). A row's vector does not depend on its batch here (fp32
    # ONNX Runtime gave the same bits at 8 and at 32)
    call_overhead_tokens = 8

    def __init__(self, graph_file: Path, name: str = "onnx", threads: int = 0) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # ORT's CPU memory arena grows to the largest micro-batch the session has run (a
        # 256-token batch's attention scores alone take about 100 MB) and keeps it: the last
        # micro-batch of each Beam batch runs with the arena shrinkage option
        # (embed_and_release), so that memory goes back between Beam batches instead of
        # sitting under every later stage of a local run (docs/benchmarks.md, "Memory on the
        # DirectRunner", round 3) while the micro-batches within a batch keep the arena's speed.
        # Idle intra-op threads sleep instead of spinning: a spinning thread takes a core from
        # tokenisation and Beam's own threads between passes.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(graph_file), options,
                                            providers=["CPUExecutionProvider"])
        self._release = ort.RunOptions()
        self._release.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        self.graph_file = graph_file
        self.name = name
        self.precision, shown = _VARIANTS[name]
        self.label = f"ONNX Runtime, {shown}"

    @classmethod
    def load(cls, request: LoadRequest, name: str) -> "OnnxRuntimeBackend":
        """Build or reuse the cached graph, then open it (the torch model is then released;
        a cached graph is opened without importing torch)."""
        graph = ensure_graph(request.path, request.model_config.commit_hash, name,
                             request.cache_dir, lambda: fp32_model(request))
        return cls(graph, name, request.threads)

    @classmethod
    def unsupported(cls, name: str, model_type: Optional[str], device: str) -> Optional[str]:
        if device == "cuda":
            return f"--backend {name} runs on CPU only; use --backend torch for --device cuda"
        if model_type not in ONNX_MODEL_TYPES:
            return (f"--backend {name} supports encoder models ({', '.join(ONNX_MODEL_TYPES)}), "
                    f"not model_type {model_type!r}; use --backend torch for this model")
        if not onnx_available():
            return (f"--backend {name} needs ONNX Runtime and onnxscript, which are dependencies "
                    "of beam-e5: reinstall it (pip install beam-e5, also in the worker "
                    "container) or use --backend torch")
        return None

    def embed(self, batch: PaddedBatch, pooling: Pooling, run_options=None) -> np.ndarray:
        (hidden,) = self.session.run(["last_hidden_state"], {
            "input_ids": batch.input_ids, "attention_mask": batch.attention_mask}, run_options)
        return pooled_vectors(pooling, hidden, batch.attention_mask)

    def embed_and_release(self, batch: PaddedBatch, pooling: Pooling) -> np.ndarray:
        """``embed``, then the arena gives back what this run left unused."""
        return self.embed(batch, pooling, self._release)


def fp32_model(request: LoadRequest) -> torch.nn.Module:
    """The torch model that the CPU runtimes' graphs are built from: torch and transformers
    are imported here, on a cache miss only."""
    from beam_e5.model.backends.torch_backend import load_fp32_model

    return load_fp32_model(request)
