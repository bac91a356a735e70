"""Records the output store cannot hold: to errors, per document, never the whole run.

* :class:`RefuseUnstorable` applies an output's record rule
  (:meth:`~beam_e5.io.targets.base.OutputRun.record_rule`) to documents before they are
  embedded: ``(kept documents, error records)``.
* :class:`RefusedDocuments` turns the rows a store refused while loading (one error record
  per row, with ``doc_id`` and ``chunks``) into one error record per document, and the
  numbers the counts need: refused documents and their window rows.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Iterator, NamedTuple, Optional

import apache_beam as beam

from beam_e5.records import MAX_RAW_RECORD_CHARS, ErrorRecord

__all__ = ["RefuseUnstorable", "RefusedDocuments", "RefusedStreams", "unstorable_error"]

_REFUSED = "refused"


def unstorable_error(doc: dict, reason: str) -> ErrorRecord:
    """The error record of a document whose values the output cannot store."""
    raw = json.dumps({"id": doc.get("id"), "fields": doc.get("fields") or {}},
                     ensure_ascii=False, sort_keys=True, default=str)
    return {"source": doc.get("source", ""), "id": doc.get("id"),
            "reason": f"the output cannot store this record: {reason}",
            "record": raw[:MAX_RAW_RECORD_CHARS]}


class _SplitByRule(beam.DoFn):
    def __init__(self, rule: Callable[[dict], Optional[str]]) -> None:
        self._rule = rule

    def process(self, doc: dict) -> Iterator[Any]:
        reason = self._rule(doc)
        if reason is None:
            yield doc
        else:
            yield beam.pvalue.TaggedOutput(_REFUSED, unstorable_error(doc, reason))


class RefuseUnstorable(beam.PTransform):
    """Documents -> ``(kept, errors)`` by an output's record rule."""

    def __init__(self, rule: Callable[[dict], Optional[str]]) -> None:
        super().__init__()
        self._rule = rule

    def expand(self, docs: beam.PCollection) -> tuple[beam.PCollection, beam.PCollection]:
        split = docs | "ApplyRule" >> beam.ParDo(_SplitByRule(self._rule)).with_outputs(
            _REFUSED, main="kept")
        return split.kept, split[_REFUSED]


class RefusedStreams(NamedTuple):
    errors: beam.PCollection  # one error record per refused document
    window_rows: beam.PCollection  # per refused document: its window rows (0 if one window)


def _first(rows: list[dict]) -> dict:
    return min(rows, key=lambda r: str(r.get("id")))


def _document_error(doc_id: str, row: dict) -> ErrorRecord:
    return {"source": row.get("source", ""), "id": doc_id,
            "reason": (row["reason"] + (f" (row {row['id']}; every row of the document is "
                                        "left out)" if row.get("id") != doc_id else "")),
            "record": row.get("record", "")}


class RefusedDocuments(beam.PTransform):
    """Rows a store refused -> one error per document, and the window rows it had."""

    def expand(self, rows: beam.PCollection) -> RefusedStreams:
        per_doc = (rows
                   | "ByDocument" >> beam.Map(lambda r: (r["doc_id"], r))
                   | "OnePerDocument" >> beam.CombinePerKey(_first))
        errors = per_doc | "DocumentError" >> beam.MapTuple(_document_error)
        windows = per_doc | "WindowRows" >> beam.MapTuple(
            lambda _, r: r["chunks"] if r["chunks"] > 1 else 0)
        return RefusedStreams(errors, windows)
