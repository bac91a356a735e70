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
   (see :mod:`beam_e5.dedupe.text_key`: NFKC, casefold, whitespace collapsed) are duplicates;
   the one with the smallest id (Python string order) is kept and the others become
   ``{"id": other, "duplicate_of": smallest, "similarity": 1.0, "kind": "exact"}``.

The rule itself (pure functions) is in :mod:`beam_e5.dedupe.exact`. The kept record of a
same-id group is the one with the smallest ``source``, so the output does not depend on the
runner or on element order. Counters (in ``METRICS_NAMESPACE``): ``exact_duplicates``
(duplicate records, both steps) and ``id_conflicts`` (records rejected for an id conflict).
Every input record ends up exactly once in one of the three outputs.
"""

from __future__ import annotations

from collections.abc import Iterator

import apache_beam as beam
from apache_beam.metrics import Metrics

from beam_e5.dedupe.exact import (
    DUPLICATES,
    ERRORS,
    UNIQUE,
    resolve_id_group,
    resolve_text_group,
)
from beam_e5.records import METRICS_NAMESPACE
from beam_e5.transforms.streaming import require_bounded

__all__ = ["DUPLICATES", "ERRORS", "UNIQUE", "ExactDedupe"]


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
    """Documents -> outputs ``unique`` (main), ``duplicates``, ``errors``.

    ``by_text=False`` runs step 1 only (``--no-exact-dedupe``): ids stay unique (an id used
    for two texts is still an error), but different ids with the same text are all kept.
    """

    def __init__(self, by_text: bool = True) -> None:
        super().__init__()
        self._by_text = by_text

    def expand(self, docs: beam.PCollection) -> beam.pvalue.DoOutputsTuple:
        require_bounded(docs, "ExactDedupe")
        by_id = (
            docs
            | "KeyById" >> beam.Map(lambda d: (d["id"], d))
            | "GroupById" >> beam.GroupByKey()
            | "ResolveIds" >> beam.FlatMap(lambda kv: resolve_id_group(kv[1]))
        )
        survivors = by_id | "IdSurvivors" >> beam.Filter(lambda item: item[0] == UNIQUE)
        rejected = by_id | "IdRejected" >> beam.Filter(lambda item: item[0] != UNIQUE)
        if not self._by_text:
            return by_id | "Route" >> beam.ParDo(_RouteFn()).with_outputs(
                DUPLICATES, ERRORS, main=UNIQUE)
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
