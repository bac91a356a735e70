"""What the embedding stage leaves resident: the C heap, the live Python heap, malloc_trim.

    python bench/trace_embed_stage.py embed --input corpus.jsonl --output out ...

Like ``trace_stages.py`` (which it uses), and in addition, at the end of the first stage
whose name holds ``Embed/`` (the encoder's stage): the resident memory, glibc's
``mallinfo2`` (bytes in use and free in its heaps), the resident memory again after
``malloc_trim(0)`` (free heap pages handed back; ``BENCH_TRIM=1``), the encoded bytes the
runner's buffers hold and, with ``BENCH_TRACEMALLOC=1`` (slow), the Python allocations
made during the stage that are still live, by line. ``BENCH_NO_ORT_ARENA=1`` opens the
ONNX Runtime session without its CPU memory arena (an experiment: not a beam-e5 option).
A private part of Beam: bench only.
"""

from __future__ import annotations

import ctypes
import os
import sys
import tracemalloc

from trace_stages import _rss, print_trace, trace_stages

LIBC = ctypes.CDLL("libc.so.6")


class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def heap_report(label: str) -> None:
    LIBC.mallinfo2.restype = MallInfo2
    info = LIBC.mallinfo2()
    mib = 2**20
    print(f"heap {label}: rss {_rss() / mib:.1f} MiB; glibc heaps {info.arena / mib:.1f} MiB "
          f"(in use {info.uordblks / mib:.1f}, free {info.fordblks / mib:.1f} in "
          f"{info.ordblks:,d} chunks), mmapped {info.hblkhd / mib:.1f} MiB", flush=True)


def buffered() -> None:
    """The encoded bytes every ListBuffer of the runner holds (queued for the next stages)."""
    import gc

    from apache_beam.runners.portability.fn_api_runner.execution import ListBuffer

    seen: set = set()
    total = blocks = buffers = 0
    for obj in gc.get_objects():
        if isinstance(obj, ListBuffer):
            buffers += 1
            for chunk in obj._inputs:
                if id(chunk) not in seen:
                    seen.add(id(chunk))
                    total += len(chunk)
                    blocks += 1
    print(f"heap runner buffers: {buffers} ListBuffers hold {total / 2**20:.1f} MiB encoded "
          f"in {blocks:,d} chunks", flush=True)


def no_ort_arena() -> None:
    import onnxruntime as ort

    opened = ort.InferenceSession.__init__

    def without_arena(self, path, sess_options=None, *args, **kwargs):
        sess_options = sess_options or ort.SessionOptions()
        sess_options.enable_cpu_mem_arena = False
        opened(self, path, sess_options, *args, **kwargs)

    ort.InferenceSession.__init__ = without_arena


def hook() -> list:
    from apache_beam.runners.portability.fn_api_runner import fn_runner

    stages = trace_stages()
    execute = fn_runner.FnApiRunner._execute_bundle
    done = {"embed": False}

    def traced(self, context, bundle, *rest):
        target = not done["embed"] and "Embed/" in bundle.stage.name
        if target:
            heap_report("before the embedding stage")
            if os.environ.get("BENCH_TRACEMALLOC"):
                tracemalloc.start(8)
        out = execute(self, context, bundle, *rest)
        if target:
            done["embed"] = True
            heap_report("after the embedding stage")
            buffered()
            if tracemalloc.is_tracing():
                print("tracemalloc current/peak MiB", [
                    round(v / 2**20, 1) for v in tracemalloc.get_traced_memory()])
                show(tracemalloc.take_snapshot())
                tracemalloc.stop()
            if os.environ.get("BENCH_TRIM"):
                LIBC.malloc_trim(0)
                heap_report("after malloc_trim(0)")
        return out

    fn_runner.FnApiRunner._execute_bundle = traced
    return stages


def show(snap) -> None:
    stats = snap.statistics("lineno")
    print(f"== tracemalloc: live after the stage {sum(s.size for s in stats) / 2**20:.1f} MiB")
    for s in stats[:20]:
        print(f"heap {s.size / 2**20:9.2f} MiB {s.count:9,d}  {s.traceback}")
    for s in snap.statistics("traceback")[:6]:
        print(f"-- {s.size / 2**20:.2f} MiB {s.count:,d} blocks")
        for line in s.traceback.format()[-8:]:
            print("   ", line)


if __name__ == "__main__":
    from beam_e5.cli import main as cli_main

    if os.environ.get("BENCH_NO_ORT_ARENA"):
        no_ort_arena()
    log = hook()
    try:
        code = cli_main(sys.argv[1:])
    finally:
        print_trace(log)
    sys.exit(code)
