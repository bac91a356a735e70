"""Beam's own embedding tests, with the class swapped: ``E5TextEmbeddings`` where Beam's
``SentenceTransformerEmbeddings`` / ``HuggingfaceTextEmbeddings`` were.

Written in the spirit of Beam 2.77's ``apache_beam/ml/transforms/embeddings/huggingface_test.py``
(class ``SentenceTransformerEmbeddingsTest``) and ``apache_beam/ml/rag/embeddings/
huggingface_test.py`` (class ``HuggingfaceTextEmbeddingsTest``), one test here per test there
that can run offline, each run with Beam's class and with beam-e5's, the same assertions.
Where Beam names another model (all-mpnet-base-v2, gte-base, e5-base-v2) the model is the
packaged all-MiniLM-L6-v2 and the expected values come from ``SentenceTransformer`` itself on
that model, not from a table. Not here: the image-model tests (beam-e5 embeds text), the
``ScaleTo01`` test (needs tensorflow-transform, not installed), the Inference API tests
(network); the GCS artifact test runs against the GCS emulator.
"""

import numpy as np
import pytest

try:
    import apache_beam as beam
    import torch
    from apache_beam.ml.inference.base import RunInference
    from apache_beam.ml.rag.embeddings.huggingface import HuggingfaceTextEmbeddings
    from apache_beam.ml.rag.types import Chunk, Content, Embedding
    from apache_beam.ml.transforms import base
    from apache_beam.ml.transforms.base import MLTransform
    from apache_beam.ml.transforms.embeddings.huggingface import SentenceTransformerEmbeddings
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to
    from sentence_transformers import SentenceTransformer
except ImportError as e:  # pragma: no cover - the rag extra is installed for the tests
    pytest.skip(f"needs sentence-transformers and Beam's ML extras ({e})", allow_module_level=True)

from beam_e5.errors import ConfigError
from beam_e5.transforms.rag import E5TextEmbeddings

TEST_QUERY = "This is a test"
COLUMN = "feature_1"
# Beam's _parameterized_inputs (texts), the model of each replaced by MiniLM
INPUTS = {
    "gte-base": [{COLUMN: "That is a happy person"}, {COLUMN: "That is a very happy person"}],
    "all-mpnet-base-v2": [{COLUMN: TEST_QUERY}],
    "e5-base-v2": [
        {COLUMN: "query: how much protein should a female eat"},
        {COLUMN: "passage: As a general guideline, the CDC's average requirement of protein for "
                 "women ages 19 to 70 is 46 grams per day. But, as you can see from this chart, "
                 "you'll need to increase that if you're expecting or training for a marathon. "
                 "Check out the chart below to see how much protein you should be eating each "
                 "day."}],
}
MANAGERS = pytest.mark.parametrize("manager", [SentenceTransformerEmbeddings, E5TextEmbeddings],
                                   ids=["beam", "beam-e5"])

# whole Beam pipelines, about 1 s to 6 s each: `make test` (and CI) runs them, `make test-fast`
# keeps its 3-minute budget
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def reference(minilm_dir):
    """sentence-transformers itself on MiniLM: where the expected values come from."""
    return SentenceTransformer(minilm_dir, device="cpu")


def _max_rounded(vectors) -> list:
    return [round(float(np.max(v)), 2) for v in vectors]


# -- SentenceTransformerEmbeddingsTest -------------------------------------------------------


@MANAGERS
def test_sentence_transformer_embeddings(manager, minilm_dir, reference, tmp_path):
    dim = len(reference.encode([TEST_QUERY])[0])  # Beam: 768 (mpnet); MiniLM: 384
    config = manager(model_name=minilm_dir, columns=[COLUMN])
    with beam.Pipeline() as p:
        result = (p | "CreateData" >> beam.Create([{COLUMN: TEST_QUERY}])
                  | "MLTransform" >> MLTransform(write_artifact_location=str(tmp_path))
                  .with_transform(config))
        assert_that(result | beam.Map(lambda e: len(e[COLUMN])), equal_to([dim]))


@MANAGERS
@pytest.mark.parametrize("beam_model", sorted(INPUTS))
def test_embeddings_with_read_artifact_location(manager, beam_model, minilm_dir, reference,
                                                tmp_path):
    inputs = INPUTS[beam_model]
    output = _max_rounded(reference.encode([r[COLUMN] for r in inputs]))
    config = manager(model_name=minilm_dir, columns=[COLUMN])
    with beam.Pipeline() as p:
        result = (p | "CreateData" >> beam.Create(inputs)
                  | "MLTransform" >> MLTransform(write_artifact_location=str(tmp_path))
                  .with_transform(config))
        assert_that(result | beam.Map(lambda x: round(max(x[COLUMN]), 2)), equal_to(output))
    with beam.Pipeline() as p:
        result = (p | "CreateData" >> beam.Create(inputs)
                  | "MLTransform" >> MLTransform(read_artifact_location=str(tmp_path)))
        assert_that(result | beam.Map(lambda x: round(max(x[COLUMN]), 2)), equal_to(output))


@MANAGERS
def test_sentence_transformer_with_int_data_types(manager, minilm_dir, tmp_path):
    config = manager(model_name=minilm_dir, columns=[COLUMN])
    with pytest.raises(Exception, match="Embeddings can only be generated"):
        with beam.Pipeline() as p:
            _ = (p | "CreateData" >> beam.Create([{COLUMN: 1}])
                 | "MLTransform" >> MLTransform(write_artifact_location=str(tmp_path))
                 .with_transform(config))


@MANAGERS
def test_with_gcs_artifact_location(manager, minilm_dir, reference, gcs_emulator):
    inputs = INPUTS["all-mpnet-base-v2"]
    output = _max_rounded(reference.encode([r[COLUMN] for r in inputs]))
    location = gcs_emulator.url(f"sentence_transformers/{manager.__name__}")
    config = manager(model_name=minilm_dir, columns=[COLUMN])
    with beam.Pipeline() as p:
        result = (p | "CreateData" >> beam.Create(inputs)
                  | "MLTransform" >> MLTransform(write_artifact_location=location)
                  .with_transform(config))
        assert_that(result | beam.Map(lambda x: round(np.max(x[COLUMN]), 2)), equal_to(output))
    assert gcs_emulator.list_names("sentence_transformers/")  # the artifacts went to gs://
    with beam.Pipeline() as p:
        result = (p | "CreateData" >> beam.Create(inputs)
                  | "MLTransform" >> MLTransform(read_artifact_location=location))
        assert_that(result | beam.Map(lambda x: round(np.max(x[COLUMN]), 2)), equal_to(output))


def _is_tensor_of(expected):
    def check(element):
        assert type(element) is torch.Tensor, type(element)
        got = element.numpy()
        assert float(got @ expected / np.linalg.norm(got)) > 0.99999
        return True
    return check


@MANAGERS
@pytest.mark.parametrize("inference_args", [{"convert_to_numpy": False},
                                            {"convert_to_tensor": True}])
def test_embeddings_with_inference_args(manager, inference_args, minilm_dir, reference,
                                        tmp_path):
    expected = reference.encode([TEST_QUERY], normalize_embeddings=True)[0]
    config = manager(model_name=minilm_dir, columns=[COLUMN], inference_args=inference_args)
    with beam.Pipeline() as p:
        result = (p | "CreateData" >> beam.Create([{COLUMN: TEST_QUERY}])
                  | "MLTransform" >> MLTransform(write_artifact_location=str(tmp_path))
                  .with_transform(config))
        checked = result | beam.Map(lambda x: x[COLUMN]) | beam.Map(_is_tensor_of(expected))
        assert_that(checked, equal_to([True]))


@MANAGERS
def test_mltransform_to_ptransform_with_sentence_transformer(manager, minilm_dir, tmp_path):
    # Beam's test uses model_name='' (never loaded); beam-e5 refuses an empty name before
    # the pipeline (test_empty_model_name_is_refused_early), so a real model path here
    transforms = [manager(columns=["x"], model_name=minilm_dir),
                  manager(columns=["y", "z"], model_name=minilm_dir)]
    mapper = base._MLTransformToPTransformMapper(transforms=transforms,
                                                 artifact_location=str(tmp_path),
                                                 artifact_mode=None)
    ptransform_list = mapper.create_and_save_ptransform_list()
    assert len(ptransform_list) == 2
    expected_columns = [["x"], ["y", "z"]]
    loaded = base._MLTransformToPTransformMapper.load_transforms_from_artifact_location(
        str(tmp_path))
    for ptransforms in (ptransform_list, loaded):
        for i, ptransform in enumerate(ptransforms):
            assert type(ptransform) is RunInference
            assert type(ptransform._model_handler) is base._TextEmbeddingHandler
            assert ptransform._model_handler.columns == expected_columns[i]
            assert ptransform._model_handler._underlying.model_name == minilm_dir


def test_empty_model_name_is_refused_early():
    with pytest.raises(ConfigError, match="--model is empty"):
        E5TextEmbeddings(columns=["x"], model_name="")


# -- HuggingfaceTextEmbeddingsTest (RAG) -----------------------------------------------------


def _chunk_approximately_equals(expected, actual):
    """Beam's chunk_approximately_equals."""
    if not isinstance(expected, Chunk) or not isinstance(actual, Chunk):
        return False
    return (expected.id == actual.id and expected.metadata == actual.metadata
            and expected.content == actual.content
            and len(expected.embedding.dense_embedding) == len(actual.embedding.dense_embedding)
            and all(isinstance(x, float) for x in actual.embedding.dense_embedding))


@pytest.mark.parametrize("manager", [HuggingfaceTextEmbeddings, E5TextEmbeddings],
                         ids=["beam", "beam-e5"])
def test_embedding_pipeline(manager, minilm_dir, reference, tmp_path):
    dim = len(reference.encode(["x"])[0])
    meta = {"source": "test.txt", "language": "en"}
    texts = {"1": "This is a test sentence.", "2": "Another example."}
    chunks = [Chunk(content=Content(text=t), id=i, metadata=dict(meta)) for i, t in texts.items()]
    expected = [Chunk(id=i, embedding=Embedding(dense_embedding=[0.0] * dim),
                      metadata=dict(meta), content=Content(text=t)) for i, t in texts.items()]
    embedder = manager(model_name=minilm_dir)
    with TestPipeline() as p:
        embeddings = (p | beam.Create(chunks)
                      | MLTransform(write_artifact_location=str(tmp_path))
                      .with_transform(embedder))
        assert_that(embeddings, equal_to(expected, equals_fn=_chunk_approximately_equals))
