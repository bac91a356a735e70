"""Exact dedupe of Documents: by id first, then by normalised-text key.

``ExactDedupe()`` takes a PCollection of ``Document`` and returns outputs ``unique``
(main), ``duplicates`` (``DuplicateRecord``) and ``errors`` (``ErrorRecord``):

1. **By id.** Records sharing an id are compared on their text. When all of them have
   the same text (same ``text_sha256`` and the very same ``text``), one is kept and
   the others become duplicates of it: their ``DuplicateRecord`` has
   ``id == duplicate_of`` (the repeated id). When the texts differ, the id is ambiguous
   and *every* record with that id goes to ``errors`` ("id X appears N times with
   different text"); none of them is kept.
2. **By text key.** Among the survivors, documents with the same ``text_sha256``
   (see :mod:`beam_e5.text_key`: NFKC, casefold, whitespace collapsed) are duplicates;
   the one with the smallest id (Python string order) is kept and the others become
   ``{"id": other, "duplicate_of": smallest, "similarity": 1.0, "kind": "exact"}``.

The kept record of a same-id group is the one with the smallest ``source``, so the
output does not depend on the runner or on element order. Counters (namespace
``beam_e5``): ``exact_duplicates`` (duplicate records, both steps) and ``id_conflicts``
(records rejected for an id conflict). Every input record ends up exactly once in one
of the three outputs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator

import apache_beam as beam
from apache_beam.metrics import Metrics

from beam_e5.records import MAX_RAW_RECORD_CHARS, Document, DuplicateRecord, ErrorRecord
from beam_e5.text_key import text_key  # re-exported: records.py refers to it here

__all__ = ["DUPLICATES", "ERRORS", "UNIQUE", "ExactDedupe", "resolve_id_group", "resolve_text_group", "text_key"]

UNIQUE = "unique"
DUPLICATES = "duplicates"
ERRORS = "errors"
METRICS_NAMESPACE = "beam_e5"


def _duplicate(doc_id: str, duplicate_of: str) -> DuplicateRecord:
    return {"id": doc_id, "duplicate_of": duplicate_of, "similarity": 1.0, "kind": "exact"}


def _conflict(doc: Document, count: int) -> ErrorRecord:
    raw = json.dumps(doc, ensure_ascii=False, sort_keys=True)[:MAX_RAW_RECORD_CHARS]
    reason = f"id {doc['id']!r} appears {count} times with different text"
    return {"source": doc["source"], "id": doc["id"], "reason": reason, "record": raw}


def resolve_id_group(docs: Iterable[Document]) -> Iterator[tuple[str, object]]:
    """Resolve the records sharing one id; yields ``(output_tag, record)`` pairs."""
    group = sorted(docs, key=lambda d: d["source"])
    first = group[0]
    if all(d["text_sha256"] == first["text_sha256"] and d["text"] == first["text"] for d in group):
        yield UNIQUE, first
        for d in group[1:]:
            yield DUPLICATES, _duplicate(d["id"], first["id"])
        return
    for d in group:
        yield ERRORS, _conflict(d, len(group))


def resolve_text_group(docs: Iterable[Document]) -> Iterator[tuple[str, object]]:
    """Keep the smallest id of documents sharing a text key; the rest are duplicates."""
    best: Document | None = None
    other_ids: list[str] = []
    for d in docs:
        if best is None or d["id"] < best["id"]:
            if best is not None:
                other_ids.append(best["id"])
            best = d
        else:
            other_ids.append(d["id"])
    if best is None:
        return
    yield UNIQUE, best
    for doc_id in sorted(other_ids):
        yield DUPLICATES, _duplicate(doc_id, best["id"])


class _RouteFn(beam.DoFn):
    """Turns ``(tag, record)`` pairs into tagged outputs and counts them."""

    def __init__(self) -> None:
        self._dups = Metrics.counter(METRICS_NAMESPACE, "exact_duplicates")
        self._conflicts = Metrics.counter(METRICS_NAMESPACE, "id_conflicts")

    def process(self, item: tuple[str, object]) -> Iterator[object]:
        tag, record = item
        if tag == UNIQUE:
            yield record
            return
        if tag == DUPLICATES:
            self._dups.inc()
        else:
            self._conflicts.inc()
        yield beam.pvalue.TaggedOutput(tag, record)


class ExactDedupe(beam.PTransform):
    """Documents -> outputs ``unique`` (main), ``duplicates``, ``errors``."""

    def expand(self, docs: beam.PCollection) -> beam.pvalue.DoOutputsTuple:
        by_id = (
            docs
            | "KeyById" >> beam.Map(lambda d: (d["id"], d))
            | "GroupById" >> beam.GroupByKey()
            | "ResolveIds" >> beam.FlatMap(lambda kv: resolve_id_group(kv[1]))
        )
        survivors = by_id | "IdSurvivors" >> beam.Filter(lambda item: item[0] == UNIQUE)
        rejected = by_id | "IdRejected" >> beam.Filter(lambda item: item[0] != UNIQUE)
        by_text = (
            survivors
            | "KeyByText" >> beam.Map(lambda item: (item[1]["text_sha256"], item[1]))
            | "GroupByText" >> beam.GroupByKey()
            | "ResolveTexts" >> beam.FlatMap(lambda kv: resolve_text_group(kv[1]))
        )
        return (
            (rejected, by_text)
            | "Merge" >> beam.Flatten()
            | "Route" >> beam.ParDo(_RouteFn()).with_outputs(DUPLICATES, ERRORS, main=UNIQUE)
        )
