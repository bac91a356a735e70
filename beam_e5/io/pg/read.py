"""What is published under a name, and the Beam read of it (for ``reembed``).

``beam_e5_published`` records, per name, the physical table the view serves, the run that
wrote it, its model signature and the table it replaced. :class:`ReadPublished` reads one
entry per DOCUMENT of the served table, in parallel shards; the vectors stay in the database.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Optional

import apache_beam as beam

from beam_e5.io.pg.connection import connect, sql
from beam_e5.io.pg.uri import META_TABLE

if TYPE_CHECKING:
    from psycopg import Connection

__all__ = ["CHUNKED_COLUMNS", "DOCUMENT_ROWS", "PublishedTable", "ReadPublished",
           "count_rows", "read_publication", "table_columns"]

# the chunk columns a table of long-document runs has (rows of a document share doc_id)
CHUNKED_COLUMNS = frozenset({"doc_id", "chunk", "chunks"})
# a document's one row, or its document row (SQL of ours, wrapped in sql.SQL where used)
DOCUMENT_ROWS = "(chunk IS NULL OR chunks = 1)"
_SHARD = "(hashtext({}) & 2147483647) %% %s = %s"  # %% and the %s: psycopg parameters


@dataclass(frozen=True)
class PublishedTable:
    """What ``beam_e5_published`` says is behind a name."""

    table: str  # the physical table, unqualified
    run_id: str
    signature: dict[str, Any]
    previous_table: Optional[str]


def read_publication(conn: Connection[Any], schema: str, name: str) -> Optional[PublishedTable]:
    """The row of ``beam_e5_published`` for ``name`` (None: never published)."""
    row = conn.execute(
        sql.SQL("SELECT table_name, run_id, signature, previous_table FROM {} "
                "WHERE name = %s").format(sql.Identifier(schema, META_TABLE)),
        (name,)).fetchone()
    if row is None:
        return None
    signature = row[2] if isinstance(row[2], dict) else json.loads(row[2])
    return PublishedTable(row[0], row[1], signature, row[3])


def table_columns(conn: Connection[Any], schema: str, table: str) -> set[str]:
    """The column names of ``schema.table`` (empty: no such table)."""
    rows = conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = %s "
        "AND table_name = %s", (schema, table)).fetchall()
    return {r[0] for r in rows}


def count_rows(conn: Connection[Any], table: sql.Identifier, documents_only: bool = False) -> int:
    """Rows of ``table``; ``documents_only``: one per document of a chunked table."""
    query = sql.SQL("SELECT count(*) FROM {}").format(table)
    if documents_only:
        query = sql.SQL("{} WHERE {}").format(query, sql.SQL(DOCUMENT_ROWS))
    return conn.execute(query).fetchone()[0]


def _shard_query(table: sql.Identifier, chunked: bool) -> sql.Composed:
    if chunked:
        return sql.SQL("SELECT doc_id, text_sha256, tokens, chunks, tokens_cut FROM {} "
                       "WHERE {} AND {}").format(
                           table, sql.SQL(DOCUMENT_ROWS),
                           sql.SQL(_SHARD).format(sql.Identifier("doc_id")))
    # a table from before long-document chunking: one row per document
    return sql.SQL("SELECT id, text_sha256, tokens, 1, 0 FROM {} WHERE {}").format(
        table, sql.SQL(_SHARD).format(sql.Identifier("id")))


def _read_shard(shard: int, dsn: str, table: sql.Identifier, shards: int,
                chunked: bool = False) -> Iterator[tuple[str, dict[str, Any]]]:
    conn = connect(dsn, autocommit=False, register=False)
    try:
        with conn.cursor(name="beam_e5_previous") as cur:
            cur.itersize = 10_000
            cur.execute(_shard_query(table, chunked), (shards, shard))
            for doc_id, sha, tokens, chunks, cut in cur:
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
    its document row) is copied there by :meth:`~beam_e5.io.pg.run.PgRun.publish`.
    """

    def __init__(self, dsn: str, table: sql.Identifier, shards: int,
                 chunked: bool = False) -> None:
        super().__init__()
        self._dsn, self._table, self._shards = dsn, table, shards
        self._chunked = chunked

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        return (pbegin
                | "Shards" >> beam.Create(list(range(self._shards)))
                | "ReadShard" >> beam.FlatMap(_read_shard, self._dsn, self._table,
                                              self._shards, self._chunked)
                | "Reshuffle" >> beam.Reshuffle())
