"""The exact-dedupe rule, as pure functions over groups of Documents (no Beam).

* Records sharing an **id**: identical text (same ``text_sha256`` and the very same
  ``text``) keeps the one with the smallest ``source`` and makes the others duplicates of
  it; differing text makes *every* record of the id an error (the id is ambiguous).
* Documents sharing a **text key** (:mod:`beam_e5.dedupe.text_key`): the smallest id
  (Python string order) is kept, the others are ``kind="exact"`` duplicates of it.

:class:`beam_e5.transforms.exact_dedupe.ExactDedupe` applies these per group in a pipeline.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator

from beam_e5.records import MAX_RAW_RECORD_CHARS, Document, DuplicateRecord, ErrorRecord

__all__ = ["DUPLICATES", "ERRORS", "UNIQUE", "resolve_id_group", "resolve_text_group"]

UNIQUE = "unique"
DUPLICATES = "duplicates"
ERRORS = "errors"


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
