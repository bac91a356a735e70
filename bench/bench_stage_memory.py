"""Where the DirectRunner's memory goes: peak RSS of one pipeline stage over N records.

    python bench/bench_stage_memory.py --n 10000 40000 --stage none semantic

Each (stage, n) runs in a fresh child process (peak RSS from ``os.wait4``). Records are
shaped like ``beam-e5 embed``'s embedded rows (id, text_sha256, source, fields, float32
vector of dim 384, tokens, chunk columns) and generated inside the pipeline (no input list
is held): clustered unit vectors with a few planted near-duplicates, seeded. Stages:

* ``none``: generate and count (the base);
* ``semantic``: :func:`beam_e5.transforms.semantic_dedupe.dedupe_documents` at 0.95;
* ``group``: the records through one GroupByKey by id (one shuffle of every record);
* ``coarse``, ``units``, ``grouped``, ``joined``: the one-shuffle transform's steps rebuilt
  one by one and cut after coarse cells, the routing to work units, their GroupByKey and
  compare, and the join with the records (where the memory goes, step by step).

``--trace`` prints, per FnApiRunner stage, the resident memory before it, its peak while
it ran (sampled every 20 ms) and after it, and marks the stage where the run peaked.

Also prints the encoded size of each element kind with the coder Beam picks for it. The
child fixes glibc's mmap threshold as ``beam-e5 embed`` does on the DirectRunner
(``MALLOC_MMAP_THRESHOLD_`` set in the environment keeps the value given there).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np
from trace_stages import print_trace, trace_stages

DIM = 384
SHARD = 1_000
SLICES = int(os.environ.get("BENCH_SLICES", "1"))


def make_records(shard: int, n: int, dim: int = DIM, seed: int = 0):
    rng = np.random.default_rng([seed, shard])
    centers = np.random.default_rng(seed).standard_normal((64, dim)).astype(np.float32)
    prev = centers[0]
    for k in range(shard * SHARD, min(n, (shard + 1) * SHARD)):
        vec = centers[k % 64] + 0.9 * rng.standard_normal(dim).astype(np.float32)
        if k % 50 == 1:  # a planted near-duplicate of the record before it
            vec = prev + 0.01 * rng.standard_normal(dim).astype(np.float32)
        prev = vec
        vec = (vec / np.linalg.norm(vec)).astype(np.float32)
        yield {"id": f"doc/{k:09d}", "text_sha256": f"{k:064x}", "source": f"corpus.jsonl:{k}",
               "fields": {}, "embedding": vec, "tokens": 40, "doc_id": f"doc/{k:09d}",
               "chunk": 0, "chunks": 1, "char_start": 0, "char_end": 166, "tokens_cut": 0}


def run_stage(stage: str, n: int) -> dict:
    import apache_beam as beam

    from beam_e5.jobs.summary import bound_local_memory
    from beam_e5.transforms.semantic_dedupe import SemanticDedupeConfig, dedupe_documents

    bound_local_memory(None)  # what beam-e5 embed and dedupe do on the DirectRunner
    with beam.Pipeline() as p:
        recs = (p | beam.Create(range((n + SHARD - 1) // SHARD))
                | beam.Reshuffle() | beam.FlatMap(make_records, n))
        if stage == "semantic":
            res = dedupe_documents(recs, SemanticDedupeConfig(threshold=0.95, slices=SLICES))
            recs = (res.kept, res.kept_chunks) | beam.Flatten()
            _ = res.duplicates | "CountDups" >> beam.combiners.Count.Globally() | beam.Map(
                lambda c: print("duplicates", c))
        elif stage in CUTS:
            recs = cut_transform(recs, stage)
        elif stage == "group":
            recs = (recs | beam.Map(lambda r: (r["id"], r)) | beam.GroupByKey()
                    | beam.Map(lambda kv: kv[1][0]))
        _ = recs | beam.combiners.Count.Globally() | beam.Map(lambda c: print("records", c))
    return {"stage": stage, "n": n}


CUTS = ("coarse", "units", "grouped", "joined")


def cut_transform(docs, stage: str):
    """SemanticDedupe's one-shuffle steps (slices=1) up to ``stage``."""
    import apache_beam as beam

    from beam_e5.transforms import semantic_dedupe as sd

    cfg = sd.SemanticDedupeConfig(threshold=0.95)
    points = docs | "ToPoint" >> beam.Map(sd.to_point, cfg.keep)
    model = points | "FitCells" >> beam.CombineGlobally(sd.FitCellsFn(cfg))
    out = points | "CoarseCells" >> beam.ParDo(sd.CoarseCellsFn(cfg),
                                               beam.pvalue.AsSingleton(model))
    if stage == "coarse":
        return out
    fine = (beam.pvalue.AsMultiMap(out | "CoarseHomes" >> beam.Map(sd._coarse_home)
                                   | "FitFine" >> beam.CombinePerKey(sd.FitCellsFn(cfg, True))),)
    sizes = (out | "CountCells" >> beam.ParDo(sd.CountCellsFn(cfg), *fine)
             | "CountPerCell" >> beam.combiners.Count.PerElement())
    out = out | "ToWorkUnits" >> beam.ParDo(sd.ToWorkUnitsFn(cfg), beam.pvalue.AsDict(sizes),
                                            *fine)
    if stage == "units":
        return out
    out = (out | "GroupUnits" >> beam.GroupByKey()
           | "CompareUnits" >> beam.ParDo(sd.CompareUnitFn(cfg))
           | "PickBest" >> beam.CombinePerKey(sd.PickBestFn()))
    if stage == "grouped":
        return out
    keyed = docs | "KeyById" >> beam.Map(sd._keyed_by_id)
    return {"doc": keyed, "best": out} | "JoinBest" >> beam.CoGroupByKey()


def encoded_sizes() -> dict[str, int]:
    """Bytes per element kind, encoded by the coder Beam infers for it (Any -> pickle-ish
    FastPrimitivesCoder for dicts and NamedTuples)."""
    from apache_beam.coders import registry

    from beam_e5.dedupe import core
    from beam_e5.transforms.semantic_dedupe import Coarse, to_point

    rec = next(make_records(0, 1))
    doc = {"id": rec["id"], "text": "x" * 166, "text_sha256": rec["text_sha256"],
           "source": rec["source"], "fields": {}}
    point = to_point(rec, "id")
    coarse = Coarse(point, ((3, 0.8), (7, 0.7), (9, 0.6)))
    coder = registry.get_coder(object)
    kinds = {"document (read, 166-char text)": doc, "embedded record": rec,
             "Point": point, "Coarse": coarse,
             "work-unit copy ((cell,i,j),(slot, Point))": (((3, 0), 0, 0), ("home", point)),
             "Candidate": core.Candidate(0.97, point.key, rec["id"])}
    return {k: len(coder.encode(v)) for k, v in kinds.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[10_000, 40_000])
    ap.add_argument("--stage", nargs="+", default=["none", "semantic"])
    ap.add_argument("--trace", action="store_true", help="resident memory per runner stage")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        log = trace_stages() if args.trace else None
        run_stage(args.child[0], int(args.child[1]))
        if log:
            print_trace(log)
        return
    print(json.dumps(encoded_sizes(), indent=1))
    rows = {}
    for stage in args.stage:
        for n in args.n:
            trace = ["--trace"] if args.trace else []
            proc = subprocess.Popen([sys.executable, __file__, "--child", stage, str(n), *trace],
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            _, status, usage = os.wait4(proc.pid, 0)
            out = proc.stdout.read()
            if status:
                raise SystemExit(f"{stage} {n} failed:\n{out[-3000:]}")
            rows[stage, n] = usage.ru_maxrss / 1024
            print(f"{stage:9s} n={n:>8,d} peak RSS {rows[stage, n]:8.1f} MiB  "
                  f"{' '.join(x for x in out.splitlines() if x.startswith(('records', 'dup')))}",
                  flush=True)
            for line in (x for x in out.splitlines() if x.startswith("trace ")):
                print(line, flush=True)
        if len(args.n) > 1:
            lo, hi = min(args.n), max(args.n)
            slope = (rows[stage, hi] - rows[stage, lo]) * 1024 * 1024 / (hi - lo)
            print(f"{stage:9s} slope {slope / 1000:.1f} KB/doc between {lo:,d} and {hi:,d}")


if __name__ == "__main__":
    main()
