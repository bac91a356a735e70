"""Rows PostgreSQL cannot hold: refused per document, never the whole run.

Two steps, so that one bad record costs one record:

1. :func:`pg_cannot_hold`, the pgvector output's :meth:`~beam_e5.io.targets.base.OutputRun.
   record_rule`: a NUL character (``\\u0000``) in the id, a kept field or the stored text
   (``--store-text``). PostgreSQL's ``text`` can never hold one, on any server, so such a
   document is sent to ``errors-*.jsonl`` before it is embedded.
2. :func:`copy_or_find_refused`, in the workers: when the ``COPY`` of a batch fails on a
   value (SQLSTATE class 22, data exception: a character the server's encoding lacks, a NaN
   in a vector; class 54, a value over a limit), the batch is split in halves and each half
   loaded again, down to the rows that fail alone: those come back with the server's reason
   and their document's key goes into the run's refused table, so that the merge leaves out
   EVERY row of that document (a document is published whole or not at all). Any other
   error (connection lost, ...) fails the bundle as before, and Beam retries it.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any, Optional, Sequence

import pyarrow as pa

from beam_e5.io.pg.connection import psycopg, sql
from beam_e5.io.pg.uri import scrub
from beam_e5.records import MAX_RAW_RECORD_CHARS

if TYPE_CHECKING:
    from psycopg import Connection

__all__ = ["REFUSED_KEY", "copy_or_find_refused", "doc_key", "pg_cannot_hold", "refused_row"]

# SQLSTATE classes of errors caused by a value in the batch (not by the connection)
_VALUE_ERROR_CLASSES = ("22", "54")
#: the refused table's column and how a row's document maps to it (SQL of ours)
REFUSED_KEY = "sha256(convert_to({}, 'UTF8'))"
_MAX_REASON = 500


def pg_cannot_hold(doc: dict) -> Optional[str]:
    """Why PostgreSQL can never store this document's values (None: it can)."""
    if "\x00" in str(doc.get("id", "")):
        return _nul_reason("the id")
    for name, value in (doc.get("fields") or {}).items():
        # other kept values are written as JSON, which escapes a NUL as \u0000
        if isinstance(value, str) and "\x00" in value:
            return _nul_reason("the text (--store-text)" if name == "text"
                               else f"the kept field {name!r}")
    return None


def _nul_reason(where: str) -> str:
    return (f"{where} holds a NUL character (\\u0000), which a PostgreSQL text column cannot "
            "store; remove it from the input (the Parquet output keeps it)")


def doc_key(doc_id: str) -> bytes:
    """The refused table's key of a document: SHA-256 of its id in UTF-8 (an id the server
    cannot store as text still has one)."""
    return hashlib.sha256(doc_id.encode("utf-8", "surrogatepass")).digest()


def refused_row(record: dict, reason: str) -> dict[str, Any]:
    """The error record of a row the server refused, with its document's id and windows."""
    raw = json.dumps({"id": record.get("id"), "fields": record.get("fields") or {}},
                     ensure_ascii=False, sort_keys=True, default=str)
    return {"source": record.get("source", ""), "id": record.get("id"),
            "doc_id": record.get("doc_id") or record.get("id"),
            "chunks": int(record.get("chunks") or 1),
            "reason": f"PostgreSQL refused this row at COPY: {reason}",
            "record": raw[:MAX_RAW_RECORD_CHARS]}


def _is_value_error(error: Exception) -> bool:
    if isinstance(error, UnicodeEncodeError):  # a client_encoding set in the URI lacks it
        return True
    state = getattr(error, "sqlstate", None) or ""
    return psycopg is not None and isinstance(error, psycopg.Error) and \
        state[:2] in _VALUE_ERROR_CLASSES


def copy_or_find_refused(copy: Any, conn: Connection[Any], rows: pa.Table,
                         secrets: tuple[str, ...] = ()) -> list[tuple[int, str]]:
    """``copy(conn, rows)`` (one COPY, one transaction); on a value error, halves until the
    rows that fail alone are found. Returns ``(row index, reason)`` of those; the others
    are loaded."""
    try:
        copy(conn, rows)
        return []
    except Exception as e:  # psycopg's errors (an optional import): re-raised unless a value's
        if not _is_value_error(e):
            raise
        if rows.num_rows == 1:
            first = scrub(str(e).strip().splitlines()[0], secrets)
            state = getattr(e, "sqlstate", None) or "client encoding"
            return [(0, f"{first[:_MAX_REASON]} (SQLSTATE {state})")]
    half = rows.num_rows // 2
    found = copy_or_find_refused(copy, conn, rows.slice(0, half), secrets)
    rest = copy_or_find_refused(copy, conn, rows.slice(half), secrets)
    return found + [(half + i, reason) for i, reason in rest]


def record_refused(conn: Connection[Any], table: sql.Identifier,
                   doc_ids: Sequence[str]) -> None:
    """Put the keys of the refused rows' documents into the run's refused table."""
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(sql.SQL("INSERT INTO {} (doc_key) VALUES (%s)").format(table),
                        [(doc_key(d),) for d in sorted(set(doc_ids))])
