"""One run's hold on a stable name: advisory lock, load tables, merge, index, swap, close.

The driver's side of a run (the steps are in :mod:`beam_e5.io.pg`): :meth:`PgRun.open` before
the pipeline, :meth:`PgRun.publish` after it succeeded, :meth:`PgRun.close` always.
"""

from __future__ import annotations

import json
import logging
import math
import re
import secrets
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Optional

import pyarrow as pa

from beam_e5.errors import ConfigError
from beam_e5.io.pg.config import PgSinkConfig
from beam_e5.io.pg.connection import PgError, connect, register_types, scrubbed, sql
from beam_e5.io.pg.copy import WriteToPgvector, column_list, create_table_sql, pg_columns
from beam_e5.io.pg.read import (
    CHUNKED_COLUMNS,
    PublishedTable,
    ReadPublished,
    count_rows,
    read_publication,
    table_columns,
)
from beam_e5.io.pg.refusals import REFUSED_KEY
from beam_e5.io.pg.uri import META_TABLE, PgTarget

if TYPE_CHECKING:
    from psycopg import Connection

LOG = logging.getLogger(__name__)

__all__ = ["PgRun"]

# columns that differ between the rows of one document: a carried document's rows take
# these from the published table, the rest (text_sha256, source fields, text) from this run
ROW_COLUMNS = ("id", "embedding", "tokens", "doc_id", "chunk", "chunks", "char_start",
               "char_end", "tokens_cut")
_INSUFFICIENT_PRIVILEGE = "42501"
_EXTENSION_VERSION = "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
_META_COLUMNS = ("name text PRIMARY KEY, table_name text NOT NULL, run_id text NOT NULL, "
                 "previous_table text, signature jsonb NOT NULL, manifest jsonb, "
                 "published_at timestamptz NOT NULL DEFAULT now()")
_RECORD_RUN = ("INSERT INTO {} (name, table_name, run_id, previous_table, signature, "
               "manifest, published_at) VALUES (%s, %s, %s, %s, %s, %s, now()) "
               "ON CONFLICT (name) DO UPDATE SET table_name = EXCLUDED.table_name, "
               "run_id = EXCLUDED.run_id, previous_table = EXCLUDED.previous_table, "
               "signature = EXCLUDED.signature, manifest = EXCLUDED.manifest, "
               "published_at = EXCLUDED.published_at")


class PgRun:
    """One run's hold on a stable name: lock, load tables, merge, index, swap.

    Open it before the pipeline starts (:meth:`open` validates and fails with a
    :class:`ConfigError`), :meth:`publish` after the pipeline succeeded, :meth:`close` always
    (a run that did not publish drops its load tables; the previous table keeps serving).
    """

    def __init__(self, cfg: PgSinkConfig, conn: Connection[Any], schema_name: str, run_id: str,
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
        self.refused_table = f"{name}__rej_{run_id}"  # keys of documents the server refused
        self.new_table = f"{name}__r{run_id}"
        self.done = False
        self.retired: Optional[str] = None  # after the swap: the table dropped at close

    # ---- names
    def qualified(self, table: str) -> sql.Identifier:
        """``"schema"."table"`` as a psycopg identifier, for composing statements."""
        return sql.Identifier(self.schema, table)

    @property
    def dsn(self) -> str:
        return self.cfg.target.dsn

    # ---- open
    @classmethod
    def open(cls, cfg: PgSinkConfig, schema: pa.Schema) -> PgRun:
        target = cfg.target
        try:
            conn = connect(target.dsn, register=False)
        except ConfigError:
            raise
        except PgError as e:  # its text is scrubbed of the password (libpq may repeat it)
            raise ConfigError(f"cannot connect to {target.redacted}: {target.scrub(str(e))}; "
                              "check the connection string, the network path and "
                              "PGPASSWORD/.pgpass") from None
        try:
            with scrubbed(target.secrets):
                run = cls._prepare(cfg, conn, schema)
        except PgError as e:
            conn.close()
            if e.sqlstate == _INSUFFICIENT_PRIVILEGE:
                raise ConfigError(f"{target.redacted}: {e}; grant this user what it needs "
                                  "(USAGE and CREATE on the schema of table=) or use another "
                                  "schema") from None
            raise
        except BaseException:
            conn.close()
            raise
        return run

    @classmethod
    def _prepare(cls, cfg: PgSinkConfig, conn: Connection[Any], schema: pa.Schema) -> PgRun:
        target = cfg.target
        columns = pg_columns(schema)
        _check_vector_extension(conn, target, columns)
        schema_name = _schema_of(conn, target)
        _lock(conn, schema_name, target.name)
        conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(
            sql.Identifier(schema_name, META_TABLE), sql.SQL(_META_COLUMNS)))
        published = read_publication(conn, schema_name, target.name)
        _check_name_is_ours(conn, schema_name, target.name, published)
        run = cls(cfg, conn, schema_name, _new_run_id(), columns, published)
        run._drop_leftovers()
        conn.execute(create_table_sql(run.qualified(run.load_table), columns, unlogged=True))
        conn.execute(create_table_sql(run.qualified(run.carry_table),
                                      [c for c in columns if c[0] != "embedding"],
                                      unlogged=True))
        conn.execute(create_table_sql(run.qualified(run.refused_table), [("doc_key", "bytea")],
                                      unlogged=True))
        LOG.info("beam-e5: loading %s.%s (run %s) at %s", schema_name, target.name, run.run_id,
                 target.redacted)
        return run

    def _drop_leftovers(self) -> None:
        """Drop what earlier runs left: every NAME__* but the published and previous ones."""
        keep = set()
        if self.published is not None:
            keep = {self.published.table, self.published.previous_table}
        for table in self._run_tables():
            if table not in keep:
                LOG.info("beam-e5: dropping %s, %s", table,
                         _leftover_kind(table, self.cfg.target.name))
                self._drop(table)

    def _drop(self, table: str) -> None:
        self._conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self.qualified(table)))

    def _run_tables(self) -> list[str]:
        """This name's run tables (NAME__rRUN and its __load_, __carry_, __rej_ tables)."""
        # a regular expression passed as a parameter; NAME is [a-z0-9_] only (uri.py checks)
        pattern = f"^{self.cfg.target.name}__(load_|carry_|rej_|r)[0-9]{{14}}_[0-9a-f]{{6}}$"
        rows = self._conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind = 'r' AND c.relname ~ %s",
            (self.schema, pattern)).fetchall()
        return sorted(r[0] for r in rows)

    # ---- Beam stages
    def write_vectors(self, schema: pa.Schema) -> WriteToPgvector:
        return WriteToPgvector(self.dsn, self._write_tables(self.load_table), schema,
                               self.cfg.batch_rows)

    def write_carried(self, schema: pa.Schema) -> WriteToPgvector:
        return WriteToPgvector(self.dsn, self._write_tables(self.carry_table), schema,
                               self.cfg.batch_rows, without_embedding=True)

    def _write_tables(self, table: str) -> tuple[sql.Identifier, sql.Identifier]:
        return self.qualified(table), self.qualified(self.refused_table)

    def published_documents(self) -> Optional[int]:
        """Documents of the table the name serves now: its rows less the window rows of
        documents cut into several (None: nothing published yet)."""
        if self.published is None:
            return None
        return count_rows(self._conn, self.qualified(self.published.table),
                          documents_only=self._published_chunked())

    def published_columns(self) -> set[str]:
        """The columns of the table the name serves now (empty: nothing published)."""
        if self.published is None:
            return set()
        return table_columns(self._conn, self.schema, self.published.table)

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
        with scrubbed(self.cfg.target.secrets):
            return self._publish(expected_rows, signature, manifest)

    def _publish(self, expected_rows: int, signature: dict[str, Any],
                 manifest: dict[str, Any]) -> dict[str, Any]:
        conn, new = self._conn, self.qualified(self.new_table)
        stats: dict[str, Any] = {"run_id": self.run_id, "table": self.new_table}
        t0 = time.perf_counter()
        loaded, carried = self._merge()
        stats.update(rows=loaded + carried, rows_loaded=loaded, rows_carried_in_db=carried,
                     **self._load_stats())
        if loaded + carried != expected_rows:
            raise RuntimeError(f"the new table holds {loaded + carried} rows but the run wrote "
                               f"{expected_rows}: not publishing (the previous table stays); "
                               "this is a bug, please report it")
        conn.execute(sql.SQL("ALTER TABLE {} ADD PRIMARY KEY ({})").format(
            new, sql.Identifier("id")))
        conn.execute(sql.SQL("ANALYZE {}").format(new))
        stats["merge_seconds"] = round(time.perf_counter() - t0, 3)
        t1 = time.perf_counter()
        stats["index"] = self._build_index(new, loaded + carried)
        stats["index_seconds"] = round(time.perf_counter() - t1, 3)
        self._swap(signature, {**manifest, "pg": stats})
        self.done = True
        return stats

    def _merge(self) -> tuple[int, int]:
        """The new table from the load table (one row per id) and the carried rows:
        ``(rows loaded, rows carried)``."""
        conn, new = self._conn, self.qualified(self.new_table)
        cols = column_list(name for name, _ in self.columns)
        conn.execute(create_table_sql(new, self.columns, unlogged=False))
        loaded = conn.execute(
            sql.SQL("INSERT INTO {} ({}) SELECT DISTINCT ON (id) {} FROM {} l WHERE {} "
                    "ORDER BY id").format(new, cols, cols, self.qualified(self.load_table),
                                          self._not_refused("l"))).rowcount
        if self.published is None:
            return loaded, 0
        carried = conn.execute(sql.SQL("INSERT INTO {} ({}) {}").format(
            new, cols, self._carried_rows())).rowcount
        return loaded, carried

    def _carried_rows(self) -> sql.Composed:
        """One carry row per document; every published row of it joins (its windows and
        document row when it was chunked), their own columns copied byte for byte."""
        assert self.published is not None
        names = [name for name, _ in self.columns]
        old_cols = self.published_columns()
        chunked = CHUNKED_COLUMNS <= old_cols and "doc_id" in names
        row_cols = {n for n in ROW_COLUMNS if n in old_cols} if chunked else {"embedding"}
        picks = sql.SQL(", ").join(sql.Identifier("o" if n in row_cols else "c", n)
                                   for n in names)
        key = "doc_id" if chunked else "id"
        return sql.SQL("SELECT {} FROM (SELECT DISTINCT ON (id) * FROM {} ORDER BY id) c "
                       "JOIN {} o ON {} = {} WHERE {}").format(
                           picks, self.qualified(self.carry_table),
                           self.qualified(self.published.table),
                           sql.Identifier("o", key), sql.Identifier("c", key),
                           self._not_refused("c"))

    def _not_refused(self, alias: str) -> sql.Composable:
        """No row of a document the server refused a row of (see refusals.py); ``TRUE``
        when it refused none (no hash of every row's id)."""
        if self._count(self.refused_table) == 0:
            return sql.SQL("TRUE")
        doc = sql.SQL("coalesce({}, {})").format(sql.Identifier(alias, "doc_id"),
                                                 sql.Identifier(alias, "id"))
        return sql.SQL("NOT EXISTS (SELECT 1 FROM {} r WHERE r.doc_key = " + REFUSED_KEY
                       + ")").format(self.qualified(self.refused_table), doc)

    def _load_stats(self) -> dict[str, int]:
        rows, ids = self._conn.execute(
            sql.SQL("SELECT count(*), count(DISTINCT id) FROM {}").format(
                self.qualified(self.load_table))).fetchone()
        refused = self._conn.execute(sql.SQL("SELECT count(DISTINCT doc_key) FROM {}").format(
            self.qualified(self.refused_table))).fetchone()[0]
        return {"duplicate_rows_dropped": rows - ids, "refused_documents": refused}

    def _count(self, table: str) -> int:
        return count_rows(self._conn, self.qualified(table))

    def _index_params(self, rows: int) -> dict[str, int]:
        cfg = self.cfg
        if cfg.index == "hnsw":
            return {"m": cfg.hnsw_m, "ef_construction": cfg.hnsw_ef_construction}
        lists = cfg.ivfflat_lists or (max(1, rows // 1000) if rows <= 1_000_000
                                      else int(math.sqrt(rows)))
        return {"lists": lists}

    def _build_index(self, table: sql.Identifier, rows: int) -> Optional[dict[str, Any]]:
        cfg = self.cfg
        if cfg.index == "none":
            return None
        vector_type = dict(self.columns)["embedding"].split("(")[0]
        ops = f"{vector_type}_cosine_ops"
        params = self._index_params(rows)
        # storage parameter names: the fixed keys above; their values: integer literals
        with_ = sql.SQL(", ").join(sql.SQL("{} = {}").format(sql.SQL(k), sql.Literal(int(v)))
                                   for k, v in params.items())
        with self._conn.transaction():
            if cfg.maintenance_work_mem:
                self._conn.execute(sql.SQL("SET LOCAL maintenance_work_mem = {}").format(
                    sql.Literal(cfg.maintenance_work_mem)))
            self._conn.execute(sql.SQL("CREATE INDEX {} ON {} USING {} ({} {}) WITH ({})").format(
                sql.Identifier(self.new_table + "_embedding_idx"), table,
                sql.Identifier(cfg.index), sql.Identifier("embedding"), sql.Identifier(ops),
                with_))
        return {"kind": cfg.index, "ops": ops, **params}

    def _swap(self, signature: dict[str, Any], manifest: dict[str, Any]) -> None:
        conn, name = self._conn, self.cfg.target.name
        view = self.qualified(name)
        old = self.published.table if self.published else None
        with conn.transaction():
            conn.execute(sql.SQL("DROP VIEW IF EXISTS {}").format(view))
            conn.execute(sql.SQL("CREATE VIEW {} AS SELECT * FROM {}").format(
                view, self.qualified(self.new_table)))
            conn.execute(sql.SQL(_RECORD_RUN).format(self.qualified(META_TABLE)),
                         (name, self.new_table, self.run_id, old,
                          json.dumps(signature, sort_keys=True, default=str),
                          json.dumps(manifest, sort_keys=True, default=str)))
        LOG.info("beam-e5: published %s.%s -> %s", self.schema, name, self.new_table)
        # after the swap: the table before the one just replaced is no longer needed
        self.retired = self.published.previous_table if self.published else None
        self.published = PublishedTable(self.new_table, self.run_id, signature, old)

    # ---- close
    def close(self) -> None:
        """Drop the load tables (and an unpublished new table); release the lock."""
        try:
            if not self._conn.closed:
                with scrubbed(self.cfg.target.secrets):
                    for table in (self.load_table, self.carry_table, self.refused_table) + (
                            () if self.done else (self.new_table,)):
                        self._drop(table)
                    if self.done:
                        self._drop_retired()
        finally:
            self._conn.close()

    def _drop_retired(self) -> None:
        """After a swap: drop the table published before the one just replaced."""
        old = self.published.previous_table if self.published else None
        if self.retired and self.retired not in (old, self.new_table):
            LOG.info("beam-e5: dropping %s: it was published before %s, and only the table "
                     "a run replaces is kept (as previous_table)", self.retired, old)
            self._drop(self.retired)


def _check_vector_extension(conn: Connection[Any], target: PgTarget,
                            columns: list[tuple[str, str]]) -> None:
    """Create the ``vector`` extension if missing and allowed; halfvec needs pgvector 0.7."""
    version = conn.execute(_EXTENSION_VERSION).fetchone()
    if version is None:
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        except Exception:  # noqa: BLE001 - any refusal means the same: the owner must do it
            raise ConfigError(f"the database of {target.redacted} lacks the vector extension "
                              "and this user cannot create it: run CREATE EXTENSION vector "
                              "as its owner (Cloud SQL / AlloyDB: as the cloudsqlsuperuser "
                              "/ alloydbsuperuser role)") from None
        version = conn.execute(_EXTENSION_VERSION).fetchone()
    register_types(conn)
    if any(t.startswith("halfvec") for _, t in columns) and _version_tuple(version[0]) < (0, 7):
        raise ConfigError(f"--vector-dtype float16 stores halfvec, which needs pgvector >= "
                          f"0.7 (this server has {version[0]}); use --vector-dtype float32 "
                          "or upgrade the extension")


def _leftover_kind(table: str, name: str) -> str:
    """Why a run table found at open is dropped, in words for the log."""
    if table.startswith((f"{name}__load_", f"{name}__carry_", f"{name}__rej_")):
        return "a load table left by a run that did not finish"
    return ("a run table that is neither published nor kept as the previous table (left by "
            "a run that did not finish)")


def _schema_of(conn: Connection[Any], target: PgTarget) -> str:
    if target.schema is not None:
        found = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s",
                             (target.schema,)).fetchone()
        if found is None:
            raise ConfigError(f"schema {target.schema} does not exist in the database of "
                              f"{target.redacted}: create it (CREATE SCHEMA {target.schema}) "
                              "or name an existing schema in table=SCHEMA.NAME")
        return target.schema
    schema_name = conn.execute("SELECT current_schema()").fetchone()[0]
    if schema_name is None:
        raise ConfigError(f"{target.redacted}: no current schema; name one in "
                          "table=SCHEMA.NAME")
    return schema_name


def _lock(conn: Connection[Any], schema_name: str, name: str) -> None:
    """The session advisory lock on ``schema.name``, held until the connection closes."""
    key = f"beam_e5:{schema_name}.{name}"  # a parameter: the lock's key, not SQL
    locked = conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))",
                          (key,)).fetchone()[0]
    if not locked:
        raise ConfigError(f"another beam-e5 run is publishing {schema_name}.{name} "
                          "right now; wait for it to finish (or end its session)")


def _check_name_is_ours(conn: Connection[Any], schema_name: str, name: str,
                        published: Optional[PublishedTable]) -> None:
    """``name`` must be free, or a view that beam-e5 published."""
    kind = conn.execute(
        "SELECT c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s", (schema_name, name)).fetchone()
    if kind is not None and (kind[0] != "v" or published is None):
        raise ConfigError(f"{schema_name}.{name} exists and was not published by "
                          f"beam-e5 (it is not a view recorded in {META_TABLE}); "
                          "choose another table= name or drop it")


def _new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%d%H%M%S") + "_" + secrets.token_hex(3)


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version)[:3])
