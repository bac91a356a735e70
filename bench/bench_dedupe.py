"""Scaling benchmark of semantic dedupe: n and 4n clustered vectors, same settings.

Prints, for each size, wall time, pairs compared (the ``dedupe_candidate_pairs``
metric), cells and duplicates found, the brute-force pair count n^2/2, the copies of
each vector placed in cells (home + probes), the largest cell, the process's peak RSS so
far (the n run comes first, so the 4n line's peak is the 4n run's) and the 4n/n ratios.  With ``num_cells='auto'`` cells keep a fixed average size, so pairs and
time should grow about 4x (brute force would grow 16x).

    python bench/bench_dedupe.py --n 20000            # Beam DirectRunner
    python bench/bench_dedupe.py --n 20000 --mode core  # per-cell compute path only (one level)
    # the two-level regime (coarse cells capped by the sample, each divided again), scaled
    # down: a 2,000-vector sample (200 coarse cells) and 10-home cells; 20k -> 80k vectors
    # have 100 -> 400 homes per coarse cell, as 20M -> 80M have with the defaults
    python bench/bench_dedupe.py --n 20000 --sample-size 2000 --target-cell-size 10 --check

Data are generated inside the pipeline (shards of a seeded generator), so the
pipeline graph stays small whatever n is.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import apache_beam as beam
import numpy as np
from apache_beam.metrics import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions

from beam_e5.dedupe import core
from beam_e5.transforms.semantic_dedupe import SemanticDedupe, SemanticDedupeConfig

DUP_SIMS = (0.86, 0.91, 0.96)


def make_shard(shard: int, size: int, dim: int, clusters: int, dup_rate: float,
               seed: int) -> np.ndarray:
    """``size`` unit float32 vectors: clustered, ``dup_rate`` of them planted duplicates."""
    centers = np.random.default_rng(seed).normal(size=(clusters, dim))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    rng = np.random.default_rng([seed, shard])
    base = size - int(size * dup_rate)
    x = centers[rng.integers(clusters, size=base)] + rng.normal(size=(base, dim)) / np.sqrt(dim)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    src = x[rng.integers(base, size=size - base)]
    sims = rng.choice(DUP_SIMS, size=(size - base, 1))
    noise = rng.normal(size=src.shape)
    noise -= (noise * src).sum(axis=1, keepdims=True) * src
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    vecs = np.vstack([x, sims * src + np.sqrt(1 - sims**2) * noise]).astype(np.float32)
    return (vecs / np.linalg.norm(vecs, axis=1, keepdims=True))[rng.permutation(size)]


def shard_records(shard: int, n: int, args: argparse.Namespace):
    vecs = make_shard(shard, args.shard_size, args.dim, args.clusters, args.dup_rate, args.seed)
    vecs = vecs[: n - shard * args.shard_size]
    for k, vec in enumerate(vecs):
        yield {"id": record_id(shard * args.shard_size + k, args.shard_size), "embedding": vec}


def run_beam(n: int, args: argparse.Namespace, cfg: SemanticDedupeConfig) -> dict:
    shards = range(-(-n // args.shard_size))
    opts = PipelineOptions([f"--direct_num_workers={args.workers}"])
    pipeline = beam.Pipeline(options=opts)
    result = (
        pipeline
        | beam.Create(list(shards))
        | beam.FlatMap(shard_records, n, args)
        | beam.Reshuffle()
        | SemanticDedupe(cfg)
    )
    _ = result.kept | "CountKept" >> beam.combiners.Count.Globally()
    with tempfile.TemporaryDirectory(prefix="bench-dedupe-") as tmp:
        if args.check:
            _ = (result.duplicates | beam.Map(lambda d: json.dumps([d["id"], d["duplicate_of"]]))
                 | beam.io.WriteToText(str(Path(tmp) / "dups")))
        started = time.perf_counter()
        res = pipeline.run()
        res.wait_until_finish()
        elapsed = time.perf_counter() - started
        found = {tuple(json.loads(line))
                 for f in Path(tmp).glob("dups*") for line in f.read_text().splitlines()}
    metrics = res.metrics().query(MetricsFilter().with_namespace("beam_e5"))
    stats = {m.key.metric.name: m.committed for m in metrics["counters"]}
    sizes = [m.committed for m in metrics["distributions"]
             if m.key.metric.name == "dedupe_largest_cell"]
    return {"seconds": elapsed, "pairs": stats.get("dedupe_candidate_pairs", 0),
            "cells": stats.get("dedupe_cells", 0),
            "copies": sum(d.sum for d in sizes), "largest": max((d.max for d in sizes), default=0),
            "duplicates": stats.get("semantic_duplicates", 0), "found": found}


def run_core(n: int, args: argparse.Namespace, cfg: SemanticDedupeConfig) -> dict:
    """The per-cell compute path of SemanticDedupe without Beam (one cell at a time)."""
    vecs = np.vstack([make_shard(s, args.shard_size, args.dim, args.clusters, args.dup_rate,
                                 args.seed) for s in range(-(-n // args.shard_size))])[:n]
    started = time.perf_counter()
    sample = vecs[: cfg.sample_size]
    centroids = core.fit_centroids(sample, cfg.cells_for(n), cfg.seed, cfg.kmeans_iterations)
    homes: dict[int, list[int]] = {}
    probes: dict[int, list[int]] = {}
    for i, vec in enumerate(vecs):
        home, others = core.assign_cells(vec, centroids, cfg.probes, cfg.probe_margin)
        homes.setdefault(home, []).append(i)
        for cell in others:
            probes.setdefault(cell, []).append(i)
    pairs, best = 0, {}
    for cell, members in homes.items():
        rows = members + probes.get(cell, [])
        pairs += core.compared_pairs(len(rows), len(members), True)
        keys = [(record_id(i, args.shard_size),) for i in rows]
        for key, cand in core.best_earlier(vecs[rows], vecs[members], keys, keys[: len(members)],
                                           cfg.threshold, cfg.block_size, True).items():
            best[key] = core.better(best[key], cand) if key in best else cand
    copies = sum(len(m) + len(probes.get(c, [])) for c, m in homes.items())
    return {"seconds": time.perf_counter() - started, "pairs": pairs, "cells": len(homes),
            "copies": copies, "largest": 0,
            "duplicates": len(best), "found": {(k[0], c[2]) for k, c in best.items()}}


def peak_rss_mib() -> float:
    """This process's peak resident set size so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def record_id(index: int, shard_size: int = 5_000) -> str:
    return f"s{index // shard_size:05d}-{index % shard_size:06d}"


def check_line(n: int, args: argparse.Namespace, cfg: SemanticDedupeConfig, found: set) -> str:
    """Precision and recall of ``found`` (id, duplicate_of) pairs against brute force."""
    vecs = np.vstack([make_shard(s, args.shard_size, args.dim, args.clusters, args.dup_rate,
                                 args.seed) for s in range(-(-n // args.shard_size))])[:n]
    started = time.perf_counter()
    ref = core.brute_force_duplicates([record_id(i, args.shard_size) for i in range(n)], vecs,
                                      cfg.threshold)
    seconds = time.perf_counter() - started
    want = {(d, e) for d, (e, _) in ref.items()}
    return (f"check n={n}: brute force {seconds:.1f}s, {len(want)} duplicates; "
            f"precision={len(found & want) / len(found) if found else 1.0:.4f} "
            f"recall={len(found & want) / len(want) if want else 1.0:.4f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="base corpus size (default 20000)")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--clusters", type=int, default=200, help="topics in the synthetic data")
    parser.add_argument("--dup-rate", type=float, default=0.1, help="planted duplicate fraction")
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--mode", choices=("beam", "core"), default="beam")
    parser.add_argument("--workers", type=int, default=1, help="DirectRunner workers")
    parser.add_argument("--shard-size", type=int, default=5_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sample-size", type=int, default=SemanticDedupeConfig.sample_size,
                        help="k-means sample (coarse cells <= sample/10); lower it to reach "
                             "the two-level regime of 100M-vector corpora at a small n")
    parser.add_argument("--target-cell-size", type=int,
                        default=SemanticDedupeConfig.target_cell_size)
    parser.add_argument("--check", action="store_true",
                        help="also compare the n-size run with the brute-force rule")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("--n must be >= 1")
    cfg = SemanticDedupeConfig(threshold=args.threshold, seed=args.seed,
                               sample_size=args.sample_size,
                               target_cell_size=args.target_cell_size)
    runner = run_beam if args.mode == "beam" else run_core
    rows = []
    for n in (args.n, 4 * args.n):
        stats = runner(n, args, cfg)
        rows.append(stats)
        print(f"n={n:>8} time={stats['seconds']:8.1f}s pairs_compared={stats['pairs']:>14,} "
              f"brute_force_pairs={n * (n - 1) // 2:>14,} cells={stats['cells']:>5} "
              f"duplicates={stats['duplicates']:>7} copies_per_vector={stats['copies'] / n:.2f} "
              f"largest_cell={stats['largest']} peak_rss_so_far={peak_rss_mib():,.0f}MiB",
              flush=True)
        if args.check and n == args.n:
            print(check_line(n, args, cfg, stats["found"]), flush=True)
    small, big = rows
    print(f"ratio 4n/n: time={big['seconds'] / small['seconds']:.2f} "
          f"pairs={big['pairs'] / max(small['pairs'], 1):.2f} (brute force: 16.00)")


if __name__ == "__main__":
    main()
