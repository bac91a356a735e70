"""What a row PostgreSQL refuses costs: one batch's COPY with 0, 1 or K refused rows.

    python bench/bench_pg_refusals.py                       # 2,048-row batches of 384-d vectors
    python bench/bench_pg_refusals.py --bad 0 1 4 16 --rounds 5

Starts a throw-away PostgreSQL 16 + pgvector from the ``pgserver`` wheel (as
bench/bench_pgvector.py does) and runs the worker's code path (``_CopyBatches.process`` of
:mod:`beam_e5.io.pg.copy`) on one batch of ``--batch-rows`` rows in which ``K`` rows hold a
NaN vector (which pgvector refuses): the batch is halved until those rows are found, the rest
loaded. Prints the median, min and max time of ``--rounds`` rounds per K (each round a new
batch, K rows picked at random).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from beam_e5.io.pg.config import PgSinkConfig  # noqa: E402
from beam_e5.io.pg.connection import connect  # noqa: E402
from beam_e5.io.pg.copy import _CopyBatches  # noqa: E402
from beam_e5.io.pg.run import PgRun  # noqa: E402
from beam_e5.io.sinks import vectors_schema  # noqa: E402


def batch(n: int, dim: int, bad: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    m = rng.standard_normal((n, dim), dtype=np.float32)
    m /= np.linalg.norm(m, axis=1, keepdims=True)
    for i in rng.choice(n, size=bad, replace=False):
        m[i] = np.nan
    return [{"id": f"s{seed}-{i:07d}", "embedding": m[i], "text_sha256": f"{i:064x}",
             "tokens": 100, "fields": {}} for i in range(n)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-rows", type=int, default=2048)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--bad", type=int, nargs="+", default=[0, 1, 4, 16])
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()

    import pgserver

    tmp = Path(tempfile.mkdtemp(prefix="bench-pg-refusals-"))
    server = pgserver.get_server(tmp / "pgdata", cleanup_mode="delete")
    try:
        uri = server.get_uri()
        with connect(uri, register=False) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        schema = vectors_schema(args.dim, "float32", (), {})
        run = PgRun.open(PgSinkConfig(uri + "&table=bench", str(tmp / "r"), index="none"),
                         schema)
        copier = _CopyBatches(run.dsn, run._write_tables(run.load_table), schema, False)
        copier.setup()
        print(f"batch of {args.batch_rows:,} rows, {args.dim}-d, {args.rounds} rounds each")
        for k in args.bad:
            times = []
            for r in range(args.rounds):
                rows = batch(args.batch_rows, args.dim, k, seed=1000 * k + r)
                t0 = time.perf_counter()
                refused = copier.process(rows)
                times.append(time.perf_counter() - t0)
                assert len(refused) == k
            print(f"  {k:3d} refused rows: median {statistics.median(times) * 1000:8.1f} ms "
                  f"per batch (min {min(times) * 1000:.1f}, max {max(times) * 1000:.1f})")
        copier.teardown()
        run.close()
    finally:
        server.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
