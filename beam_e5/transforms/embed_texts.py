"""``EmbedTexts``: the high-level PTransform most users need.

    vectors = texts | EmbedTexts(EncoderConfig("intfloat/e5-small-v2"))

Input elements are ``(id, text)`` tuples or dicts holding ``text_field`` (and any other
fields, which are carried through). Output elements are dicts with ``id`` (or the input
dict's fields, minus the text), ``embedding`` (float32 numpy vector, L2-normalised),
``tokens`` (real tokens fed to the model), ``truncated`` and the chunk columns:

* ``doc_id``: the input's id; ``chunk`` (0-based) and ``chunks`` (windows of the document);
  ``char_start``/``char_end``: ``text[char_start:char_end]`` is what the window holds;
  ``tokens_cut``: text tokens no window held (``long_text="truncate"`` only).
* A text that fits the model's window gives one row: its own ``id``, ``chunk`` 0, ``chunks`` 1.
* A longer text (``long_text="chunk"``, the default) gives one row per window, ``id``
  ``DOCID#N``, and one document row, ``id`` ``DOCID``, whose vector is the token-weighted mean
  of its windows (L2-normalised), with ``chunk``, ``char_start`` and ``char_end`` None.
  ``long_text="truncate"`` embeds the first window only; ``"fail"`` sends it to errors.

Beam RAG items (``apache_beam.ml.rag.types.EmbeddableItem``, alias ``Chunk``) are accepted
too and come out as items: ``content.text`` embedded, ``embedding.dense_embedding`` filled,
``id``/``index``/``metadata`` kept (:mod:`beam_e5.transforms.rag`).

With ``with_errors=True`` the transform returns ``(embedded, errors)``: records that cannot
be embedded (a non-string text, a text whose inference raised or gave a non-finite
vector: the handler retries a failing batch text by text, so only the culprit fails) become
:class:`~beam_e5.records.ErrorRecord` dicts instead of failing the job.
"""

from __future__ import annotations

from typing import Any, Iterator, Optional, Union

import apache_beam as beam
from apache_beam.ml.inference.base import RunInference

from beam_e5.io.reader_formats import lone_surrogate
from beam_e5.model.chunking import LongTextConfig, window_budget
from beam_e5.model.config import EncoderConfig, EncoderSpec
from beam_e5.records import MAX_RAW_RECORD_CHARS, ErrorRecord
from beam_e5.transforms.handler import E5ModelHandler, Embedding
from beam_e5.transforms.rag import (
    is_rag_item,
    rag_item_record,
    rag_item_text,
    with_dense_embedding,
)

ERRORS_TAG = "errors"


def _error(record: Any, reason: str, source: str = "") -> ErrorRecord:
    if is_rag_item(record):
        record = rag_item_record(record)
    rid = record.get("id") if isinstance(record, dict) else (
        record[0] if isinstance(record, tuple) and record else None)
    return {"source": source or (record.get("source", "") if isinstance(record, dict) else ""),
            "id": None if rid is None else str(rid), "reason": reason,
            "record": repr(record)[:MAX_RAW_RECORD_CHARS]}


class _ToRequest(beam.DoFn):
    """``(id, text)`` or dict -> ``(key, text)``; malformed records go to ``errors``."""

    def __init__(self, text_field: str) -> None:
        self._text_field = text_field

    def process(self, element: Any):
        if is_rag_item(element):
            key, text = element, rag_item_text(element)
        elif isinstance(element, dict):
            text = element.get(self._text_field)
            key: Any = {k: v for k, v in element.items() if k != self._text_field}
        elif isinstance(element, (tuple, list)) and len(element) == 2:
            key, text = str(element[0]), element[1]
        else:
            yield beam.pvalue.TaggedOutput(ERRORS_TAG, _error(
                element, "expected an (id, text) tuple or a dict with a text field"))
            return
        if not isinstance(text, str):
            yield beam.pvalue.TaggedOutput(ERRORS_TAG, _error(
                element, f"text is {type(text).__name__}, not a string"))
            return
        if lone_surrogate(text):  # the tokenizer cannot take it (nor UTF-8 writers)
            yield beam.pvalue.TaggedOutput(ERRORS_TAG, _error(
                element, "text holds a lone surrogate (e.g. '\\ud800' without its pair): it "
                         "is not valid Unicode text"))
            return
        yield key, text


CHUNK_ID_SEPARATOR = "#"


def chunk_id(doc_id: str, chunk: int) -> str:
    """The vector id of window ``chunk`` of a document cut into several: ``DOCID#N``."""
    return f"{doc_id}{CHUNK_ID_SEPARATOR}{chunk}"


def _key_record(key: Any) -> dict:
    if is_rag_item(key):
        return rag_item_record(key)
    return dict(key) if isinstance(key, dict) else {"id": key}


def to_records(emb: Embedding) -> Iterator[Any]:
    """The output rows of one embedded text: one row, or chunk rows and a document row.

    A Beam RAG item comes out as one item whatever its length: Beam's chunker already split
    the text, so it normally fits one window; the handler embeds items in ``truncate`` mode
    (the first window of one that does not fit, as Beam's own embedders do), never as chunk
    rows the RAG writer would not expect."""
    if is_rag_item(emb.key):
        yield with_dense_embedding(emb.key, emb.vector)
        return
    base = _key_record(emb.key)
    doc_id = base.get("id")
    chunks = emb.chunks
    if len(chunks) <= 1:
        c = chunks[0] if chunks else None
        yield {**base, "embedding": emb.vector, "tokens": emb.tokens,
               "truncated": emb.truncated, "tokens_cut": emb.tokens_cut, "doc_id": doc_id,
               "chunk": 0, "chunks": 1, "char_start": c.char_start if c else None,
               "char_end": c.char_end if c else None}
        return
    for i, c in enumerate(chunks):
        yield {**base, "id": chunk_id(doc_id, i), "embedding": c.vector, "tokens": c.tokens,
               "truncated": False, "tokens_cut": 0, "doc_id": doc_id, "chunk": i,
               "chunks": len(chunks), "char_start": c.char_start, "char_end": c.char_end}
    yield {**base, "embedding": emb.vector, "tokens": emb.tokens, "truncated": False,
           "tokens_cut": 0, "doc_id": doc_id, "chunk": None, "chunks": len(chunks),
           "char_start": None, "char_end": None}


class _SplitResults(beam.DoFn):
    """Embeddings -> records; texts the handler could not embed -> ``errors`` (or raise)."""

    def __init__(self, with_errors: bool) -> None:
        self._with_errors = with_errors

    def process(self, emb: Embedding):
        if not emb.error:
            yield from to_records(emb)
            return
        record = _key_record(emb.key)
        if not self._with_errors:
            raise ValueError(f"EmbedTexts could not embed {record.get('id')!r} ({emb.error}); "
                             "use with_errors=True to route such records to a dead-letter "
                             "output instead")
        yield beam.pvalue.TaggedOutput(ERRORS_TAG, _error(record, emb.error))


def _failed_batch_to_errors(failure: tuple) -> list[ErrorRecord]:
    batch, (exc_type, exc_repr, _tb) = failure
    reason = f"inference failed: {getattr(exc_type, '__name__', exc_type)}: {exc_repr}"
    out = []
    for key, _text in batch:
        record = _key_record(key)
        out.append(_error(record, reason[:2000]))
    return out


class EmbedTexts(beam.PTransform):
    """Embed texts with an E5/GTE-style encoder loaded once per worker process.

    ``encoder``: an :class:`EncoderConfig` (resolved here when its model is reachable from
    this machine, so a wrong model fails before the pipeline starts; otherwise logged and
    resolved on the workers, with the same checks) or an :class:`EncoderSpec`.
    ``max_batch_duration_secs`` (Beam's ``BatchElements`` setting, for streaming): gather a
    batch across bundles for at most that long (see the README's streaming section).
    """

    def __init__(self, encoder: Union[EncoderConfig, EncoderSpec], text_field: str = "text",
                 with_errors: bool = False,
                 long_text: Union[LongTextConfig, str, None] = None, *,
                 max_batch_duration_secs: Optional[float] = None,
                 expected_documents: int = 0) -> None:
        super().__init__()
        self._encoder = (encoder.resolve_where_reachable()
                         if isinstance(encoder, EncoderConfig) else encoder)
        self._expected_documents = expected_documents  # progress lines: share done, ETA
        self._text_field = text_field
        self._with_errors = with_errors
        if isinstance(long_text, str):
            long_text = LongTextConfig(long_text)
        self._long_text: LongTextConfig = long_text or LongTextConfig()
        self._max_batch_duration_secs = max_batch_duration_secs
        if isinstance(self._encoder, EncoderSpec):
            self._long_text.check_budget(window_budget(self._encoder.profile.max_length))

    @property
    def long_text(self) -> LongTextConfig:
        return self._long_text

    @property
    def spec(self) -> Optional[EncoderSpec]:
        """The resolved spec; None when the model is resolved on the workers."""
        return self._encoder if isinstance(self._encoder, EncoderSpec) else None

    def expand(self, pcoll):
        requests, bad_input = (
            pcoll | "ToRequest" >> beam.ParDo(_ToRequest(self._text_field)).with_outputs(
                ERRORS_TAG, main="requests"))
        inference = RunInference(E5ModelHandler(
            self._encoder, self._long_text,
            max_batch_duration_secs=self._max_batch_duration_secs,
            expected_documents=self._expected_documents))
        if not self._with_errors:
            _ = bad_input | "FailOnBadInput" >> beam.Map(_raise_bad_input)
            return (requests | "RunInference" >> inference
                    | "ToRecord" >> beam.ParDo(_SplitResults(False)))
        # The handler isolates a failing text itself; a batch can still fail as a whole
        # (model load, worker-level faults), and then its records go to errors, not the floor.
        results, dlq = requests | "RunInference" >> inference.with_exception_handling()
        embedded, failed_texts = results | "ToRecord" >> beam.ParDo(
            _SplitResults(True)).with_outputs(ERRORS_TAG, main="embedded")
        failed = dlq.failed_inferences | "FailedBatches" >> beam.FlatMap(_failed_batch_to_errors)
        errors = (bad_input, failed_texts, failed) | "AllErrors" >> beam.Flatten()
        return embedded, errors


def _raise_bad_input(error: ErrorRecord) -> None:
    raise ValueError(f"EmbedTexts got a record it cannot embed ({error['reason']}): "
                     f"{error['record'][:200]}; use with_errors=True to route such records "
                     "to a dead-letter output instead")
