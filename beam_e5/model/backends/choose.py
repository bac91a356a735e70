"""Which backend runs: the ``--backend`` names, the checks before the run, the choice on the
worker (``auto``: ONNX Runtime on CPU for encoder models in fp32, OpenVINO for ``--dtype
bfloat16`` on CPU where installed, else torch) and the fallback to torch when ``auto``'s
choice cannot be built."""

from __future__ import annotations

import logging
import sys
from typing import Optional

from beam_e5.errors import ConfigError
from beam_e5.model.backends.base import InferenceBackend, LoadRequest
from beam_e5.model.backends.onnxruntime_backend import OnnxRuntimeBackend
from beam_e5.model.backends.openvino_backend import OpenVinoBackend, openvino_available
from beam_e5.model.hardware import cpu_flags, gpu_driver_present, native_bf16, precision_advice

LOG = logging.getLogger(__name__)

# Every backend but torch (which runs everything and is the fallback), by --backend name.
RUNTIMES: dict[str, type[InferenceBackend]] = {
    "onnx": OnnxRuntimeBackend,
    "onnx-int8": OnnxRuntimeBackend,
    "openvino": OpenVinoBackend,
}
BACKENDS = ("auto", "torch", *RUNTIMES)

__all__ = ["BACKENDS", "RUNTIMES", "check_backend_supported", "describe_backend",
           "device_and_dtype", "load_backend", "pick_backend"]


def pick_backend(requested: str, device_type: str, model_type: Optional[str],
                 fp32: bool = True, bf16: bool = False) -> str:
    """The backend a worker runs: ``auto`` is ``onnx`` on CPU for encoder models in fp32 (ONNX
    Runtime is a core dependency, so every install has it: same vectors, faster), whatever
    their size (weights over 2 GiB go to external data); ``openvino`` for ``--dtype bfloat16``
    on CPU where the ``openvino`` extra is installed (faster than PyTorch bf16, as close to
    fp32: docs/benchmarks.md); else ``torch`` (GPUs, decoder models, other dtypes)."""
    if requested != "auto":
        return requested
    if fp32 and RUNTIMES["onnx"].unsupported("onnx", model_type, device_type) is None:
        return "onnx"
    if (bf16 and device_type == "cpu"
            and RUNTIMES["openvino"].unsupported("openvino", model_type, device_type) is None):
        return "openvino"
    return "torch"


def check_backend_supported(backend: str, model_type: Optional[str], device: str) -> None:
    """Fail before the pipeline when ``backend`` cannot run this model or device."""
    if backend in ("torch", "auto"):  # auto falls back to torch wherever onnx cannot run
        return
    reason = RUNTIMES[backend].unsupported(backend, model_type, device)
    if reason is not None:
        raise ConfigError(reason)


def describe_backend(backend: InferenceBackend, requested: str) -> str:
    """What the log line that names the backend says: the runtime, its precision and how it
    was chosen."""
    if requested == "auto":
        how = {"onnx": "default on CPU; --backend torch for PyTorch",
               "openvino": "--dtype bfloat16 on CPU; --backend torch for PyTorch",
               }.get(backend.name, "--backend auto")
    else:
        how = f"--backend {requested}"
    return f"the {backend.name} backend ({backend.label}; {how})"


def device_and_dtype(device: str, dtype: str) -> tuple[str, str]:
    """``--device`` and ``--dtype`` resolved as the torch backend would (``auto``: CUDA where
    present; fp32 on CPU, bf16 or fp16 on CUDA), as names. torch is imported only where a GPU
    driver is installed, already imported or ``--device cuda`` asks for it: a worker on a CPU
    runtime never imports it."""
    if device == "cpu" or (device == "auto" and "torch" not in sys.modules
                           and not gpu_driver_present()):
        return "cpu", "float32" if dtype == "auto" else dtype
    from beam_e5.model.backends.torch_backend import pick_device, pick_dtype

    chosen = pick_device(device)
    return chosen.type, str(pick_dtype(dtype, chosen)).removeprefix("torch.")


def load_backend(request: LoadRequest) -> InferenceBackend:
    """The backend ``request.backend`` names, loaded; ``auto`` resolved by
    :func:`pick_backend` and, if its choice fails to load, torch (with a warning)."""
    name = request.backend
    if name == "auto":  # an explicit runtime runs on the CPU: no device to resolve
        device, dtype = device_and_dtype(request.device, request.dtype)
        name = pick_backend(name, device, request.model_config.model_type,
                            fp32=dtype == "float32", bf16=dtype == "bfloat16")
    backend: Optional[InferenceBackend] = None
    if name != "torch":
        try:
            backend = RUNTIMES[name].load(request, name)
        except Exception as e:
            if request.backend != "auto":
                raise
            LOG.warning("beam-e5: the %s backend failed for %s (%s: %s); using torch",
                        name, request.model, type(e).__name__, e)
    if backend is None:
        from beam_e5.model.backends.torch_backend import TorchBackend

        backend = TorchBackend.load(request)
    _log_choice(backend, request)
    return backend


def _log_choice(backend: InferenceBackend, request: LoadRequest) -> None:
    """The log line naming the backend, and advice on the CPU's precision if any."""
    LOG.info("beam-e5: %s on %s with %s", request.model, backend.device,
             describe_backend(backend, request.backend))
    advice = precision_advice(backend.device, backend.precision, request.dtype,
                              request.backend, native_bf16(cpu_flags()), openvino_available())
    if advice is not None:
        LOG.log(*advice)
