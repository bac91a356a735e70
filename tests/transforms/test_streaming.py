"""EmbedTexts and E5TextEmbeddings in an unbounded pipeline: Beam's TestStream on the
DirectRunner in streaming mode, fixed windows, a late element within the allowed lateness.

Every element of every window (the late pane included) must come out once, in its window,
with the vector ``beam-e5 embed`` gives the same text. Dedupe refuses an unbounded input.
"""

import json

import apache_beam as beam
import numpy as np
import pyarrow.parquet as pq
import pytest
from apache_beam.ml.rag.types import EmbeddableItem
from apache_beam.ml.transforms.base import MLTransform
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to_per_window
from apache_beam.transforms import trigger, window
from apache_beam.transforms.window import TimestampedValue
from realtext import licence_paragraphs

from beam_e5 import SemanticDedupeConfig
from beam_e5.cli import main
from beam_e5.errors import ConfigError
from beam_e5.model.config import EncoderConfig
from beam_e5.transforms.embed_texts import EmbedTexts
from beam_e5.transforms.exact_dedupe import ExactDedupe
from beam_e5.transforms.rag import E5TextEmbeddings
from beam_e5.transforms.semantic_dedupe import SemanticDedupe

WINDOW_S = 10
# (id, event time): two windows on time, then one element late for window [0, 10)
ON_TIME = [("a", 1), ("b", 3), ("c", 8), ("d", 12), ("e", 17)]
LATE = [("late", 5)]
EXPECTED_WINDOWS = {
    window.IntervalWindow(0, 10): [["a", "b", "c"], ["late"]],  # on-time pane, late pane
    window.IntervalWindow(10, 20): [["d", "e"]],
}


@pytest.fixture(scope="module")
def texts():
    paras = licence_paragraphs(len(ON_TIME) + len(LATE))
    return {doc_id: paras[i] for i, (doc_id, _t) in enumerate(ON_TIME + LATE)}


@pytest.fixture(scope="module")
def embed_vectors(texts, minilm_dir, tmp_path_factory):
    """What `beam-e5 embed` gives these texts."""
    work = tmp_path_factory.mktemp("streaming-ref")
    corpus = work / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in texts.items()))
    assert main(["embed", "--input", str(corpus), "--output", str(work / "out"), "--model",
                 minilm_dir, "--no-exact-dedupe"]) == 0
    table = pq.read_table(sorted((work / "out").glob("vectors-*.parquet")))
    vectors = np.stack(table.column("embedding").to_numpy(zero_copy_only=False))
    return dict(zip(table.column("id").to_pylist(), vectors))


def _stream(make):
    """Elements at their event times; the watermark passes window [0, 10) before the late
    one arrives. ``make(id)`` builds the element."""
    stream = TestStream().advance_watermark_to(0)
    for doc_id, t in ON_TIME[:3]:
        stream = stream.add_elements([TimestampedValue(make(doc_id), t)])
    stream = stream.advance_processing_time(5).advance_watermark_to(WINDOW_S + 1)
    stream = stream.add_elements([TimestampedValue(make(i), t) for i, t in ON_TIME[3:]])
    stream = stream.advance_watermark_to(2 * WINDOW_S + 1)
    stream = stream.add_elements([TimestampedValue(make(i), t) for i, t in LATE])
    return stream.advance_watermark_to_infinity()


def _streaming_pipeline():
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    return TestPipeline(options=options)


def _windowed(pcoll):
    return pcoll | beam.WindowInto(
        window.FixedWindows(WINDOW_S), allowed_lateness=60,
        trigger=trigger.AfterWatermark(late=trigger.AfterCount(1)),
        accumulation_mode=trigger.AccumulationMode.DISCARDING)


def _assert_per_window(pairs, expected_vectors):
    """``pairs``: (id, vector). Each vector must be `beam-e5 embed`'s for that id; the ids are
    grouped per window and pane."""
    def check(pair):
        doc_id, vector = pair
        v = np.asarray(vector, np.float32)
        cosine = float(v @ expected_vectors[doc_id] / np.linalg.norm(v))
        assert cosine > 0.99999, (doc_id, cosine)
        return ("k", doc_id)

    panes = (pairs | "CheckVector" >> beam.Map(check) | beam.GroupByKey()
             | beam.MapTuple(lambda _k, ids: sorted(ids)))
    assert_that(panes, equal_to_per_window(EXPECTED_WINDOWS), label="PerWindow")


@pytest.mark.slow  # streaming pipelines with the model, 5-7 s each
@pytest.mark.parametrize("max_batch_duration_secs", [None, 1.0], ids=["bundle-batches",
                                                                       "stateful-batches"])
def test_embed_texts_streams_every_window_and_the_late_pane(texts, embed_vectors, minilm_dir,
                                                            max_batch_duration_secs):
    p = _streaming_pipeline()
    records = (_windowed(p | _stream(lambda i: (i, texts[i])))
               | EmbedTexts(EncoderConfig(minilm_dir),
                            max_batch_duration_secs=max_batch_duration_secs))
    _assert_per_window(records | beam.Map(lambda r: (r["id"], r["embedding"])), embed_vectors)
    p.run().wait_until_finish()


@pytest.mark.slow
def test_e5_text_embeddings_in_mltransform_streams_items(texts, embed_vectors, minilm_dir,
                                                         tmp_path):
    p = _streaming_pipeline()
    items = _windowed(p | _stream(lambda i: EmbeddableItem.from_text(texts[i], id=i)))
    embedded = items | MLTransform(write_artifact_location=str(tmp_path)).with_transform(
        E5TextEmbeddings(minilm_dir, max_batch_size=4))
    _assert_per_window(embedded | beam.Map(lambda it: (it.id, it.dense_embedding)),
                       embed_vectors)
    p.run().wait_until_finish()


@pytest.mark.parametrize("dedupe,name", [
    (lambda: ExactDedupe(), "ExactDedupe"),
    (lambda: SemanticDedupe(SemanticDedupeConfig(threshold=0.95)), "SemanticDedupe"),
])
def test_dedupe_refuses_an_unbounded_input(dedupe, name):
    p = _streaming_pipeline()
    docs = _windowed(p | _stream(lambda i: {"id": i, "text": i}))
    with pytest.raises(ConfigError, match=f"{name} is a batch operation"):
        _ = docs | dedupe()
