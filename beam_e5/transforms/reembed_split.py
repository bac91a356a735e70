"""Split a corpus against a previous snapshot: carry, embed (new or re-embedded), or delete.

Categories (for the manifest):

* ``carried``: vectors copied from the previous snapshot (no inference): every row of the
  document, its chunk rows and document row when it was cut into windows;
* ``new``: id absent from the previous snapshot (neither its vectors nor its duplicates);
* ``reembedded``: any other document sent to the model: changed text, a previous duplicate
  that now needs a vector, or every document when the model signature changed;
* ``deleted``: ids of the previous snapshot that are no longer among the corpus's valid
  documents; written to ``deleted-*.jsonl``.

``carried + new + reembedded`` are the unique documents; ``new + reembedded`` is what the
model sees. The previous snapshot's rows are grouped by ``doc_id``; the chunking settings
are part of the model signature, so carried chunks were cut the way this run would cut them.
"""

from __future__ import annotations

import json
from typing import Any

import apache_beam as beam

from beam_e5.records import is_document_row

__all__ = ["CARRIED", "DELETED", "NEW", "REEMBEDDED", "TO_EMBED", "deleted_to_json",
           "split_by_previous"]

CARRIED, TO_EMBED, DELETED = "carried", "to_embed", "deleted"
NEW, REEMBEDDED = "new", "reembedded"


class _SplitByPrevious(beam.DoFn):
    """Per id: carry the old vector, embed (new or re-embedded), or list as deleted."""

    def __init__(self, same_model: bool) -> None:
        self._same_model = same_model

    def process(self, element: tuple[str, dict[str, list]]):
        doc_id, groups = element
        docs, previous, present = groups["doc"], groups["previous"], groups["present"]
        if not docs:
            if previous and not present:
                yield beam.pvalue.TaggedOutput(DELETED, {"id": doc_id})
            return
        doc = docs[0]
        old = [r for r in previous if r is not None]
        head = next((r for r in old if is_document_row(r)), None)
        if (self._same_model and head is not None
                and head["text_sha256"] == doc["text_sha256"]):
            for r in old:
                yield beam.pvalue.TaggedOutput(CARRIED, {
                    **r, "text_sha256": doc["text_sha256"], "source": doc["source"],
                    "fields": doc.get("fields") or {}, "doc_id": doc_id,
                    "truncated": bool(r.get("tokens_cut"))})
            return
        category = REEMBEDDED if previous else NEW
        yield beam.pvalue.TaggedOutput(TO_EMBED, (category, doc))


def split_by_previous(unique_docs, present_ids, previous, same_model: bool):
    """Outputs ``carried`` (embedded records), ``to_embed`` ((category, doc)), ``deleted``.

    ``previous`` is ``(doc_id, record-or-None)`` from :func:`beam_e5.io.snapshots.read_previous`;
    ``present_ids`` are the ids of all valid documents read (duplicates included), so an id
    that became an exact duplicate is not 'deleted'.
    """
    keyed = unique_docs | "KeyDocs" >> beam.Map(lambda d: (d["id"], d))
    present = present_ids | "KeyPresent" >> beam.Map(lambda i: (i, True))
    return ({"doc": keyed, "previous": previous, "present": present}
            | "JoinPrevious" >> beam.CoGroupByKey()
            | "SplitByPrevious" >> beam.ParDo(_SplitByPrevious(same_model)).with_outputs(
                CARRIED, TO_EMBED, DELETED))


def deleted_to_json(record: dict[str, Any]) -> str:
    return json.dumps(record, sort_keys=True)
