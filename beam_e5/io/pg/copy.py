"""Arrow to PostgreSQL: column types, ``CREATE TABLE``, binary ``COPY``, and the Beam write.

The workers' side of a run: :class:`WriteToPgvector` batches embedded records and loads each
batch with one binary ``COPY ... (FORMAT BINARY)`` into the run's load (or carry) table, one
transaction per batch, never a row at a time. A batch the server refuses for a value is
split until the refused rows are found (:mod:`beam_e5.io.pg.refusals`); those come out of
:class:`WriteToPgvector` as error records, and the rest are loaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Optional, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa

from beam_e5.errors import ConfigError
from beam_e5.io.pg.connection import connect, scrubbed, sql
from beam_e5.io.pg.refusals import copy_or_find_refused, record_refused, refused_row
from beam_e5.io.pg.uri import secrets_of
from beam_e5.io.sinks import vectors_to_table
from beam_e5.records import METRICS_NAMESPACE

if TYPE_CHECKING:
    from psycopg import Connection

__all__ = ["WriteToPgvector", "copy_table", "create_table_sql", "pg_columns"]

# Arrow scalar types and their PostgreSQL column types (vectors: see _pg_type)
_SCALAR_TYPES = ((pa.types.is_string, "text"), (pa.types.is_large_string, "text"),
                 (pa.types.is_int32, "integer"), (pa.types.is_int64, "bigint"),
                 (pa.types.is_int16, "smallint"), (pa.types.is_float32, "real"),
                 (pa.types.is_float64, "double precision"), (pa.types.is_boolean, "boolean"))
_NOT_NULL = ("id", "embedding")


def _pg_type(arrow_type: pa.DataType) -> str:
    if pa.types.is_fixed_size_list(arrow_type):
        kind = "halfvec" if arrow_type.value_type == pa.float16() else "vector"
        return f"{kind}({int(arrow_type.list_size)})"
    for test, sql_type in _SCALAR_TYPES:
        if test(arrow_type):
            return sql_type
    raise ConfigError(f"no PostgreSQL column type for Arrow type {arrow_type}")


def pg_columns(schema: pa.Schema) -> list[tuple[str, str]]:
    """``(name, SQL type)`` of every column of a vectors schema, in order.

    The table carries whatever the vectors schema has (``id``, ``embedding``, ``text_sha256``,
    ``tokens``, kept fields, the text with ``--store-text``, chunk columns, ...). The types
    come from :func:`_pg_type`'s fixed list, never from input, so they enter SQL as written.
    """
    return [(f.name, _pg_type(f.type)) for f in schema]


def _copy_type(sql_type: str) -> str:
    return sql_type.split("(")[0]  # COPY's set_types wants 'vector', not 'vector(384)'


def column_list(names: Iterable[str]) -> sql.Composed:
    """``"a", "b", ...``: column names as quoted identifiers."""
    return sql.SQL(", ").join(sql.Identifier(name) for name in names)


def create_table_sql(table: sql.Identifier, columns: Sequence[tuple[str, str]],
                     unlogged: bool) -> sql.Composed:
    """``CREATE [UNLOGGED] TABLE table (...)`` for ``columns`` (``table``: schema-qualified)."""
    cols = sql.SQL(", ").join(
        sql.SQL("{} {}{}").format(sql.Identifier(name), sql.SQL(sql_type),
                                  sql.SQL(" NOT NULL" if name in _NOT_NULL else ""))
        for name, sql_type in columns)
    return sql.SQL("CREATE {}TABLE {} ({})").format(sql.SQL("UNLOGGED " if unlogged else ""),
                                                   table, cols)


def _columns_of(table: pa.Table) -> list[list[Any]]:
    out: list[list[Any]] = []
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


def copy_table(conn: Connection[Any], table: sql.Identifier, rows: pa.Table,
               columns: Sequence[tuple[str, str]]) -> int:
    """Binary ``COPY`` of an Arrow table's rows into ``table``, in one transaction."""
    names = [name for name, _ in columns]
    values = _columns_of(rows.select(names))
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(table,
                                                                          column_list(names))
    with conn.transaction(), conn.cursor() as cur:
        with cur.copy(statement) as copy:
            copy.set_types([_copy_type(t) for _, t in columns])
            for row in zip(*values):
                copy.write_row(row)
    return rows.num_rows


class _CopyBatches(beam.DoFn):
    """Batches of embedded records -> one binary COPY each into the run's load table; the
    rows the server refuses come out as error records."""

    def __init__(self, dsn: str, tables: tuple[sql.Identifier, sql.Identifier],
                 schema: pa.Schema, without_embedding: bool) -> None:
        self._dsn = dsn
        self._table, self._refused_table = tables
        self._schema = schema
        self._without_embedding = without_embedding
        self._conn: Optional[Connection[Any]] = None
        self._rows = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "pg_rows_copied")
        self._copies = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "pg_copies")
        self._refused = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "pg_rows_refused")

    def setup(self) -> None:
        self._conn = connect(self._dsn)

    def _to_table(self, records: list[dict[str, Any]]) -> pa.Table:
        if not self._without_embedding:
            return vectors_to_table(records, self._schema)
        # rows whose vector stays in the database: every other column, built the same way
        dim = self._schema.field("embedding").type.list_size
        zero = np.zeros(dim, np.float32)
        table = vectors_to_table([dict(r, embedding=zero) for r in records], self._schema)
        return table.drop_columns(["embedding"])

    def _copy(self, conn: Connection[Any], rows: pa.Table) -> None:
        copy_table(conn, self._table, rows, pg_columns(rows.schema))

    def process(self, records: list[dict[str, Any]]) -> Iterable[dict[str, Any]]:
        table = self._to_table(records)
        if self._conn is None or self._conn.closed:
            self._conn = connect(self._dsn)
        secrets = secrets_of(self._dsn)
        with scrubbed(secrets):
            refused = copy_or_find_refused(self._copy, self._conn, table, secrets)
            if refused:
                record_refused(self._conn, self._refused_table,
                               [records[i].get("doc_id") or records[i]["id"] for i, _ in refused])
        self._rows.inc(table.num_rows - len(refused))
        self._refused.inc(len(refused))
        self._copies.inc()
        return [refused_row(records[i], reason) for i, reason in refused]

    def teardown(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class WriteToPgvector(beam.PTransform):
    """Embedded records -> the run's load table (or its carry table), by binary COPY.

    Its output: an error record per row the server refused (see
    :mod:`beam_e5.io.pg.refusals`), whose document the merge leaves out whole.
    """

    def __init__(self, dsn: str, tables: tuple[sql.Identifier, sql.Identifier],
                 schema: pa.Schema, batch_rows: int, without_embedding: bool = False) -> None:
        super().__init__()
        self._dofn_args = (dsn, tables, schema, without_embedding)
        self._batch_rows = batch_rows

    def expand(self, pcoll: beam.PCollection) -> beam.PCollection:
        return (pcoll
                | "Batch" >> beam.BatchElements(min_batch_size=self._batch_rows,
                                                max_batch_size=self._batch_rows)
                | "Copy" >> beam.ParDo(_CopyBatches(*self._dofn_args)))
