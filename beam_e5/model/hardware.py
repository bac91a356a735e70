"""What the worker's CPU computes natively, and the precision advice that follows from it.

On CPUs with bf16 dot-product instructions (x86 ``avx512_bf16`` or ``amx_bf16``: Intel
Cooper Lake, Sapphire Rapids and later, AMD Zen 4 and later; Arm ``bf16``: Graviton 3 and
later) PyTorch's bf16 matmul runs at over twice the fp32 rate, so ``--dtype bfloat16`` embeds
1.25-1.95x faster than the fp32 default (more for larger models) at a mean cosine of 0.99995 to the fp32 vectors
(``bench/bench_bf16.py``, ``bench/bench_embed.py`` variant F). Elsewhere bf16 is emulated and
slower than fp32. The default stays fp32, so a corpus gets the same vectors on every machine;
the log says when bf16 would pay.

Also here: what keeps a CPU worker's memory flat over a long job (a bounded oneDNN cache for
bf16, free heap pages handed back after each batch).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
from collections.abc import MutableMapping
from typing import Optional

__all__ = ["BF16_FLAGS", "ONEDNN_CACHE_CAPACITY", "bound_onednn_cache", "cpu_flags",
           "native_bf16", "precision_advice", "release_free_memory"]

# oneDNN (PyTorch's bf16 matmul on CPU) caches one primitive per input shape, 1,024 by
# default; micro-batches come in hundreds of shapes, so that cache alone grew a worker by
# about 0.6 GB. 128 entries kept the speed (bench figures in docs/benchmarks.md).
ONEDNN_CACHE_CAPACITY = 128

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


def native_bf16(flags: Optional[frozenset[str]]) -> Optional[bool]:
    """Whether the CPU has bf16 dot products; None when its flags are unknown."""
    if flags is None:
        return None
    return not flags.isdisjoint(BF16_FLAGS)


def precision_advice(device: str, dtype: str, requested_dtype: str,
                     native: Optional[bool]) -> Optional[tuple[str, str]]:
    """``(level, message)`` to log about the CPU precision, or None.

    ``dtype`` is what runs (``float32``, ``bfloat16``); ``requested_dtype`` what the user
    asked for (``auto`` included); ``native`` from :func:`native_bf16`.
    """
    if device != "cpu" or native is None:
        return None
    if dtype == "bfloat16" and not native:
        return ("warning", "beam-e5: this CPU has no bf16 instructions (avx512_bf16, amx_bf16 "
                "or Arm bf16), so --dtype bfloat16 is emulated and usually slower than the "
                "float32 default; drop --dtype bfloat16 here")
    if dtype == "float32" and requested_dtype == "auto" and native:
        return ("info", "beam-e5: this CPU computes bf16 natively: --dtype bfloat16 embeds "
                "about 1.3-1.9x faster (PyTorch bf16; mean cosine 0.99995 to these float32 "
                "vectors on all-MiniLM-L6-v2, see docs/benchmarks.md). float32 stays the "
                "default so that every machine gives the same vectors")
    return None


def bound_onednn_cache(environ: MutableMapping[str, str] = os.environ) -> None:
    """Cap oneDNN's primitive cache unless the user set it; effective if called before the
    process's first oneDNN primitive (the encoder's first bf16 forward pass)."""
    environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(ONEDNN_CACHE_CAPACITY))


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    except OSError:
        return None


def release_free_memory() -> bool:
    """Hand the C heap's free pages back to the OS (glibc ``malloc_trim``); False where the C
    library has no such call. Micro-batches of ever-different shapes otherwise leave the heap
    fragmented and the worker's resident memory creeping up batch after batch."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
