"""Helpers shared by the benchmark scripts (run them as ``python bench/NAME.py``)."""

from __future__ import annotations

import json
import os
import re
import resource
import shlex
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path


def run_child(cmd: list[str], env: dict, log: Path,
              cwd: Path) -> tuple[float, resource.struct_rusage]:
    """Run ``cmd`` with its output in ``log``; (wall seconds, its rusage) or RuntimeError.

    The rusage comes from ``os.wait4`` on that child: ``ru_maxrss`` (KiB on Linux) is its
    peak resident memory, ``ru_utime + ru_stime`` its CPU seconds. Linux counts the
    caller's memory in it (exec records the high-water mark of the address space it
    replaces, the caller's when forked or vforked from it): keep the caller small, or the
    figure is the caller's peak, not the child's.
    """
    with open(log, "w") as logf:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=logf, stderr=subprocess.STDOUT, cwd=cwd)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    if status != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"failed (wait status {status}): {shlex.join(cmd)}\n"
                           f"--- last lines of {log} ---\n{tail}")
    return wall, usage


def paragraphs(text: str, shortest: int = 20, longest: int = 2000) -> Iterator[tuple[int, str]]:
    """``(k, paragraph)`` of ``text`` cut at blank lines, whitespace collapsed, only those
    of ``shortest`` to ``longest`` characters (``k`` counts every block, kept or not)."""
    for k, para in enumerate(re.split(r"\n\s*\n", text)):
        para = " ".join(para.split())
        if shortest <= len(para) <= longest:
            yield k, para


def save_results(path: str | None, data: dict) -> None:
    """Write a bench's results as indented JSON to ``--json`` PATH, if one was given."""
    if path:
        Path(path).write_text(json.dumps(data, indent=2))
        print(f"results: {path}")
