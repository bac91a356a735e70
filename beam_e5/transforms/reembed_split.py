"""Split a corpus against a previous snapshot: carry, embed (new or re-embedded), or delete.

Categories (for the manifest):

* ``carried``: vector copied from the previous snapshot (no inference);
* ``new``: id absent from the previous snapshot (neither its vectors nor its duplicates);
* ``reembedded``: any other document sent to the model: changed text, a previous duplicate
  that now needs a vector, or every document when the model signature changed;
* ``deleted``: ids of the previous snapshot that are no longer among the corpus's valid
  documents; written to ``deleted-*.jsonl``.

``carried + new + reembedded`` are the unique documents; ``new + reembedded`` is what the
model sees.
"""

from __future__ import annotations

import json
from typing import Any

import apache_beam as beam

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
        old = next((r for r in previous if r is not None), None)
        if (self._same_model and old is not None
                and old["text_sha256"] == doc["text_sha256"]):
            yield beam.pvalue.TaggedOutput(CARRIED, {
                "id": doc_id, "text_sha256": doc["text_sha256"], "source": doc["source"],
                "fields": doc.get("fields") or {}, "embedding": old["embedding"],
                "tokens": old["tokens"], "truncated": False})
            return
        category = REEMBEDDED if previous else NEW
        yield beam.pvalue.TaggedOutput(TO_EMBED, (category, doc))


def split_by_previous(unique_docs, present_ids, previous, same_model: bool):
    """Outputs ``carried`` (embedded records), ``to_embed`` ((category, doc)), ``deleted``.

    ``previous`` is ``(id, record-or-None)`` from :func:`beam_e5.io.snapshots.read_previous`;
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
