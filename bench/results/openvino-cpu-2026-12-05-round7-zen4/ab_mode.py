"""Round 3's ``ab_mode.py`` (OpenVINO LATENCY against THROUGHPUT streams through the Encoder, in
one process) with the streams' cap on a call's tokens lifted, so that each variant's budget
is the call size it names (THROUGHPUT:8192 then really plans calls of up to 8,192 tokens).

    PYTHONPATH=$PWD python bench/results/openvino-cpu-2026-12-05-round7-zen4/ab_mode.py \\
        bfloat16 long300,mixed600 3 THROUGHPUT:2048,THROUGHPUT:4096,THROUGHPUT:8192,LATENCY:8192

Corpora in /work/bench-ov, written by ../openvino-cpu-2026-12-04/corpora.py."""
import runpy
from pathlib import Path

from beam_e5.model.backends import openvino_backend

openvino_backend.STREAM_CALL_TOKENS = 1 << 20  # read by OpenVinoBackend.__init__
runpy.run_path(str(Path(__file__).parents[1] / "openvino-cpu-2026-12-04-round3" / "ab_mode.py"),
               run_name="__main__")
