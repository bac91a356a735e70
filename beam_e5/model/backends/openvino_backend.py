"""OpenVINO Runtime on CPU (``--backend openvino``; the ``openvino`` extra:
``pip install 'beam-e5[openvino]'``).

OpenVINO converts the model from the same PyTorch weights (``ov.convert_model``, SDPA
attention, fp32 weights kept: no fp16 compression) into its own graph (IR), once per machine,
cached beside the ONNX graphs under ``<cache dir>/onnx/`` with the same locks and key (weights,
recipe, library versions). Its own conversion, not the ONNX Runtime graph: OpenVINO fuses the
SDPA form into its attention kernel and ran bf16 about 1.25x faster from it here
(docs/benchmarks.md). Each worker process compiles it once for the CPU plugin, and OpenVINO's
model cache keeps the compiled blob (``<cache dir>/openvino/``), so the next process loads the
blob instead of compiling. Tokenisation, token-budget micro-batches and pooling stay the
encoder's.

Precision: ``float32`` (``--dtype auto`` or ``float32``) sets ``INFERENCE_PRECISION_HINT`` to
``f32`` (left alone, OpenVINO computes in bf16 on CPUs with AMX or avx512_bf16): the torch
backend's vectors, cosine >= 0.99999. ``--dtype bfloat16`` asks for ``bf16`` where the CPU has
bf16 instructions (:func:`beam_e5.model.hardware.native_bf16`); elsewhere it runs fp32 and the
log says so. Shapes are dynamic: the CPU plugin compiles once for every (rows, width) the
micro-batches take.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import queue
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Optional

import numpy as np

from beam_e5.model.backends.base import InferenceBackend, LoadRequest, PaddedBatch
from beam_e5.model.backends.onnxruntime_backend import OnnxRuntimeBackend, fp32_model
from beam_e5.model.hardware import cpu_flags, native_bf16
from beam_e5.model.onnx_graph.cache import build_atomically, ensure_built, graph_dir
from beam_e5.model.pooling import pooled_vectors
from beam_e5.model.profiles import Pooling

if TYPE_CHECKING:
    import torch

LOG = logging.getLogger(__name__)

__all__ = ["IR_FILE", "PERFORMANCE_MODES", "OpenVinoBackend", "compile_config", "convert_ir",
           "ensure_ir", "import_openvino", "openvino_available", "openvino_precision",
           "telemetry_declined"]

IR_FILE = "model.xml"  # and model.bin, its weights, beside it
IR_RECIPE = "ov-convert-sdpa-fp32-v1"  # part of the cache key: a new recipe converts again

# --dtype as the encoder resolves it -> OpenVINO's INFERENCE_PRECISION_HINT
_HINTS = {"float32": "f32", "bfloat16": "bf16"}

# What one call costs beyond its tokens, in tokens (the planner's price of a micro-batch):
# bench/bench_call_cost.py, all-MiniLM-L6-v2, 2 threads, widths 16-128, medians of the
# CPU-second fits (docs/benchmarks.md): a call (bf16 76-96, f32 19-50) plus the first run of a
# new shape (bf16 57-89, f32 21-25), which most micro-batches of a job are. bf16 computes a token
# about 3x faster than f32 for a similar fixed cost, so its calls are dearer in tokens.
CALL_OVERHEAD_TOKENS = {"float32": 64, "bfloat16": 150}

PERFORMANCE_MODES = ("THROUGHPUT", "LATENCY")

# Streams of one thread (THROUGHPUT on two cores) gain nothing past this many padded tokens a
# call, and the last calls of a Beam batch, alone on their stream, end sooner: 4096 against
# 8192 took 5% (bf16) and 9% (f32) less time on 300 texts cut at 256 tokens, the same on
# short and mixed ones (docs/benchmarks.md, OpenVINO "Third round"). Measured on two cores
# only; on more, OpenVINO picks its own streams and threads per stream (not measured here).
STREAM_CALL_TOKENS = 4096

_POLL_SECONDS = 0.05  # how often embed_overlapped looks for a call that failed (no callback)


_TELEMETRY_LOCK = threading.Lock()
_OPENVINO: Any = None  # the module, once import_openvino has imported it


@contextmanager
def telemetry_declined() -> Iterator[None]:
    """OpenVINO's usage reports declined for the duration. On import, and again on each model
    conversion, OpenVINO (its ``ovc`` module, through ``openvino_telemetry``) sends an event
    to Google Analytics unless the user opted out with ``opt_in_out --opt_out`` (no consent
    file counts as consent), and sends it from a forked copy of the process: an outbound
    request from a worker, and a fork of a multi-threaded Beam worker (gRPC threads) that
    runs Python in the child. The telemetry declines in CI, so ``CI=true`` is set meanwhile
    and put back as it was after (one thread at a time)."""
    with _TELEMETRY_LOCK:
        before = os.environ.get("CI")
        os.environ["CI"] = "true"
        try:
            yield
        finally:
            if before is None:
                os.environ.pop("CI", None)
            else:
                os.environ["CI"] = before


def import_openvino() -> Any:
    """``import openvino`` without its usage report (:func:`telemetry_declined`); once
    imported, the module comes back without touching the environment again."""
    global _OPENVINO
    if _OPENVINO is None:
        with telemetry_declined():  # the lock also keeps a second thread off a half-made one
            import openvino

            _OPENVINO = openvino
    return _OPENVINO


def openvino_available() -> bool:
    """OpenVINO Runtime is installed (looked up, not imported: the import takes a while)."""
    return importlib.util.find_spec("openvino") is not None


def openvino_precision(requested_dtype: str, native: Optional[bool]) -> str:
    """What OpenVINO computes in: ``bfloat16`` only when asked (``--dtype bfloat16``) and the
    CPU has bf16 instructions (``native``; unknown counts as no), else ``float32``."""
    return "bfloat16" if requested_dtype == "bfloat16" and native else "float32"


def compile_config(precision: str, threads: int, cache_root: str,
                   mode: str = "THROUGHPUT") -> dict[str, str]:
    """The CPU plugin's properties: the precision hint (always explicit: OpenVINO's own
    default on a bf16 CPU is bf16), the performance hint ``mode``, the thread count and the
    model cache.

    ``THROUGHPUT`` (the default): the cores split into streams that each compute their own
    micro-batch (two streams of one thread on two cores), and the encoder keeps one call in
    flight per stream; ``LATENCY``: one stream, each call over every thread, one at a time.

    The model cache gets one folder per precision, thread count and mode: OpenVINO 2026.4's
    cache key leaves the precision hint out, and a bf16 compile that loads the f32 blob of
    the same graph crashes the process on its first inference (seen here)."""
    if mode not in PERFORMANCE_MODES:
        raise ValueError(f"OpenVINO performance mode {mode!r}: use one of {PERFORMANCE_MODES}")
    hint = _HINTS[precision]
    folder = f"{hint}-threads{threads or 'auto'}-{mode.lower()}"
    config = {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": mode,
              "CACHE_DIR": str(Path(cache_root) / folder)}
    if threads:
        config["INFERENCE_NUM_THREADS"] = str(threads)
    return config


def convert_ir(model: torch.nn.Module, folder: Path) -> None:
    """``folder/model.xml`` (+ ``model.bin``): the encoder as OpenVINO IR, dynamic batch and
    sequence axes, ``last_hidden_state`` out, fp32 weights (torch: on a cache miss only)."""
    import torch

    from beam_e5.model.onnx_graph.export import LastHidden

    ov = import_openvino()

    ids = torch.full((2, 8), 5, dtype=torch.long)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0  # a padded row, so the mask path is traced, not constant-folded
    with torch.no_grad(), telemetry_declined():
        ir = ov.convert_model(LastHidden(model.eval()),
                              example_input={"input_ids": ids, "attention_mask": mask},
                              input=[("input_ids", [-1, -1], ov.Type.i64),
                                     ("attention_mask", [-1, -1], ov.Type.i64)])
    ir.outputs[0].get_tensor().set_names({"last_hidden_state"})
    ov.save_model(ir, str(folder / IR_FILE), compress_to_fp16=False)


def ensure_ir(request: LoadRequest) -> Path:
    """The cached IR of ``request``'s model; converted (once per machine) on a miss."""
    ov = import_openvino()

    target = graph_dir(request.cache_dir, request.path, request.model_config.commit_hash,
                       "openvino", ov.get_version(), IR_RECIPE)
    return ensure_built(target / IR_FILE, f"the OpenVINO graph of {request.model}",
                        lambda: build_atomically(target, lambda tmp: convert_ir(
                            fp32_model(request), tmp)))


class OpenVinoBackend(InferenceBackend):
    """A compiled OpenVINO CPU model of the encoder's graph (``last_hidden_state`` out)."""

    name = "openvino"
    device = "cpu"

    def __init__(self, graph_file: Path, cache_root: str, precision: str = "float32",
                 threads: int = 0, mode: str = "THROUGHPUT") -> None:
        ov = import_openvino()

        self.config = compile_config(precision, threads, cache_root, mode)
        self.graph_file = graph_file
        self._compile()
        self.max_call_tokens = STREAM_CALL_TOKENS if self.in_flight > 1 else None
        self.precision = precision
        self.call_overhead_tokens = CALL_OVERHEAD_TOKENS[precision]
        self.label = f"OpenVINO {ov.get_version().split('-')[0]}, {_HINTS[precision]}"

    def _compile(self) -> None:
        """Compile the graph (from its file path, so a cached blob is loaded without reading
        the graph: ~0.07 s for all-MiniLM-L6-v2) and make one request per stream.

        Also run after any failed call: in OpenVINO 2026.4 a call that fails (a shape check,
        say) can leave its CPU stream's graph broken, so that later calls on that stream fail
        too (seen for those whose input_ids have the failed call's shape; the first CI run of
        tests/model/backends/test_openvino_backend.py met it). A fresh compile gives fresh
        streams, so a retried bundle is not failed by the one before it."""
        # the old ones freed first; if this compile fails, the next call compiles again
        self.compiled = self.requests = None
        self.compiled = import_openvino().Core().compile_model(
            str(self.graph_file), "CPU", self.config)
        self.in_flight = max(1, int(self.compiled.get_property(
            "OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        self.requests = [self.compiled.create_infer_request() for _ in range(self.in_flight)]

    @classmethod
    def load(cls, request: LoadRequest, name: str = "openvino") -> "OpenVinoBackend":
        """Convert or reuse the cached IR, then compile it (or load its compiled blob) in the
        precision ``--dtype`` asks for."""
        graph = ensure_ir(request)
        native = native_bf16(cpu_flags())
        precision = openvino_precision(request.dtype, native)
        if request.dtype == "bfloat16" and precision != "bfloat16":
            LOG.warning("beam-e5: --dtype bfloat16 with --backend openvino: this CPU has no "
                        "bf16 instructions (avx512_bf16, amx_bf16), so OpenVINO runs float32")
        return cls(graph, str(Path(request.cache_dir) / "openvino"), precision, request.threads)

    @classmethod
    def unsupported(cls, name: str, model_type: Optional[str], device: str) -> Optional[str]:
        if device == "cuda":
            return f"--backend {name} runs on CPU only; use --backend torch for --device cuda"
        reason = OnnxRuntimeBackend.unsupported("onnx", model_type, device)
        if reason is not None:  # the graph it compiles is the onnx backend's
            return reason.replace("--backend onnx", f"--backend {name}")
        if not openvino_available():
            return (f"--backend {name} needs OpenVINO Runtime: pip install 'beam-e5[openvino]' "
                    "(also in the worker container), or use --backend onnx")
        return None

    def _ready(self) -> None:
        if self.requests is None:  # the compile after a failed call failed too
            self._compile()

    def embed(self, batch: PaddedBatch, pooling: Pooling) -> np.ndarray:
        self._ready()
        try:
            outputs: Any = self.requests[0].infer(_inputs(batch))
        except Exception:
            self._compile()  # the failed call may have broken its stream (see _compile)
            raise
        return _pooled(np.asarray(outputs[0]), batch, pooling)

    def embed_overlapped(self, batches: Iterable[PaddedBatch], pooling: Pooling
                         ) -> Iterator[np.ndarray]:
        """Up to ``in_flight`` micro-batches computing at once, one per stream. Whichever call
        ends first is pooled first (on the caller's thread, from its request's own output
        buffer) and its stream given the next batch at once, so no stream waits on a slower
        one; the vectors still come back in the batches' order. A call that fails raises
        here (OpenVINO runs no callback for it: :meth:`_next_ended` looks), once the other
        calls have ended, and the model is compiled again (see :meth:`_compile`)."""
        self._ready()
        done: queue.SimpleQueue = queue.SimpleQueue()  # indices of requests that have ended
        for index, request in enumerate(self.requests):
            request.set_callback(done.put, index)
        free = list(range(len(self.requests)))
        running: dict[int, tuple[int, PaddedBatch]] = {}  # request -> (batch number, batch)
        ready: dict[int, np.ndarray] = {}  # batch number -> its vectors, until its turn
        turn = 0

        def collect_one() -> Iterator[np.ndarray]:
            """Pool the next call to end, then hand back every vector array now in turn."""
            nonlocal turn
            self._collect(self._next_ended(done, running), running, ready, free, pooling)
            while turn in ready:
                yield ready.pop(turn)
                turn += 1

        failed = False
        try:
            for number, batch in enumerate(batches):
                if not free:
                    yield from collect_one()
                index = free.pop()
                self.requests[index].start_async(_inputs(batch))
                running[index] = (number, batch)
            while running:
                yield from collect_one()
        except Exception:
            failed = True
            raise
        finally:  # the caller stopped early or a call failed: no request is left running
            for index in running:
                try:
                    self.requests[index].wait()
                except Exception:  # noqa: BLE001 - the first error is already on its way
                    pass
            if failed:
                self._compile()

    def _next_ended(self, done: queue.SimpleQueue, running: dict) -> int:
        """The index of a request whose call has ended. A failed call runs no callback, so
        while none arrives the running ones are asked: ``wait_for(0)`` raises a failure."""
        while True:
            try:
                return done.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                for index in running:
                    self.requests[index].wait_for(0)

    def _collect(self, index: int, running: dict, ready: dict, free: list,
                 pooling: Pooling) -> None:
        """Pool the ended call of request ``index`` into ``ready``; the request is free again."""
        number, batch = running.pop(index)
        request = self.requests[index]
        request.wait()  # raises the call's error, if it failed
        ready[number] = _pooled(request.get_output_tensor(0).data, batch, pooling)
        free.append(index)


def _inputs(batch: PaddedBatch) -> dict[str, np.ndarray]:
    return {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}


def _pooled(hidden: np.ndarray, batch: PaddedBatch, pooling: Pooling) -> np.ndarray:
    return pooled_vectors(pooling, hidden, batch.attention_mask)
