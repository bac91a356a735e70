"""Beam RAG interop: ``apache_beam.ml.rag`` items through ``EmbedTexts``, and an
``EmbeddingsManager`` for ``MLTransform``.

Beam's RAG package passes :class:`~apache_beam.ml.rag.types.EmbeddableItem` objects (``Chunk``
is the same class) from a chunker to an embeddings manager to a vector-database writer.

* ``EmbedTexts`` accepts such items: ``content.text`` is embedded, ``embedding`` is filled
  with a dense vector (a list of floats, L2-normalised), ``id``, ``index`` and ``metadata`` are
  kept. The helpers below do that conversion.
* :class:`E5TextEmbeddings` replaces Beam's ``HuggingfaceTextEmbeddings`` (RAG items) or
  ``SentenceTransformerEmbeddings`` (dict columns) in ``MLTransform`` with the same arguments::

      MLTransform(write_artifact_location=tmp).with_transform(
          E5TextEmbeddings("intfloat/e5-small-v2", role="passage"))

  It runs beam-e5's :class:`~beam_e5.transforms.handler.E5ModelHandler`: the model's recipe
  (prefix per role, pooling, max length), token-budget micro-batches and, on CPU, the ONNX
  Runtime backend; one model per worker process, the ``beam_e5`` metrics.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import ModelHandler, RunInference
from apache_beam.ml.rag.embeddings.base import create_text_adapter
from apache_beam.ml.rag.types import EmbeddableItem
from apache_beam.ml.rag.types import Embedding as RagEmbedding
from apache_beam.ml.transforms.base import EmbeddingsManager, _TextEmbeddingHandler

from beam_e5.errors import ConfigError
from beam_e5.model.chunking import LongTextConfig
from beam_e5.model.config import EncoderConfig, EncoderSpec
from beam_e5.model.encoder import Encoder
from beam_e5.model.profiles import ProfileOverrides
from beam_e5.transforms.handler import E5ModelHandler

# -- EmbeddableItem <-> EmbedTexts records ---------------------------------------------------


def is_rag_item(element: Any) -> bool:
    """Is ``element`` one of Beam's RAG items (``EmbeddableItem``, alias ``Chunk``)?"""
    return isinstance(element, EmbeddableItem)


def rag_item_text(item: EmbeddableItem) -> Any:
    """What ``EmbedTexts`` embeds: ``content.text`` (``None`` for an image-only item)."""
    return item.content.text if item.content is not None else None


def rag_item_record(item: EmbeddableItem) -> dict[str, Any]:
    """The item as a plain dict, for the errors (dead-letter) output."""
    return {"id": item.id, "index": item.index, "metadata": dict(item.metadata or {}),
            "text": rag_item_text(item)}


def with_dense_embedding(item: EmbeddableItem, vector: np.ndarray) -> EmbeddableItem:
    """A copy of ``item`` whose ``embedding`` holds ``vector`` as Beam's dense embedding
    (a list of floats); ``id``, ``index``, ``metadata`` and ``content`` are kept. Any sparse
    embedding already on the item is kept too."""
    sparse = item.embedding.sparse_embedding if item.embedding is not None else None
    return dataclasses.replace(item, metadata=dict(item.metadata or {}),
                               embedding=RagEmbedding(dense_embedding=vector.tolist(),
                                                      sparse_embedding=sparse))


# -- MLTransform embeddings manager -----------------------------------------------------------

_ENCODER_FIELDS = frozenset(f.name for f in dataclasses.fields(EncoderConfig)) - {"model"}


class _E5TextModelHandler(ModelHandler[str, np.ndarray, Encoder]):
    """Texts in, one float32 vector per text out: the shape Beam's embedding handlers expect.

    Delegates to :class:`E5ModelHandler` (keyed by position), so loading, micro-batching,
    the ONNX backend, failure isolation and the ``beam_e5`` metrics are the same as
    ``EmbedTexts``'. A text the encoder cannot embed fails its batch with a message naming
    it; ``MLTransform(...).with_exception_handling()`` routes such batches to its errors
    output, as for Beam's own embeddings.
    """

    def __init__(self, spec: EncoderSpec, min_batch_size: int | None,
                 max_batch_size: int | None) -> None:
        super().__init__()
        # one vector per text, the first window of an over-long one (as Beam's own embedders)
        self._inner = E5ModelHandler(spec, LongTextConfig("truncate"))
        self._max_batch_size = max_batch_size or spec.config.beam_batch_size
        self._min_batch_size = min_batch_size or self._max_batch_size

    def load_model(self) -> Encoder:
        return self._inner.load_model()

    def run_inference(self, batch: Sequence[str], model: Encoder,
                      inference_args: dict[str, Any] | None = None) -> np.ndarray:
        results = list(self._inner.run_inference(list(enumerate(batch)), model))
        failed = [r for r in results if r.error]
        if failed:
            first = failed[0]
            raise ValueError(f"beam-e5 could not embed {len(failed)} of {len(batch)} texts; "
                             f"text {first.key} ({str(batch[first.key])[:80]!r}): {first.error}")
        if not results:
            return np.empty((0, self._inner.spec.dim), dtype=np.float32)
        return np.stack([r.vector for r in results])

    def batch_elements_kwargs(self) -> Mapping[str, Any]:
        # Fixed-size batches by default: each one is length-sorted into micro-batches.
        return {"min_batch_size": self._min_batch_size, "max_batch_size": self._max_batch_size}

    def get_num_bytes(self, batch: Sequence[str]) -> int:
        return sum(len(t) for t in batch)

    def get_metrics_namespace(self) -> str:
        return self._inner.get_metrics_namespace()

    def __repr__(self) -> str:
        return "E5TextEmbeddings"


class E5TextEmbeddings(EmbeddingsManager):
    """beam-e5's encoder as an ``MLTransform`` embeddings manager.

    A drop-in for Beam's ``HuggingfaceTextEmbeddings`` (``apache_beam.ml.rag.embeddings.
    huggingface``: RAG items in, ``embedding.dense_embedding`` filled) and, with ``columns``,
    for ``SentenceTransformerEmbeddings`` (dicts in, each column replaced by its vector).

    Args:
      model_name: a Hugging Face model name, a local or ``gs://`` model directory, or a whole
        :class:`~beam_e5.model.config.EncoderConfig` (then give no encoder options here).
      role: ``passage`` for documents being indexed, ``query`` for the retrieval side; picks
        the model's prefix (``passage: `` / ``query: `` for E5, the instruction for E5
        instruct, the query instruction for BGE).
      max_seq_length: as in Beam's managers: the max length in tokens (``--max-length``).
      columns: embed these dict columns instead of RAG items.
      min_batch_size, max_batch_size: Beam batch sizes (default: ``beam_batch_size``, 512).
      **options: any other :class:`EncoderConfig` field (``device``, ``dtype``, ``backend``,
        ``max_batch_tokens``, ``overrides``, ``revision``, ...).

    The model source and recipe are resolved here, before the pipeline is built, so a wrong
    model path or option fails at once with a :class:`~beam_e5.errors.ConfigError`.
    """

    def __init__(self, model_name: str | EncoderConfig, *, role: str | None = None,
                 max_seq_length: int | None = None, columns: list[str] | None = None,
                 min_batch_size: int | None = None, max_batch_size: int | None = None,
                 **options: Any) -> None:
        beam_only = sorted(k for k in ("load_model_args", "inference_args", "large_model")
                           if options.get(k))
        if beam_only:
            raise ConfigError(
                f"E5TextEmbeddings does not take {', '.join(beam_only)}: pass encoder options "
                "as keywords (device=, dtype=, backend=, max_batch_tokens=, ...); the model is "
                "already loaded once per worker process")
        for k in ("load_model_args", "inference_args", "large_model"):
            options.pop(k, None)
        unknown = sorted(set(options) - _ENCODER_FIELDS)
        if unknown:
            raise ConfigError(f"E5TextEmbeddings got unknown options {', '.join(unknown)}; "
                              "it takes the EncoderConfig fields "
                              f"{', '.join(sorted(_ENCODER_FIELDS))}")
        config = _encoder_config(model_name, role, max_seq_length, options)
        adapter = None if columns is not None else create_text_adapter()
        super().__init__(columns=columns, type_adapter=adapter,
                         min_batch_size=min_batch_size, max_batch_size=max_batch_size)
        self.spec: EncoderSpec = config.resolve()
        self.model_name = config.model

    def get_model_handler(self) -> ModelHandler:
        return _E5TextModelHandler(self.spec, self.min_batch_size, self.max_batch_size)

    def get_ptransform_for_processing(self, **kwargs) -> beam.PTransform:
        inference = RunInference(model_handler=_TextEmbeddingHandler(self),
                                 inference_args=self.inference_args)
        return inference if self.columns is not None else inference.with_output_types(
            EmbeddableItem)


def _encoder_config(model_name: str | EncoderConfig, role: str | None,
                    max_seq_length: int | None, options: dict[str, Any]) -> EncoderConfig:
    if isinstance(model_name, EncoderConfig):
        given = sorted(k for k, v in (("role", role), ("max_seq_length", max_seq_length))
                       if v is not None) + sorted(options)
        if given:
            raise ConfigError(f"E5TextEmbeddings got an EncoderConfig and {', '.join(given)}; "
                              "set those fields on the EncoderConfig instead")
        return model_name
    if max_seq_length is not None:
        overrides = options.pop("overrides", None) or ProfileOverrides()
        if overrides.max_length is not None and overrides.max_length != max_seq_length:
            raise ConfigError(f"max_seq_length={max_seq_length} contradicts overrides."
                              f"max_length={overrides.max_length}; give one of them")
        options["overrides"] = dataclasses.replace(overrides, max_length=max_seq_length)
    return EncoderConfig(model_name, role=role or "passage", **options)
