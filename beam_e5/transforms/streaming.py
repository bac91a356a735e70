"""What beam-e5's transforms do in a streaming (unbounded) pipeline.

``EmbedTexts`` and ``E5TextEmbeddings`` are element-wise: they run in streaming pipelines,
keep each element's window and timestamp, and batch per window (Beam's ``BatchElements``;
``max_batch_duration_secs`` gathers batches across bundles). Exact and semantic dedupe are
batch operations (each compares a record with every other record of the corpus, and the
count balance is over the whole run), so they refuse an unbounded input before the pipeline
starts instead of silently deduplicating per window or never emitting.
"""

from __future__ import annotations

import apache_beam as beam

from beam_e5.errors import ConfigError


def require_bounded(pcoll: beam.PCollection, transform: str) -> None:
    """Raise a :class:`ConfigError` naming ``transform`` if ``pcoll`` is unbounded."""
    if not pcoll.is_bounded:
        raise ConfigError(
            f"{transform} is a batch operation: it compares each record with every other one "
            "of the corpus, which an unbounded (streaming) PCollection never completes. Embed "
            "the stream with EmbedTexts / E5TextEmbeddings, write the vectors, and dedupe what "
            "was written with `beam-e5 dedupe` (or a batch pipeline) on a schedule")
