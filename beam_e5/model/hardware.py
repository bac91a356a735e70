"""What the worker's CPU computes natively, and the precision advice that follows from it.

On CPUs with bf16 dot-product instructions (x86 ``avx512_bf16`` or ``amx_bf16``: Intel
Cooper Lake, Sapphire Rapids and later, AMD Zen 4 and later; Arm ``bf16``: Graviton 3 and
later) bf16 matmuls run well above the fp32 rate, so ``--dtype bfloat16`` embeds faster than
the fp32 default, with vectors very close to the fp32 ones: through OpenVINO where the
``openvino`` extra is installed (the fastest, docs/benchmarks.md, "OpenVINO"), else PyTorch
(docs/benchmarks.md, "bf16 on CPU"). Elsewhere bf16 is emulated and slower than fp32.
The default stays fp32, so a corpus gets the same vectors on every machine; the log says
when bf16 would pay.

Also here: what keeps a CPU worker's memory flat over a long job (a bounded oneDNN cache for
bf16, free heap pages handed back after each batch).
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
from collections.abc import MutableMapping
from typing import Optional

__all__ = ["BF16_FLAGS", "GPU_DRIVER_FILES", "ONEDNN_CACHE_CAPACITY", "OPENVINO_BF16_SPEEDUP",
           "bound_onednn_cache", "cpu_flags", "gpu_driver_present", "native_bf16",
           "precision_advice", "release_free_memory", "return_large_blocks"]

# oneDNN (PyTorch's bf16 matmul on CPU) caches one primitive per input shape, 1,024 by
# default; micro-batches come in hundreds of shapes, so that cache alone grows a worker's
# memory batch after batch. 128 entries keep the speed (docs/benchmarks.md, "Memory over a
# long job").
ONEDNN_CACHE_CAPACITY = 128

# --backend openvino --dtype bfloat16 against the fp32 default (ONNX Runtime), in process,
# all-MiniLM-L6-v2, on the development machines: 1.5-1.8x on an Intel Xeon with AMX, 2.1-2.2x
# on an AMD Zen 4 (docs/benchmarks.md, "OpenVINO" and its "Seventh round")
OPENVINO_BF16_SPEEDUP = "about 1.5-2.2x"

# Files a GPU driver puts in place, one of which torch.cuda needs to find a GPU: NVIDIA's
# kernel module (also inside containers given the GPU), Jetson's (Tegra: no nvidiactl), AMD
# ROCm's, WSL2's GPU bridge
GPU_DRIVER_FILES = ("/proc/driver/nvidia/version", "/dev/nvidiactl", "/dev/nvhost-ctrl",
                    "/dev/nvmap", "/etc/nv_tegra_release", "/dev/kfd", "/dev/dxg")

# /proc/cpuinfo flags that mean bf16 dot products in hardware
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> Optional[frozenset[str]]:
    """The first CPU's feature flags (x86 ``flags``, Arm ``Features``); None where unknown."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep and key.strip() in ("flags", "Features"):
                    return frozenset(value.split())
    except OSError:
        return None
    return None


def gpu_driver_present(files: tuple[str, ...] = GPU_DRIVER_FILES) -> bool:
    """Whether a GPU driver is installed. Where none is, ``torch.cuda.is_available()`` is
    False, so ``--device auto`` is the CPU without importing torch (0.6-0.9 s and about
    200 MiB of a worker whose backend is a CPU runtime)."""
    return any(os.path.exists(f) for f in files)


def native_bf16(flags: Optional[frozenset[str]]) -> Optional[bool]:
    """Whether the CPU has bf16 dot products; None when its flags are unknown."""
    if flags is None:
        return None
    return not flags.isdisjoint(BF16_FLAGS)


def precision_advice(device: str, dtype: str, requested_dtype: str, requested_backend: str,
                     native: Optional[bool], openvino: bool = False) -> Optional[tuple[int, str]]:
    """``(logging level, message)`` to log about the CPU precision, or None.

    ``dtype`` is what runs (``float32``, ``bfloat16``); ``requested_dtype`` and
    ``requested_backend`` what the user asked for (``auto`` included); ``native`` from
    :func:`native_bf16`; ``openvino``: the ``openvino`` extra is installed. An explicit ONNX
    backend gets no bf16 advice: it computes in fp32 (``onnx``) or int8 (``onnx-int8``) and
    cannot take ``--dtype``.
    """
    if device != "cpu" or native is None:
        return None
    if dtype == "bfloat16" and not native:
        return (logging.WARNING, "beam-e5: this CPU has no bf16 instructions (avx512_bf16, "
                "amx_bf16 or Arm bf16), so --dtype bfloat16 is emulated and usually slower "
                "than the float32 default; drop --dtype bfloat16 here")
    if not (dtype == "float32" and requested_dtype == "auto" and native
            and requested_backend in ("auto", "torch", "openvino")):
        return None
    if requested_backend == "torch":
        how = ("--dtype bfloat16 runs PyTorch in bf16, about 1.25-1.95x faster on a quiet "
               "machine (mean cosine 0.99995 to these float32 vectors on all-MiniLM-L6-v2)")
    elif openvino:
        how = (f"--dtype bfloat16 runs OpenVINO in bf16, {OPENVINO_BF16_SPEEDUP} the float32 "
               "default's speed on the CPUs measured (mean cosine 0.99998 to these float32 "
               "vectors on all-MiniLM-L6-v2)")
    else:
        how = ("pip install 'beam-e5[openvino]' and --dtype bfloat16 runs OpenVINO in bf16, "
               f"{OPENVINO_BF16_SPEEDUP} the float32 default's speed on the CPUs measured (mean "
               "cosine 0.99998 to these float32 vectors on all-MiniLM-L6-v2)")
    return (logging.INFO, f"beam-e5: this CPU computes bf16 natively: {how}; see "
            "docs/benchmarks.md. float32 stays the default so that every machine gives the "
            "same vectors")


def bound_onednn_cache(environ: MutableMapping[str, str] = os.environ) -> None:
    """Cap oneDNN's primitive cache unless the user set it (either of oneDNN's names);
    effective if called before the process's first oneDNN primitive (the encoder's first
    bf16 forward pass), and called at model load, before the worker's threads use it."""
    if not {"ONEDNN_PRIMITIVE_CACHE_CAPACITY", "DNNL_PRIMITIVE_CACHE_CAPACITY"} & set(environ):
        environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] = str(ONEDNN_CACHE_CAPACITY)


@functools.lru_cache(maxsize=None)
def _libc(name: str):
    """The C library's function ``name``, or None where it has none."""
    try:  # the process's own symbols: the C library it runs on, found without ldconfig
        return getattr(ctypes.CDLL(None), name, None)
    except (OSError, TypeError):  # TypeError: Windows has no CDLL(None)
        return None


# glibc's mallopt parameter and its default value (glibc raises it, up to 32 MiB, each
# time a block over it is freed; fixing it stops that)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 128 << 10


def return_large_blocks(environ: MutableMapping[str, str] = os.environ) -> bool:
    """Keep glibc's mmap threshold at 128 KiB (``mallopt(M_MMAP_THRESHOLD)``, and
    ``MALLOC_MMAP_THRESHOLD_`` for the worker processes this one starts) unless the user set
    it; False where the C library has no ``mallopt``. The DirectRunner moves every
    materialised PCollection through 10 MB data-plane chunks and encoded buffers; with the
    dynamic threshold those land in the heap and leave it fragmented, so each stage's
    high-water mark stays resident (docs/benchmarks.md, "Memory on the DirectRunner"). With
    a fixed threshold a freed block over 128 KiB goes back to the OS at once."""
    if "MALLOC_MMAP_THRESHOLD_" in environ:
        return False
    opt = _libc("mallopt")
    if opt is None:
        return False
    environ["MALLOC_MMAP_THRESHOLD_"] = str(MMAP_THRESHOLD_BYTES)
    return bool(opt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))


def release_free_memory() -> bool:
    """Hand the C heap's free pages back to the OS (glibc ``malloc_trim``); False where the C
    library has no such call. Micro-batches of ever-different shapes otherwise leave the heap
    fragmented and the worker's resident memory creeping up batch after batch."""
    trim = _libc("malloc_trim")
    if trim is None:
        return False
    trim(0)
    return True
