"""Document ids that are also another document's window id.

A document cut into windows gets window ids ``DOCID#N`` (:func:`chunk_id`). A real document
whose id is ``a#1`` beside a document ``a`` cut into two or more windows would share its id
with window 1 of ``a``: two rows of one id (a Parquet file that silently holds duplicate ids,
a PostgreSQL primary key that cannot be built). :class:`SeparateIdCollisions` finds these
after embedding and sends the document whose id equals the window id (``a#1``, all its rows)
to errors with a reason naming both ids; ``a`` and every other document are written. The
rule is decided on document rows only (one per document), so the check shuffles one small
claim per chunked document and per id shaped ``X#N``, not every row.

Why that document: ``a`` is embedded whole under the id the user gave it, and its window ids
follow a documented pattern; ``a#1`` is the one id that pattern cannot tell apart. The
run's other documents are not held back for it (one bad record costs one record), and the
counts still balance (it is counted ``invalid``). Renaming one of the two in the source (or
any id scheme without ``#<digits>`` endings) makes both writable.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from typing import Any, Optional

import apache_beam as beam

from beam_e5.records import ErrorRecord, is_document_row
from beam_e5.transforms.embed_texts import CHUNK_ID_SEPARATOR

__all__ = ["SeparateIdCollisions", "chunk_id_parts", "collision_claims", "colliding_documents"]

_WINDOW_ID = re.compile(rf"(.*){re.escape(CHUNK_ID_SEPARATOR)}(0|[1-9][0-9]*)", re.DOTALL)


def chunk_id_parts(doc_id: str) -> Optional[tuple[str, int]]:
    """``(DOCID, N)`` when ``doc_id`` has the shape of window N's id ``DOCID#N``."""
    match = _WINDOW_ID.fullmatch(doc_id)
    return (match.group(1), int(match.group(2))) if match else None


def _doc_id(row: dict[str, Any]) -> str:
    return row.get("doc_id") or row["id"]


def collision_claims(row: dict[str, Any]) -> list[tuple[str, tuple]]:
    """What a document row says about window ids, keyed by the document id they hang on:
    ``(DOCID, ("windows", n))`` for a document cut into n > 1 windows, ``(DOCID, ("id", N,
    id))`` for a document whose own id has the shape ``DOCID#N``."""
    if not is_document_row(row):
        return []
    doc_id, claims = _doc_id(row), []
    windows = int(row.get("chunks") or 1)
    if windows > 1:
        claims.append((doc_id, ("windows", windows)))
    parts = chunk_id_parts(doc_id)
    if parts is not None:
        claims.append((parts[0], ("id", parts[1], doc_id)))
    return claims


def colliding_documents(parent: str, claims: Iterable[tuple]) -> list[tuple[str, str]]:
    """``(id, reason)`` of each document whose id is a window id of ``parent``."""
    claims = list(claims)
    windows = max((c[1] for c in claims if c[0] == "windows"), default=0)
    return [(c[2], f"id {c[2]!r} is also the id of window {c[1]} of the document {parent!r} "
                   f"(cut into {windows} windows, ids {parent}{CHUNK_ID_SEPARATOR}0 to "
                   f"{parent}{CHUNK_ID_SEPARATOR}{windows - 1}): one id cannot name two rows. "
                   "Rename one of the two documents in the source and rerun")
            for c in claims if c[0] == "id" and c[1] < windows]


def _error(row: dict[str, Any], reason: str) -> ErrorRecord:
    doc_id = _doc_id(row)
    return {"source": row.get("source") or "", "id": doc_id, "reason": reason,
            "record": json.dumps({"id": doc_id, "text_sha256": row.get("text_sha256")})}


class _Route(beam.DoFn):
    """Rows of colliding documents out (their document row as an error), the rest on."""

    def process(self, row: dict[str, Any], colliding: dict[str, str]) -> Iterator[Any]:
        reason = colliding.get(_doc_id(row))
        if reason is None:
            yield row
        elif is_document_row(row):
            yield beam.pvalue.TaggedOutput("errors", _error(row, reason))


class SeparateIdCollisions(beam.PTransform):
    """Embedded rows (and, for a store that carries rows inside itself, the carried document
    rows) -> ``(rows, carried, errors)`` without the documents whose id is another
    document's window id; ``carried`` is None when none was given."""

    def __init__(self, carried: Optional[beam.PCollection] = None) -> None:
        super().__init__()
        self._carried = carried

    def expand(self, rows: beam.PCollection):
        sources = [rows] + ([self._carried] if self._carried is not None else [])
        claims = [s | f"Claims{i}" >> beam.FlatMap(collision_claims)
                  for i, s in enumerate(sources)]
        colliding = beam.pvalue.AsDict(
            tuple(claims) | "AllClaims" >> beam.Flatten()
            | "ByParent" >> beam.GroupByKey()
            | "Colliding" >> beam.FlatMapTuple(colliding_documents))
        routed = [s | f"Route{i}" >> beam.ParDo(_Route(), colliding).with_outputs(
            "errors", main="rows") for i, s in enumerate(sources)]
        errors = (tuple(r.errors for r in routed)
                  | "CollisionErrors" >> beam.Flatten(pipeline=rows.pipeline))
        return routed[0].rows, (routed[1].rows if len(routed) > 1 else None), errors
