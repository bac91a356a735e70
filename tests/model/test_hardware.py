"""CPU feature detection and the precision advice it gives (hand-built /proc/cpuinfo files)."""

import logging
import sys

import pytest

from beam_e5.model.hardware import (
    ONEDNN_CACHE_CAPACITY,
    OPENVINO_BF16_SPEEDUP,
    bound_onednn_cache,
    cpu_flags,
    native_bf16,
    precision_advice,
    release_free_memory,
)

ZEN4 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC
flags\t\t: fpu sse2 avx2 fma avx512f avx512_vnni avx512_bf16
processor\t: 1
flags\t\t: fpu sse2 avx2 fma avx512f avx512_vnni avx512_bf16
"""
SKYLAKE = "processor\t: 0\nflags\t\t: fpu sse2 avx2 fma avx512f avx512bw\n"
GRAVITON3 = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\nCPU part\t: 0xd40\n"


def write(tmp_path, text):
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    return str(path)


def test_cpu_flags_reads_x86_and_arm_files(tmp_path):
    assert "avx512_bf16" in cpu_flags(write(tmp_path, ZEN4))
    assert cpu_flags(write(tmp_path, SKYLAKE)) == {"fpu", "sse2", "avx2", "fma", "avx512f",
                                                  "avx512bw"}
    assert "bf16" in cpu_flags(write(tmp_path, GRAVITON3))
    assert cpu_flags(str(tmp_path / "absent")) is None  # macOS, Windows: unknown
    assert cpu_flags(write(tmp_path, "processor\t: 0\n")) is None


@pytest.mark.parametrize("flags,native", [
    (frozenset({"avx2", "avx512_bf16"}), True),
    (frozenset({"amx_bf16", "amx_tile"}), True),
    (frozenset({"asimd", "bf16"}), True),
    (frozenset({"avx2", "avx512f", "avx512bw"}), False),  # emulated bf16 only
    (None, None),
])
def test_native_bf16(flags, native):
    assert native_bf16(flags) is native


def test_precision_advice():
    # bf16 asked on a CPU without bf16 instructions: warn, say what to do
    level, message = precision_advice("cpu", "bfloat16", "bfloat16", "auto", False)
    assert level == logging.WARNING and "drop --dtype bfloat16" in message
    # the fp32 default on a CPU with them: say what --dtype bfloat16 would give
    level, message = precision_advice("cpu", "float32", "auto", "torch", True)
    assert level == logging.INFO and "--dtype bfloat16 runs PyTorch" in message
    assert "0.99995" in message
    for backend in ("auto", "openvino"):  # auto and openvino: OpenVINO bf16, if installed
        level, message = precision_advice("cpu", "float32", "auto", backend, True, True)
        assert level == logging.INFO and "--dtype bfloat16 runs OpenVINO in bf16" in message
        assert OPENVINO_BF16_SPEEDUP in message and "pip install" not in message
    level, message = precision_advice("cpu", "float32", "auto", "auto", True, False)
    assert "pip install 'beam-e5[openvino]' and --dtype bfloat16" in message
    # nothing to say: fp32 asked explicitly, bf16 where it is native, GPUs, unknown CPUs,
    # and explicit ONNX backends (they cannot take --dtype; int8 is faster than bf16)
    assert precision_advice("cpu", "float32", "float32", "auto", True) is None
    assert precision_advice("cpu", "bfloat16", "bfloat16", "auto", True) is None
    assert precision_advice("cpu", "float32", "auto", "auto", False) is None
    assert precision_advice("cuda", "bfloat16", "auto", "auto", False) is None
    assert precision_advice("cpu", "bfloat16", "bfloat16", "auto", None) is None
    assert precision_advice("cpu", "float32", "auto", "onnx", True) is None
    assert precision_advice("cpu", "float32", "auto", "onnx-int8", True) is None


def test_onednn_cache_is_bounded_unless_the_user_set_it():
    environ = {}
    bound_onednn_cache(environ)
    assert environ == {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": str(ONEDNN_CACHE_CAPACITY)}
    mine = {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "4096"}
    bound_onednn_cache(mine)
    assert mine == {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "4096"}
    legacy = {"DNNL_PRIMITIVE_CACHE_CAPACITY": "64"}  # oneDNN's older name counts too
    bound_onednn_cache(legacy)
    assert legacy == {"DNNL_PRIMITIVE_CACHE_CAPACITY": "64"}


def test_release_free_memory_calls_malloc_trim_on_glibc():
    released = release_free_memory()
    assert isinstance(released, bool)
    if sys.platform.startswith("linux"):
        import platform

        if platform.libc_ver()[0] == "glibc":
            assert released  # malloc_trim found and called


def test_gpu_driver_present_looks_for_any_drivers_file(tmp_path):
    from beam_e5.model.hardware import gpu_driver_present

    missing = (str(tmp_path / "no-nvidia"), str(tmp_path / "no-kfd"))
    assert gpu_driver_present(missing) is False
    (tmp_path / "kfd").write_text("")
    assert gpu_driver_present((*missing, str(tmp_path / "kfd"))) is True
