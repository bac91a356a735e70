"""The PostgreSQL/pgvector sink: bulk-load a run's vectors, index them, swap them in at once.

``--output 'postgresql://USER@HOST:PORT/DB?table=NAME'`` (see :mod:`beam_e5.io.pg.uri`).
``NAME`` is a view that readers query; it always points at one complete, indexed table.

A run, in order (the driver holds one connection and a session advisory lock on ``NAME``
from start to end, so two runs never publish the same name at once):

1. **open** (before the pipeline starts): check the ``vector`` extension (and ``halfvec``
   for ``--vector-dtype float16``), take the lock, drop what crashed runs left
   (``NAME__load_*``, ``NAME__carry_*``, unpublished ``NAME__r*``), create this run's
   unlogged load tables ``NAME__load_RUN`` (vectors) and ``NAME__carry_RUN`` (rows of
   ``reembed`` whose vector stays in the database).
2. **load** (the workers, :class:`WriteToPgvector`): batches of rows go in with binary
   ``COPY ... (FORMAT BINARY)``, one transaction per batch; never a row at a time. A bundle
   that Beam retries may load its rows twice: step 3 keeps one row per id.
3. **merge** (the driver, :meth:`PgRun.publish`): ``NAME__rRUN`` is filled from the load
   table (``DISTINCT ON (id)``) and, for ``reembed``, from the carry table joined to the
   published table on ``doc_id`` (every row of a carried document, its window rows and
   document row, copied inside the database byte for byte); its row count must equal the
   run's rows (``written`` documents + ``chunk_rows``); primary key on ``id``; ``ANALYZE``; then
   the ``--index`` (HNSW or IVFFlat, cosine) is built.
4. **swap**: ONE transaction replaces the view ``NAME`` by one over the new table and
   records the run (table, model signature, manifest) in ``beam_e5_published``. Readers see
   the old table or the new one, never a part; a run that dies before this commit leaves
   the previous table serving. The table it replaced is kept (``previous_table``) and the
   one before it dropped.

Credentials come from the URI, ``PGPASSWORD``, ``~/.pgpass`` or any libpq variable; only
the redacted URI is ever logged or written.
"""

from __future__ import annotations

import json
import logging
import math
import re
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterator, Optional, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa

from beam_e5.errors import ConfigError
from beam_e5.io.pg.uri import PgTarget, parse_pg_uri
from beam_e5.io.sinks import ARROW_BATCH_ROWS, vectors_to_table

LOG = logging.getLogger(__name__)

__all__ = ["INDEX_KINDS", "PgRun", "PgSinkConfig", "PublishedTable", "ReadPublished",
           "WriteToPgvector", "connect", "copy_table", "create_table_sql", "pg_columns"]

INDEX_KINDS = ("hnsw", "ivfflat", "none")
META_TABLE = "beam_e5_published"
METRICS_NAMESPACE = "beam_e5"


@dataclass(frozen=True)
class PgSinkConfig:
    """How a run publishes into PostgreSQL; validated before anything connects."""

    output: str = field(repr=False)  # the postgresql:// URI with ?table=NAME (password!)
    report_dir: str  # manifest, errors, duplicates, deleted ids (local or gs://)
    index: str = "hnsw"
    hnsw_m: int = 16
    hnsw_ef_construction: int = 64
    ivfflat_lists: int = 0  # 0: rows/1000 (at least 1), sqrt(rows) above a million rows
    store_text: bool = False
    batch_rows: int = ARROW_BATCH_ROWS  # rows per COPY (one transaction)
    maintenance_work_mem: Optional[str] = None  # for the index build, e.g. "1GB"
    read_shards: int = 16  # parallel reads of the published ids for reembed
    target: PgTarget = field(init=False, compare=False)  # its repr is redacted

    def __post_init__(self) -> None:
        object.__setattr__(self, "target", parse_pg_uri(self.output))
        if not self.report_dir or not self.report_dir.strip():
            raise ConfigError("a postgresql:// --output needs --report-dir (local or gs://) for "
                              "the run's manifest, errors, duplicates and deleted ids")
        if self.report_dir.lower().startswith(("postgresql://", "postgres://")):
            raise ConfigError("--report-dir is a directory (local or gs://), not a database")
        if self.index not in INDEX_KINDS:
            raise ConfigError(f"--index must be one of {', '.join(INDEX_KINDS)}, got "
                              f"{self.index!r}")
        for name in ("hnsw_m", "hnsw_ef_construction", "batch_rows", "read_shards"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
        if self.hnsw_m < 2 or self.hnsw_m > 100:
            raise ConfigError("--hnsw-m must be between 2 and 100 (pgvector's limits)")
        if self.hnsw_ef_construction < 2 * self.hnsw_m:
            raise ConfigError("--hnsw-ef-construction must be at least twice --hnsw-m")
        if self.ivfflat_lists < 0:
            raise ConfigError("--ivfflat-lists must be 0 (automatic) or positive")
        if self.maintenance_work_mem is not None and not _MEM.match(self.maintenance_work_mem):
            raise ConfigError("--pg-maintenance-work-mem takes a PostgreSQL memory size such as "
                              "512MB or 2GB")

    def options(self) -> dict[str, Any]:
        """The options for the manifest (the URI redacted)."""
        return {"output": self.target.redacted, "table": self.target.name,
                "schema": self.target.schema, "report_dir": self.report_dir,
                "index": self.index, "hnsw_m": self.hnsw_m,
                "hnsw_ef_construction": self.hnsw_ef_construction,
                "ivfflat_lists": self.ivfflat_lists, "store_text": self.store_text,
                "batch_rows": self.batch_rows}


_MEM = re.compile(r"^\d+\s*(kB|MB|GB|TB)$")


# ------------------------------------------------------------------ columns and COPY --

def _pg_type(arrow_type: pa.DataType) -> str:
    if pa.types.is_fixed_size_list(arrow_type):
        kind = "halfvec" if arrow_type.value_type == pa.float16() else "vector"
        return f"{kind}({arrow_type.list_size})"
    for test, sql_type in ((pa.types.is_string, "text"), (pa.types.is_large_string, "text"),
                           (pa.types.is_int32, "integer"), (pa.types.is_int64, "bigint"),
                           (pa.types.is_int16, "smallint"), (pa.types.is_float32, "real"),
                           (pa.types.is_float64, "double precision"),
                           (pa.types.is_boolean, "boolean")):
        if test(arrow_type):
            return sql_type
    raise ConfigError(f"no PostgreSQL column type for Arrow type {arrow_type}")


def pg_columns(schema: pa.Schema) -> list[tuple[str, str]]:
    """``(name, SQL type)`` of every column of a vectors schema, in order.

    The table carries whatever the vectors schema has (``id``, ``embedding``, ``text_sha256``,
    ``tokens``, kept fields, the text with ``--store-text``, chunk columns, ...).
    """
    return [(f.name, _pg_type(f.type)) for f in schema]


def _copy_type(sql_type: str) -> str:
    return sql_type.split("(")[0]  # COPY's set_types wants 'vector', not 'vector(384)'


def create_table_sql(qualified: str, columns: Sequence[tuple[str, str]], unlogged: bool) -> str:
    """``CREATE [UNLOGGED] TABLE`` for ``columns``; ``qualified`` is already quoted."""
    cols = ", ".join(f'"{name}" {sql_type}' + (" NOT NULL" if name in ("id", "embedding")
                                               else "")
                     for name, sql_type in columns)
    return f"CREATE {'UNLOGGED ' if unlogged else ''}TABLE {qualified} ({cols})"


def _psycopg():
    try:
        import psycopg
        from pgvector.psycopg import register_vector
    except ImportError as e:  # pragma: no cover - the pg extra is part of the test install
        raise ConfigError("a postgresql:// output needs psycopg 3 and pgvector: pip install "
                          "'beam-e5[pg]'") from e
    return psycopg, register_vector


# TCP keepalives and a connect timeout unless the URI sets its own: the launcher's connection
# (holding the lock) sits idle for as long as the pipeline runs.
CONNECTION_DEFAULTS = {"connect_timeout": "30", "keepalives": "1", "keepalives_idle": "60",
                       "keepalives_interval": "10", "keepalives_count": "6",
                       "application_name": "beam-e5"}


def connect(dsn: str, autocommit: bool = True, register: bool = True):
    """A psycopg connection with the pgvector types registered (``vector``, ``halfvec``)."""
    psycopg, register_vector = _psycopg()
    from psycopg.conninfo import conninfo_to_dict

    given = conninfo_to_dict(dsn)
    extra = {k: v for k, v in CONNECTION_DEFAULTS.items() if k not in given}
    conn = psycopg.connect(dsn, autocommit=autocommit, **extra)
    if register:
        register_vector(conn)
    return conn


def _columns_of(table: pa.Table) -> list[list]:
    out = []
    for name in table.column_names:
        col = table.column(name)
        if pa.types.is_fixed_size_list(col.type):
            arr = col.combine_chunks()
            matrix = arr.values.to_numpy(zero_copy_only=False).reshape(-1, col.type.list_size)
            if col.type.value_type == pa.float16():
                from pgvector import HalfVector  # the adapter dumps halfvec from this type only

                out.append([HalfVector(row) for row in matrix])
            else:
                out.append(list(matrix))  # numpy float32 rows: dumped as vector
        else:
            out.append(col.to_pylist())
    return out


def copy_table(conn, qualified: str, table: pa.Table, columns: Sequence[tuple[str, str]]) -> int:
    """Binary ``COPY`` of an Arrow table's rows into ``qualified``, in one transaction."""
    names = ", ".join(f'"{name}"' for name, _ in columns)
    values = _columns_of(table.select([name for name, _ in columns]))
    with conn.transaction(), conn.cursor() as cur:
        with cur.copy(f"COPY {qualified} ({names}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types([_copy_type(t) for _, t in columns])
            for row in zip(*values):
                copy.write_row(row)
    return table.num_rows


# ------------------------------------------------------------------ worker side (Beam) --

class _CopyBatches(beam.DoFn):
    """Batches of embedded records -> one binary COPY each into the run's load table."""

    def __init__(self, dsn: str, qualified: str, schema: pa.Schema, without_embedding: bool):
        self._dsn = dsn
        self._qualified = qualified
        self._schema = schema
        self._without_embedding = without_embedding
        self._conn = None
        self._rows = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "pg_rows_copied")
        self._copies = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "pg_copies")

    def setup(self) -> None:
        self._conn = connect(self._dsn)

    def process(self, records: list[dict]):
        if self._without_embedding:
            # rows whose vector stays in the database: every other column, built the same way
            dim = self._schema.field("embedding").type.list_size
            zero = np.zeros(dim, np.float32)
            table = vectors_to_table([dict(r, embedding=zero) for r in records], self._schema)
            table = table.drop_columns(["embedding"])
        else:
            table = vectors_to_table(records, self._schema)
        columns = pg_columns(table.schema)
        if self._conn is None or self._conn.closed:
            self._conn = connect(self._dsn)
        self._rows.inc(copy_table(self._conn, self._qualified, table, columns))
        self._copies.inc()
        return []

    def teardown(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class WriteToPgvector(beam.PTransform):
    """Embedded records -> the run's load table (or its carry table), by binary COPY."""

    def __init__(self, dsn: str, qualified: str, schema: pa.Schema, batch_rows: int,
                 without_embedding: bool = False) -> None:
        super().__init__()
        self._args = (dsn, qualified, schema, without_embedding)
        self._batch_rows = batch_rows

    def expand(self, pcoll):
        return (pcoll
                | "Batch" >> beam.BatchElements(min_batch_size=self._batch_rows,
                                                max_batch_size=self._batch_rows)
                | "Copy" >> beam.ParDo(_CopyBatches(*self._args)))


# the chunk columns a table of long-document runs has (rows of a document share doc_id)
CHUNKED_COLUMNS = frozenset({"doc_id", "chunk", "chunks"})
# columns that differ between the rows of one document: a carried document's rows take
# these from the published table, the rest (text_sha256, source fields, text) from this run
ROW_COLUMNS = ("id", "embedding", "tokens", "doc_id", "chunk", "chunks", "char_start",
               "char_end", "tokens_cut")
DOCUMENT_ROWS = "(chunk IS NULL OR chunks = 1)"  # a document's one row, or its document row


def _read_shard(shard: int, dsn: str, qualified: str, shards: int,
                chunked: bool = False) -> Iterator[tuple[str, dict]]:
    conn = connect(dsn, autocommit=False, register=False)
    try:
        with conn.cursor(name="beam_e5_previous") as cur:
            cur.itersize = 10_000
            if chunked:
                cur.execute(f"SELECT doc_id, text_sha256, tokens, chunks, tokens_cut "
                            f"FROM {qualified} WHERE {DOCUMENT_ROWS} AND "
                            "(hashtext(doc_id) & 2147483647) %% %s = %s", (shards, shard))
                rows = cur
            else:  # a table from before long-document chunking: one row per document
                cur.execute(f"SELECT id, text_sha256, tokens, 1, 0 FROM {qualified} "
                            "WHERE (hashtext(id) & 2147483647) %% %s = %s", (shards, shard))
                rows = cur
            for doc_id, sha, tokens, chunks, cut in rows:
                yield doc_id, {"id": doc_id, "doc_id": doc_id, "text_sha256": sha,
                               "tokens": tokens or 0, "chunk": None, "chunks": chunks or 1,
                               "tokens_cut": cut or 0, "embedding": None}
    finally:
        conn.close()


class ReadPublished(beam.PTransform):
    """``(doc_id, {id, doc_id, text_sha256, tokens, chunks, tokens_cut, embedding: None})``,
    one per DOCUMENT of a published table (its one row, or the document row of a document
    cut into windows), so a reembed decides per document.

    The vectors stay in the database: every row of a carried document (its window rows and
    its document row) is copied there by :meth:`PgRun.publish`.
    """

    def __init__(self, dsn: str, qualified: str, shards: int, chunked: bool = False) -> None:
        super().__init__()
        self._dsn, self._qualified, self._shards = dsn, qualified, shards
        self._chunked = chunked

    def expand(self, pbegin):
        return (pbegin
                | "Shards" >> beam.Create(list(range(self._shards)))
                | "ReadShard" >> beam.FlatMap(_read_shard, self._dsn, self._qualified,
                                              self._shards, self._chunked)
                | "Reshuffle" >> beam.Reshuffle())


# ------------------------------------------------------------------ driver side --

@dataclass(frozen=True)
class PublishedTable:
    """What ``beam_e5_published`` says is behind a name."""

    table: str  # the physical table, unqualified
    run_id: str
    signature: dict[str, Any]
    previous_table: Optional[str]


def _q(*parts: str) -> str:
    return ".".join('"' + p.replace('"', '""') + '"' for p in parts)


def _new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%d%H%M%S") + "_" + secrets.token_hex(3)


class PgRun:
    """One run's hold on a stable name: lock, load tables, merge, index, swap.

    Open it before the pipeline starts (:meth:`open` validates and fails with a
    :class:`ConfigError`), :meth:`publish` after the pipeline succeeded, :meth:`close` always
    (a run that did not publish drops its load tables; the previous table keeps serving).
    """

    def __init__(self, cfg: PgSinkConfig, conn, schema_name: str, run_id: str,
                 columns: list[tuple[str, str]], published: Optional[PublishedTable]) -> None:
        self.cfg = cfg
        self._conn = conn
        self.schema = schema_name
        self.run_id = run_id
        self.columns = columns
        self.published = published
        name = cfg.target.name
        self.load_table = f"{name}__load_{run_id}"
        self.carry_table = f"{name}__carry_{run_id}"
        self.new_table = f"{name}__r{run_id}"
        self.done = False

    # ---- names
    def qualified(self, table: str) -> str:
        return _q(self.schema, table)

    @property
    def dsn(self) -> str:
        return self.cfg.target.dsn

    # ---- open
    @classmethod
    def open(cls, cfg: PgSinkConfig, schema: pa.Schema) -> "PgRun":
        target = cfg.target
        try:
            conn = connect(target.dsn, register=False)
        except Exception as e:  # psycopg.OperationalError: its message names no password
            raise ConfigError(f"cannot connect to {target.redacted}: {str(e).strip()}; check "
                              "the URI, the network path and PGPASSWORD/.pgpass") from None
        try:
            run = cls._prepare(cfg, conn, schema)
        except BaseException:
            conn.close()
            raise
        return run

    @classmethod
    def _prepare(cls, cfg: PgSinkConfig, conn, schema: pa.Schema) -> "PgRun":
        _, register_vector = _psycopg()
        target = cfg.target
        version = conn.execute(
            "SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
        if version is None:
            try:
                conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            except Exception:
                raise ConfigError(f"the database of {target.redacted} lacks the vector extension "
                                  "and this user cannot create it: run CREATE EXTENSION vector "
                                  "as its owner (Cloud SQL / AlloyDB: as the cloudsqlsuperuser "
                                  "/ alloydbsuperuser role)") from None
            version = conn.execute(
                "SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
        register_vector(conn)
        columns = pg_columns(schema)
        if any(t.startswith("halfvec") for _, t in columns) and \
                _version_tuple(version[0]) < (0, 7):
            raise ConfigError(f"--vector-dtype float16 stores halfvec, which needs pgvector >= "
                              f"0.7 (this server has {version[0]}); use --vector-dtype float32 "
                              "or upgrade the extension")
        schema_name = target.schema or conn.execute("SELECT current_schema()").fetchone()[0]
        if schema_name is None:
            raise ConfigError(f"{target.redacted}: no current schema; name one in "
                              "table=SCHEMA.NAME")
        key = f"beam_e5:{schema_name}.{target.name}"
        locked = conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))",
                              (key,)).fetchone()[0]
        if not locked:
            raise ConfigError(f"another beam-e5 run is publishing {schema_name}.{target.name} "
                              "right now; wait for it to finish (or end its session)")
        conn.execute(f"CREATE TABLE IF NOT EXISTS {_q(schema_name, META_TABLE)} ("
                     "name text PRIMARY KEY, table_name text NOT NULL, run_id text NOT NULL, "
                     "previous_table text, signature jsonb NOT NULL, manifest jsonb, "
                     "published_at timestamptz NOT NULL DEFAULT now())")
        published = _published(conn, schema_name, target.name)
        kind = conn.execute(
            "SELECT c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = %s", (schema_name, target.name)).fetchone()
        if kind is not None and (kind[0] != "v" or published is None):
            raise ConfigError(f"{schema_name}.{target.name} exists and was not published by "
                              "beam-e5 (it is not a view recorded in beam_e5_published); "
                              "choose another table= name or drop it")
        run = cls(cfg, conn, schema_name, _new_run_id(), columns, published)
        run._drop_leftovers()
        conn.execute(create_table_sql(run.qualified(run.load_table), columns, unlogged=True))
        conn.execute(create_table_sql(run.qualified(run.carry_table),
                                      [c for c in columns if c[0] != "embedding"],
                                      unlogged=True))
        LOG.info("beam-e5: loading %s.%s (run %s) at %s", schema_name, target.name, run.run_id,
                 target.redacted)
        return run

    def _drop_leftovers(self) -> None:
        """Drop tables of crashed runs: every NAME__* but the published and previous ones."""
        keep = set()
        if self.published is not None:
            keep = {self.published.table, self.published.previous_table}
        for table in self._run_tables():
            if table not in keep:
                LOG.info("beam-e5: dropping %s, left by an unfinished run", table)
                self._conn.execute(f"DROP TABLE IF EXISTS {self.qualified(table)}")

    def _run_tables(self) -> list[str]:
        """This name's run tables (NAME__rRUN, NAME__load_RUN, NAME__carry_RUN), by pattern."""
        pattern = (f"^{self.cfg.target.name}__(load_|carry_|r)"  # name: [a-z0-9_] only
                   "[0-9]{14}_[0-9a-f]{6}$")
        rows = self._conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind = 'r' AND c.relname ~ %s",
            (self.schema, pattern)).fetchall()
        return sorted(r[0] for r in rows)

    # ---- Beam stages
    def write_vectors(self, schema: pa.Schema) -> WriteToPgvector:
        return WriteToPgvector(self.dsn, self.qualified(self.load_table), schema,
                               self.cfg.batch_rows)

    def write_carried(self, schema: pa.Schema) -> WriteToPgvector:
        return WriteToPgvector(self.dsn, self.qualified(self.carry_table), schema,
                               self.cfg.batch_rows, without_embedding=True)

    def published_documents(self) -> Optional[int]:
        """Documents of the table the name serves now: its rows less the window rows of
        documents cut into several (None: nothing published yet)."""
        if self.published is None:
            return None
        where = f" WHERE {DOCUMENT_ROWS}" if self._published_chunked() else ""
        return self._conn.execute(f"SELECT count(*) FROM "
                                  f"{self.qualified(self.published.table)}{where}").fetchone()[0]

    def published_columns(self) -> set[str]:
        """The columns of the table the name serves now (empty: nothing published)."""
        if self.published is None:
            return set()
        rows = self._conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = %s "
            "AND table_name = %s", (self.schema, self.published.table)).fetchall()
        return {r[0] for r in rows}

    def _published_chunked(self) -> bool:
        return CHUNKED_COLUMNS <= self.published_columns()

    def read_published(self) -> ReadPublished:
        if self.published is None:
            raise ConfigError(f"nothing is published under {self.cfg.target.name} yet: run "
                              "`beam-e5 embed` with this --output first")
        return ReadPublished(self.dsn, self.qualified(self.published.table),
                             self.cfg.read_shards, self._published_chunked())

    # ---- publish
    def publish(self, expected_rows: int, signature: dict[str, Any],
                manifest: dict[str, Any]) -> dict[str, Any]:
        """Merge, check, index, swap. Returns timings and sizes for the manifest."""
        conn, new = self._conn, self.qualified(self.new_table)
        names = [name for name, _ in self.columns]
        cols = ", ".join(f'"{n}"' for n in names)
        stats: dict[str, Any] = {"run_id": self.run_id, "table": self.new_table}
        t0 = time.perf_counter()
        conn.execute(create_table_sql(new, self.columns, unlogged=False))
        loaded = conn.execute(
            f"INSERT INTO {new} ({cols}) SELECT DISTINCT ON (id) {cols} "
            f"FROM {self.qualified(self.load_table)} ORDER BY id").rowcount
        carried = 0
        if self.published is not None:
            # one carry row per document; every published row of it joins (its windows and
            # document row when it was chunked), their own columns copied byte for byte
            old_cols = self.published_columns()
            chunked = CHUNKED_COLUMNS <= old_cols and "doc_id" in names
            row_cols = {n for n in ROW_COLUMNS if n in old_cols} if chunked else {"embedding"}
            picks = ", ".join(f'o."{n}"' if n in row_cols else f'c."{n}"' for n in names)
            on = 'o."doc_id" = c."doc_id"' if chunked else 'o."id" = c."id"'
            carried = conn.execute(
                f"INSERT INTO {new} ({cols}) SELECT {picks} FROM (SELECT DISTINCT ON (id) * "
                f"FROM {self.qualified(self.carry_table)} ORDER BY id) c "
                f"JOIN {self.qualified(self.published.table)} o ON {on}").rowcount
        stats.update(rows=loaded + carried, rows_loaded=loaded, rows_carried_in_db=carried,
                     duplicate_rows_dropped=self._count(self.load_table) - loaded)
        if loaded + carried != expected_rows:
            raise RuntimeError(f"the new table holds {loaded + carried} rows but the run wrote "
                               f"{expected_rows}: not publishing (the previous table stays); "
                               "this is a bug, please report it")
        conn.execute(f'ALTER TABLE {new} ADD PRIMARY KEY ("id")')
        conn.execute(f"ANALYZE {new}")
        stats["merge_seconds"] = round(time.perf_counter() - t0, 3)
        t1 = time.perf_counter()
        stats["index"] = self._build_index(new, loaded + carried)
        stats["index_seconds"] = round(time.perf_counter() - t1, 3)
        self._swap(signature, {**manifest, "pg": stats})
        self.done = True
        return stats

    def _count(self, table: str) -> int:
        return conn_count(self._conn, self.qualified(table))

    def _build_index(self, qualified: str, rows: int) -> Optional[dict[str, Any]]:
        cfg = self.cfg
        if cfg.index == "none":
            return None
        vector_type = dict(self.columns)["embedding"].split("(")[0]
        ops = f"{vector_type}_cosine_ops"
        if cfg.index == "hnsw":
            params = {"m": cfg.hnsw_m, "ef_construction": cfg.hnsw_ef_construction}
        else:
            lists = cfg.ivfflat_lists or (max(1, rows // 1000) if rows <= 1_000_000
                                          else int(math.sqrt(rows)))
            params = {"lists": lists}
        with_ = ", ".join(f"{k} = {int(v)}" for k, v in params.items())
        with self._conn.transaction():
            if cfg.maintenance_work_mem:
                self._conn.execute(f"SET LOCAL maintenance_work_mem = '{cfg.maintenance_work_mem}'")
            self._conn.execute(
                f"CREATE INDEX {_q(self.new_table + '_embedding_idx')} ON {qualified} "
                f"USING {cfg.index} (embedding {ops}) WITH ({with_})")
        return {"kind": cfg.index, "ops": ops, **params}

    def _swap(self, signature: dict[str, Any], manifest: dict[str, Any]) -> None:
        conn, name = self._conn, self.cfg.target.name
        view, meta = self.qualified(name), self.qualified(META_TABLE)
        old = self.published.table if self.published else None
        with conn.transaction():
            conn.execute(f"DROP VIEW IF EXISTS {view}")
            conn.execute(f"CREATE VIEW {view} AS SELECT * FROM {self.qualified(self.new_table)}")
            conn.execute(
                f"INSERT INTO {meta} (name, table_name, run_id, previous_table, signature, "
                "manifest, published_at) VALUES (%s, %s, %s, %s, %s, %s, now()) "
                "ON CONFLICT (name) DO UPDATE SET table_name = EXCLUDED.table_name, "
                "run_id = EXCLUDED.run_id, previous_table = EXCLUDED.previous_table, "
                "signature = EXCLUDED.signature, manifest = EXCLUDED.manifest, "
                "published_at = EXCLUDED.published_at",
                (name, self.new_table, self.run_id, old,
                 json.dumps(signature, sort_keys=True, default=str),
                 json.dumps(manifest, sort_keys=True, default=str)))
        LOG.info("beam-e5: published %s.%s -> %s", self.schema, name, self.new_table)
        # after the swap: the table before the one just replaced is no longer needed
        self.published = PublishedTable(self.new_table, self.run_id, signature, old)

    # ---- close
    def close(self) -> None:
        """Drop the load tables (and an unpublished new table); release the lock."""
        try:
            if not self._conn.closed:
                for table in (self.load_table, self.carry_table) + (
                        () if self.done else (self.new_table,)):
                    self._conn.execute(f"DROP TABLE IF EXISTS {self.qualified(table)}")
                if self.done:
                    self._drop_leftovers()
        finally:
            self._conn.close()


def conn_count(conn, qualified: str) -> int:
    return conn.execute(f"SELECT count(*) FROM {qualified}").fetchone()[0]


def _published(conn, schema_name: str, name: str) -> Optional[PublishedTable]:
    row = conn.execute(
        f"SELECT table_name, run_id, signature, previous_table FROM {_q(schema_name, META_TABLE)} "
        "WHERE name = %s", (name,)).fetchone()
    if row is None:
        return None
    signature = row[2] if isinstance(row[2], dict) else json.loads(row[2])
    return PublishedTable(row[0], row[1], signature, row[3])


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version)[:3])

