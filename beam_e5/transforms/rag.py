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
import json
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
from beam_e5.model.loading import read_model_file_text
from beam_e5.model.profiles import ProfileOverrides
from beam_e5.transforms.beam_args import (
    InferenceArgs,
    inference_options,
    load_model_options,
    model_normalizes,
)
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


def check_normalize(spec: EncoderSpec, normalize: Any) -> None:
    """``inference_args={'normalize_embeddings': False}``: beam-e5's vectors are always
    L2-normalised, which is what sentence-transformers returns for such a model only when
    its ``modules.json`` ends with ``Normalize`` (all-MiniLM-L6-v2, the E5 and GTE models);
    for another model the vectors would differ in length from Beam's, so it is refused."""
    if normalize is None or normalize:
        return
    modules = read_model_file_text(spec.source, "modules.json")
    if modules is not None and not model_normalizes(json.loads(modules)):
        raise ConfigError(
            f"E5TextEmbeddings: inference_args normalize_embeddings=False, but {spec.config.model}"
            " has no Normalize module, and beam-e5 always returns L2-normalised vectors; drop "
            "normalize_embeddings (cosine and dot-product rankings are the same)")


class _E5TextModelHandler(ModelHandler[str, Any, Encoder]):
    """Texts in, one float32 vector per text out: the shape Beam's embedding handlers expect.

    Delegates to :class:`E5ModelHandler` (keyed by position), so loading, micro-batching,
    the ONNX backend, failure isolation and the ``beam_e5`` metrics are the same as
    ``EmbedTexts``'. A text the encoder cannot embed fails its batch with a message naming
    it; ``MLTransform(...).with_exception_handling()`` routes such batches to its errors
    output, as for Beam's own embeddings. The attributes Beam's
    ``_SentenceTransformerModelHandler`` exposes (``model_name``, ``_max_seq_length``,
    ``_load_model_args``, ``_min_batch_size``, ``_max_batch_size``, ``_large_model``) are here
    with the same names and values.
    """

    def __init__(self, manager: "E5TextEmbeddings") -> None:
        super().__init__()
        # one vector per text, the first window of an over-long one (as Beam's own embedders)
        self._inner = E5ModelHandler(manager.encoder, LongTextConfig("truncate"),
                                     min_batch_size=manager.min_batch_size,
                                     max_batch_size=manager.max_batch_size,
                                     max_batch_duration_secs=manager.max_batch_duration_secs)
        self.model_name = manager.model_name
        self._max_seq_length = manager.max_seq_length
        self._load_model_args = manager.load_model_args
        self._min_batch_size = manager.min_batch_size
        self._max_batch_size = manager.max_batch_size
        self._large_model = manager.large_model
        self._normalize = manager.inference_args.get("normalize_embeddings")

    def load_model(self) -> Encoder:
        encoder = self._inner.load_model()
        check_normalize(encoder.spec, self._normalize)  # again where resolved on the worker
        return encoder

    def run_inference(self, batch: Sequence[str], model: Encoder,
                      inference_args: dict[str, Any] | None = None) -> Any:
        results = list(self._inner.run_inference(list(enumerate(batch)), model))
        failed = [r for r in results if r.error]
        if failed:
            first = failed[0]
            raise ValueError(f"beam-e5 could not embed {len(failed)} of {len(batch)} texts; "
                             f"text {first.key} ({str(batch[first.key])[:80]!r}): {first.error}")
        vectors = (np.stack([r.vector for r in results]) if results
                   else np.empty((0, model.dim), dtype=np.float32))
        return inference_options(inference_args or {}).output.convert(vectors)

    def batch_elements_kwargs(self) -> Mapping[str, Any]:
        # Fixed-size batches by default: each one is length-sorted into micro-batches.
        return self._inner.batch_elements_kwargs()

    def share_model_across_processes(self) -> bool:
        return False  # one model per worker process already (RunInference's shared handle)

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
    for ``SentenceTransformerEmbeddings`` (dicts in, each column replaced by its vector), with
    their signatures: ``E5TextEmbeddings(model_name, columns, max_seq_length, ...)``.

    Args:
      model_name: a Hugging Face model name, a local or ``gs://`` model directory, or a whole
        :class:`~beam_e5.model.config.EncoderConfig` (then give no encoder options here).
      columns: embed these dict columns instead of RAG items (second positional argument, as
        in ``SentenceTransformerEmbeddings``).
      max_seq_length: the max length in tokens (``--max-length``).
      image_model: Beam's flag for image models; beam-e5 embeds text only (True is an error).
      load_model_args: Beam's ``SentenceTransformer(...)`` keywords: ``device``,
        ``torch_dtype`` (or ``model_kwargs={'torch_dtype': ...}``), ``trust_remote_code``,
        ``revision``, ``cache_folder``, ``backend`` (:mod:`beam_e5.transforms.beam_args`).
      inference_args: Beam's ``encode(...)`` keywords: ``batch_size`` (texts per forward
        pass), ``convert_to_numpy``/``convert_to_tensor`` (how vectors come back),
        ``normalize_embeddings``, ``prompt``/``prompt_name`` (the prefix / the role),
        ``show_progress_bar`` (no effect). Any other key is a :class:`ConfigError` naming it.
      min_batch_size, max_batch_size: Beam batch sizes (default: ``beam_batch_size``, 512,
        fixed, so each batch is length-sorted into micro-batches).
      large_model: accepted for Beam compatibility. beam-e5 already loads one model per worker
        process, shared by its threads (RunInference's ``shared.Shared``); it does not move the
        model into a separate process (in Beam 2.77 MLTransform's embedding handler does not
        either: ``_TextEmbeddingHandler`` does not forward ``share_model_across_processes``).
      max_batch_duration_secs: Beam's ``BatchElements`` setting (not taken by Beam's
        managers): gather a batch across bundles for at most this long; for streaming.
      role: ``passage`` for documents being indexed, ``query`` for the retrieval side.
      **options: any other :class:`EncoderConfig` field (``device``, ``dtype``, ``backend``,
        ``max_batch_tokens``, ``overrides``, ``revision``, ...).

    The model is resolved here when it is reachable from this machine, so a wrong model path
    or option fails at once with a :class:`~beam_e5.errors.ConfigError`; a model this machine
    cannot reach (a path only the workers have, a hub name offline) is logged and resolved on
    the workers with the same checks.
    """

    def __init__(self, model_name: str | EncoderConfig, columns: list[str] | None = None,
                 max_seq_length: int | None = None, image_model: bool = False, *,
                 role: str | None = None, load_model_args: dict[str, Any] | None = None,
                 inference_args: dict[str, Any] | None = None,
                 min_batch_size: int | None = None, max_batch_size: int | None = None,
                 large_model: bool = False, max_batch_duration_secs: float | None = None,
                 **options: Any) -> None:
        if image_model:
            raise ConfigError("E5TextEmbeddings embeds text; for images use Beam's "
                              "HuggingfaceImageEmbeddings")
        unknown = sorted(set(options) - _ENCODER_FIELDS)
        if unknown:
            raise ConfigError(f"E5TextEmbeddings got unknown options {', '.join(unknown)}; "
                              "it takes Beam's arguments and the EncoderConfig fields "
                              f"{', '.join(sorted(_ENCODER_FIELDS))}")
        inference = inference_options(inference_args or {})
        config = _encoder_config(model_name, role, max_seq_length,
                                 _beam_options(load_model_args or {}, inference, options))
        super().__init__(columns=columns,
                         type_adapter=None if columns is not None else create_text_adapter(),
                         load_model_args=load_model_args, min_batch_size=min_batch_size,
                         max_batch_size=max_batch_size, large_model=large_model,
                         inference_args=dict(inference_args or {}))
        self.model_name = config.model
        self.max_seq_length = max_seq_length
        self.image_model = image_model  # Beam's attribute names (always False here)
        self.max_batch_duration_secs = max_batch_duration_secs
        self.encoder: EncoderSpec | EncoderConfig = config.resolve_where_reachable()
        if isinstance(self.encoder, EncoderSpec):
            check_normalize(self.encoder, inference.normalize)

    @property
    def spec(self) -> EncoderSpec | None:
        """The resolved spec; None when the model is resolved on the workers."""
        return self.encoder if isinstance(self.encoder, EncoderSpec) else None

    def get_model_handler(self) -> ModelHandler:
        return _E5TextModelHandler(self)

    def get_ptransform_for_processing(self, **kwargs) -> beam.PTransform:
        inference = RunInference(model_handler=_TextEmbeddingHandler(self),
                                 inference_args=self.inference_args)
        return inference if self.columns is not None else inference.with_output_types(
            EmbeddableItem)


def _beam_options(load_model_args: Mapping[str, Any], inference: InferenceArgs,
                  options: dict[str, Any]) -> dict[str, Any]:
    """Encoder options from Beam's two dicts and the keywords; one setting given twice (the
    same field from two places) is an error naming both."""
    merged = dict(options)
    for source, extra in (("load_model_args", load_model_options(load_model_args)),
                          ("inference_args", dict(inference.options))):
        for key, value in extra.items():
            if key in merged and merged[key] != value:
                raise ConfigError(f"E5TextEmbeddings: {key} is set twice ({merged[key]!r}, and "
                                  f"{value!r} from {source}); give it once")
            merged[key] = value
    if inference.prompt is not None:
        role = merged.get("role") or "passage"
        overrides = merged.get("overrides") or ProfileOverrides()
        merged["overrides"] = dataclasses.replace(overrides, **{f"{role}_prefix": inference.prompt})
    return merged


def _encoder_config(model_name: str | EncoderConfig, role: str | None,
                    max_seq_length: int | None, options: dict[str, Any]) -> EncoderConfig:
    if isinstance(model_name, EncoderConfig):
        given = sorted(k for k, v in (("role", role), ("max_seq_length", max_seq_length))
                       if v is not None) + sorted(options)
        if given:
            raise ConfigError(f"E5TextEmbeddings got an EncoderConfig and {', '.join(given)}; "
                              "set those fields on the EncoderConfig instead")
        return model_name
    if role is not None and options.get("role", role) != role:
        raise ConfigError(f"E5TextEmbeddings: role={role!r} contradicts inference_args "
                          f"prompt_name (role {options['role']!r}); give one of them")
    role = role or options.pop("role", None) or "passage"
    options.pop("role", None)
    if max_seq_length is not None:
        overrides = options.pop("overrides", None) or ProfileOverrides()
        if overrides.max_length is not None and overrides.max_length != max_seq_length:
            raise ConfigError(f"max_seq_length={max_seq_length} contradicts overrides."
                              f"max_length={overrides.max_length}; give one of them")
        options["overrides"] = dataclasses.replace(overrides, max_length=max_seq_length)
    return EncoderConfig(model_name, role=role, **options)
