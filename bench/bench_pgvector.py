"""Loading vectors into PostgreSQL/pgvector: rows/s of the sink's binary COPY, index build time.

    python bench/bench_pgvector.py                     # 100,000 random 384-d vectors
    python bench/bench_pgvector.py --n 10000 --skip-beam   # smoke run

Starts a throw-away PostgreSQL 16 + pgvector from the ``pgserver`` wheel (unix socket; runs
as root too, see tests/pg_fixtures.py), then measures the pieces of a beam-e5 run into
``postgresql://...?table=bench``:

* **copy**: the worker's code path (:func:`beam_e5.io.pg.copy.copy_table`) in one process,
  batches of ``--batch-rows`` (one binary ``COPY`` and one transaction each) into the run's
  unlogged load table: rows/s of the bulk load itself;
* **beam**: the same rows through ``WriteToPgvector`` on the DirectRunner (``beam.Create`` of
  the records, ``BatchElements``, the COPY DoFn): rows/s of the load as a pipeline runs it;
* **merge**: ``INSERT ... SELECT DISTINCT ON (id)`` into the final table, primary key,
  ``ANALYZE`` (what :meth:`PgRun.publish` does before the index);
* **index**: ``CREATE INDEX ... USING hnsw (embedding vector_cosine_ops)`` (and IVFFlat) on the
  merged table, ``maintenance_work_mem`` set by ``--maintenance-work-mem``;
* **swap**: the one transaction that points the view at the new table.

Vectors are random unit vectors (seeded), ids ``doc-NNNNNNN``, a text key and a token count,
as beam-e5 writes them. Every figure is one run; the machine's load average is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from beam_e5.io.pg.config import PgSinkConfig  # noqa: E402
from beam_e5.io.pg.connection import connect  # noqa: E402
from beam_e5.io.pg.copy import copy_table, pg_columns  # noqa: E402
from beam_e5.io.pg.run import PgRun  # noqa: E402
from beam_e5.io.sinks import vectors_schema, vectors_to_table  # noqa: E402


def records(n: int, dim: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    m = rng.standard_normal((n, dim), dtype=np.float32)
    m /= np.linalg.norm(m, axis=1, keepdims=True)
    return [{"id": f"doc-{i:07d}", "embedding": m[i], "text_sha256": f"{i:064x}",
             "tokens": 100 + i % 50, "fields": {}} for i in range(n)]


def shard_records(shard: int, n: int, dim: int, shards: int) -> list[dict]:
    recs = records(len(range(shard, n, shards)), dim, seed=1 + shard)
    return [dict(r, id=f"doc-{shard + i * shards:07d}") for i, r in enumerate(recs)]


def open_run(uri: str, report: str, args, index: str) -> PgRun:
    cfg = PgSinkConfig(uri + "&table=bench", report, index=index, batch_rows=args.batch_rows,
                       maintenance_work_mem=args.maintenance_work_mem)
    return PgRun.open(cfg, vectors_schema(args.dim, "float32", (), {}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--batch-rows", type=int, default=2048)
    ap.add_argument("--maintenance-work-mem", default="1GB")
    ap.add_argument("--skip-beam", action="store_true")
    ap.add_argument("--skip-ivfflat", action="store_true")
    ap.add_argument("--json", help="write the results here too")
    args = ap.parse_args()

    import pgserver

    tmp = Path(tempfile.mkdtemp(prefix="bench-pg-"))
    server = pgserver.get_server(tmp / "pgdata", cleanup_mode="delete")
    uri = server.get_uri()
    results: dict = {"n": args.n, "dim": args.dim, "batch_rows": args.batch_rows,
                     "load_avg_1m_start": os.getloadavg()[0]}
    try:
        with connect(uri, register=False) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            results["postgres"] = conn.execute("SHOW server_version").fetchone()[0]
            results["pgvector"] = conn.execute(
                "SELECT extversion FROM pg_extension WHERE extname='vector'").fetchone()[0]
        recs = records(args.n, args.dim, seed=0)
        schema = vectors_schema(args.dim, "float32", (), {})
        columns = pg_columns(schema)

        # 1. the COPY path of a worker, no Beam
        run = open_run(uri, str(tmp / "report"), args, "hnsw")
        t = time.perf_counter()
        with connect(uri) as conn:
            for start in range(0, args.n, args.batch_rows):
                table = vectors_to_table(recs[start:start + args.batch_rows], schema)
                copy_table(conn, run.qualified(run.load_table), table, columns)
        secs = time.perf_counter() - t
        results["copy_seconds"] = round(secs, 2)
        results["copy_rows_per_s"] = round(args.n / secs)
        print(f"copy  {args.n:,} rows in {secs:.2f} s: {args.n / secs:,.0f} rows/s", flush=True)

        # 2-5. merge, HNSW index, swap (PgRun.publish), timed by publish itself
        t = time.perf_counter()
        stats = run.publish(args.n, {"bench": True}, {})
        run.close()
        results["hnsw"] = stats
        results["publish_seconds_hnsw"] = round(time.perf_counter() - t, 2)
        print(f"merge {stats['merge_seconds']:.2f} s; HNSW {stats['index']} build "
              f"{stats['index_seconds']:.2f} s; publish total "
              f"{results['publish_seconds_hnsw']:.2f} s", flush=True)

        if not args.skip_ivfflat:
            run = open_run(uri, str(tmp / "report"), args, "ivfflat")
            with connect(uri) as conn:
                for start in range(0, args.n, args.batch_rows):
                    table = vectors_to_table(recs[start:start + args.batch_rows], schema)
                    copy_table(conn, run.qualified(run.load_table), table, columns)
            stats = run.publish(args.n, {"bench": True}, {})
            run.close()
            results["ivfflat"] = stats
            print(f"IVFFlat {stats['index']} build {stats['index_seconds']:.2f} s", flush=True)

        if not args.skip_beam:
            import apache_beam as beam

            run = open_run(uri, str(tmp / "report"), args, "none")
            t = time.perf_counter()
            shards = 10
            with beam.Pipeline(runner="DirectRunner") as p:
                # the records are generated inside the pipeline (a Create of 100,000 numpy
                # records would put them all into the pipeline proto, timing that instead)
                _ = (p | beam.Create(list(range(shards)), reshuffle=False)
                     | beam.FlatMap(shard_records, args.n, args.dim, shards)
                     | run.write_vectors(schema))
            secs = time.perf_counter() - t
            run.publish(args.n, {"bench": True}, {})
            run.close()
            results["beam_seconds"] = round(secs, 2)
            results["beam_rows_per_s"] = round(args.n / secs)
            print(f"beam  {args.n:,} rows through WriteToPgvector (DirectRunner) in {secs:.2f} s:"
                  f" {args.n / secs:,.0f} rows/s", flush=True)
        results["load_avg_1m_end"] = os.getloadavg()[0]
        print(json.dumps(results, indent=2, default=str))
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    finally:
        server.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
