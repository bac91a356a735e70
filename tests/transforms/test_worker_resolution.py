"""A model the launching machine cannot reach: the pipeline builds, the workers resolve it.

Real pipelines on the DirectRunner: the model path does not exist while the pipeline is
built (as a path that only the workers have), then either never appears (the run fails with
a message naming the model) or appears before the run (it runs, with the vectors of the
model resolved up front). A hub name without network behaves the same way.
"""

import logging
import os
import re

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.ml.rag.types import EmbeddableItem
from apache_beam.ml.transforms.base import MLTransform
from apache_beam.testing.util import assert_that

from beam_e5.errors import ConfigError, ModelUnreachable
from beam_e5.model.config import EncoderConfig, EncoderSpec, hub_answered_no
from beam_e5.model.encoder import Encoder
from beam_e5.transforms.embed_texts import EmbedTexts
from beam_e5.transforms.rag import E5TextEmbeddings

# backend="torch" where a model runs: an ONNX graph would be exported for each temporary path
TEXTS = {"a": "Apache Beam runs batch and streaming pipelines.",
         "b": "The licence grants permission to copy and modify the software."}
DEFERRED = "will be resolved and checked on the workers"


@pytest.fixture(scope="module")
def expected(minilm_dir):
    spec = EncoderConfig(minilm_dir, backend="torch").resolve()
    vectors, _ = Encoder.load(spec).encode(list(TEXTS.values()))
    return dict(zip(TEXTS, vectors))


def _close_to(expected):
    def check(rows):
        got = {r_id: np.asarray(v, np.float32) for r_id, v in rows}
        assert sorted(got) == sorted(expected)
        for r_id, v in got.items():
            assert float(v @ expected[r_id]) > 0.99999, r_id
    return check


def _embed_texts_pipeline(config, check):
    p = beam.Pipeline()
    rows = (p | beam.Create(list(TEXTS.items())) | EmbedTexts(config)
            | beam.Map(lambda r: (r["id"], r["embedding"].tolist())))
    assert_that(rows, check)
    return p


def test_missing_path_builds_and_fails_on_the_worker_naming_the_model(tmp_path, caplog):
    where = str(tmp_path / "models" / "minilm")  # exists only "on the workers"
    with caplog.at_level(logging.WARNING, logger="beam_e5"):
        p = _embed_texts_pipeline(EncoderConfig(where), lambda rows: None)
    assert where in caplog.text and DEFERRED in caplog.text
    with pytest.raises(Exception, match=re.escape(f"could not resolve the model {where!r} on "
                                                  "this worker")):
        p.run().wait_until_finish()


def test_path_that_appears_before_the_run_is_resolved_on_the_worker(minilm_dir, expected,
                                                                      tmp_path):
    where = tmp_path / "models" / "minilm"
    transform = EmbedTexts(EncoderConfig(str(where), backend="torch"))
    assert transform.spec is None  # not resolved where the pipeline was built
    p = beam.Pipeline()
    rows = (p | beam.Create(list(TEXTS.items())) | transform
            | beam.Map(lambda r: (r["id"], r["embedding"].tolist())))
    assert_that(rows, _close_to(expected))
    where.parent.mkdir(parents=True)
    os.symlink(minilm_dir, where)  # the model is there when the workers start
    p.run().wait_until_finish()


def test_e5_text_embeddings_resolves_on_the_worker_too(minilm_dir, expected, tmp_path):
    where = tmp_path / "models" / "minilm"
    manager = E5TextEmbeddings(str(where), backend="torch")
    assert manager.spec is None and manager.model_name == str(where)
    items = [EmbeddableItem.from_text(t, id=i) for i, t in TEXTS.items()]
    p = beam.Pipeline()
    out = (p | beam.Create(items)
           | MLTransform(write_artifact_location=str(tmp_path / "artifacts"))
           .with_transform(manager)
           | beam.Map(lambda item: (item.id, item.dense_embedding)))
    assert_that(out, _close_to(expected))
    where.parent.mkdir(parents=True)
    os.symlink(minilm_dir, where)
    p.run().wait_until_finish()


def test_hub_name_without_network_builds_and_fails_on_the_worker(monkeypatch, caplog):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # as HF_HUB_OFFLINE=1
    name = "intfloat/e5-small-v2-not-in-any-cache"
    with caplog.at_level(logging.WARNING, logger="beam_e5"):
        p = _embed_texts_pipeline(EncoderConfig(name), lambda rows: None)
    assert name in caplog.text and DEFERRED in caplog.text
    with pytest.raises(Exception, match=re.escape(f"could not resolve the model {name!r}")):
        p.run().wait_until_finish()
    # the CLI's path (resolve) still fails before any pipeline
    with pytest.raises(ModelUnreachable, match=re.escape(name)):
        EncoderConfig(name).resolve()


def test_reachable_but_wrong_model_still_fails_before_the_pipeline(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="has no config.json"):
        EmbedTexts(EncoderConfig(str(tmp_path / "empty")))
    with pytest.raises(ConfigError, match="has no config.json"):
        E5TextEmbeddings(str(tmp_path / "empty"))


def test_resolved_spec_is_passed_through(minilm_dir):
    spec = EncoderConfig(minilm_dir).resolve()
    assert isinstance(EncoderConfig(minilm_dir).resolve_where_reachable(), EncoderSpec)
    assert EmbedTexts(spec).spec is spec


def test_hub_answered_no_tells_a_refusal_from_no_answer():
    import httpx
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError

    not_found = httpx.Response(404, request=httpx.Request("GET", "https://huggingface.co/x"))

    def wrapped(cause):
        try:
            try:
                raise cause
            except Exception as e:
                raise OSError("transformers' message") from e
        except OSError as outer:
            return outer

    assert hub_answered_no(wrapped(RepositoryNotFoundError("404 no such repo",
                                                                   response=not_found)))
    assert not hub_answered_no(wrapped(LocalEntryNotFoundError("offline, not cached")))
    assert not hub_answered_no(OSError("connection refused"))


def test_worker_applies_the_managers_checks_too(tiny_models, tmp_path):
    """normalize_embeddings=False is checked against the model where it is resolved: here on
    the worker, for a model whose modules.json has no Normalize module."""
    import shutil

    where = tmp_path / "models" / "e5-small-v2"
    manager = E5TextEmbeddings(str(where), backend="torch",
                               inference_args={"normalize_embeddings": False})
    assert manager.spec is None
    p = beam.Pipeline()
    _ = (p | beam.Create([EmbeddableItem.from_text("a text", id="a")])
         | MLTransform(write_artifact_location=str(tmp_path / "artifacts"))
         .with_transform(manager))
    shutil.copytree(tiny_models("bert", "e5-small-v2"), where)
    (where / "modules.json").write_text(
        '[{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}]')
    with pytest.raises(Exception, match="has no Normalize module"):
        p.run().wait_until_finish()
