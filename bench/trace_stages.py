"""Resident memory per DirectRunner (FnApiRunner) stage: where a local run peaks.

    python bench/trace_stages.py embed --input corpus.jsonl --output out ...   # beam-e5, traced

Wraps the FnApiRunner's bundle execution (a private method: bench only) and prints, per
stage, the resident memory before it, its peak while it ran (sampled every 20 ms) and
after it, marking the stage where the run peaked. ``bench_stage_memory.py --trace`` and
``bench_scale.py --trace`` use it.
"""

from __future__ import annotations

import os
import sys
import threading
import time


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def trace_stages() -> list:
    """Wrap the FnApiRunner's bundle execution (a private method: bench only) to record
    ``(stage, rss before, peak rss while it ran, rss after)`` in the returned list."""
    from apache_beam.runners.portability.fn_api_runner import fn_runner

    log: list = []
    peak = {"rss": 0}

    def sample() -> None:
        while True:
            now = _rss()  # written only if higher: a reset in between keeps a real sample
            if now > peak["rss"]:
                peak["rss"] = now
            time.sleep(0.02)

    threading.Thread(target=sample, daemon=True).start()
    execute = fn_runner.FnApiRunner._execute_bundle

    def traced(self, context, bundle, *rest):
        before = peak["rss"] = _rss()
        out = execute(self, context, bundle, *rest)
        log.append((bundle.stage.name, before, peak["rss"], _rss()))
        return out

    fn_runner.FnApiRunner._execute_bundle = traced
    return log


def print_trace(log: list) -> None:
    top = max(row[2] for row in log)
    for name, before, high, after in log:
        mark = "  <== peak" if high == top else ""
        print(f"trace {before / 2**20:7.0f} {high / 2**20:7.0f} {after / 2**20:7.0f} MiB  "
              f"{name[:120]}{mark}")



if __name__ == "__main__":
    from beam_e5.cli import main as cli_main

    stages = trace_stages()
    try:
        code = cli_main(sys.argv[1:])
    finally:
        if stages:
            print_trace(stages)
    sys.exit(code)
