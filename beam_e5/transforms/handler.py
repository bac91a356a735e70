"""The Beam ``ModelHandler`` for E5/GTE encoders, used through ``RunInference``.

``RunInference`` keeps the loaded :class:`~beam_e5.model.encoder.Encoder` in a ``shared.Shared``
handle, so every thread and bundle of a worker process uses one copy of the model: one load
per process. The handler's hooks stay small: ``load_model`` builds the encoder,
``run_inference`` encodes a Beam batch and reports metrics.

Elements are ``(key, text)`` pairs; results are :class:`Embedding` tuples carrying the key
back, so callers can carry any record through inference without sending it to the model.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Iterable, NamedTuple, Optional, Sequence, Union

import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler
from apache_beam.ml.rag.types import EmbeddableItem

from beam_e5.model.chunking import LongTextConfig, window_budget
from beam_e5.model.config import EncoderConfig, EncoderSpec, resolve_on_worker
from beam_e5.model.encoder import ChunkVector, Encoder
from beam_e5.model.tokens import degenerate_reason, mostly_unknown
from beam_e5.records import METRICS_NAMESPACE

PROGRESS_EVERY_S = 10.0
LOG = logging.getLogger("beam_e5.progress")


class Embedding(NamedTuple):
    """One input text's result: its document vector and, per window, its chunk vectors."""

    key: Any
    vector: Optional[np.ndarray]  # float32 (dim,), L2-normalised; None when ``error``
    tokens: int  # real tokens the model saw (prefix and special tokens included)
    truncated: bool
    error: str = ""  # why this one text has no vector (the rest of its batch is unaffected)
    tokens_cut: int = 0  # text tokens no window held (--long-text truncate)
    chunks: tuple[ChunkVector, ...] = ()  # one per window; a single one unless chunked


class _EncoderMetrics:
    """Beam metrics visible in the Dataflow UI and in ``PipelineResult.metrics()``."""

    def __init__(self) -> None:
        counter = lambda name: Metrics.counter(METRICS_NAMESPACE, name)  # noqa: E731
        self.texts = counter("texts_embedded")
        self.real_tokens = counter("real_tokens")
        self.padded_tokens = counter("padded_tokens")
        self.micro_batches = counter("micro_batches")
        self.truncated = counter("truncated_texts")
        self.tokens_cut = counter("tokens_cut")
        self.chunked = counter("chunked_texts")
        self.chunks = counter("chunks_embedded")
        self.too_long = counter("too_long_texts")
        self.oom_splits = counter("oom_splits")
        self.failed = counter("failed_texts")
        self.mostly_unknown = counter("mostly_unknown_texts")
        self.encode_ms = Metrics.distribution(METRICS_NAMESPACE, "encode_batch_ms")


class _Progress:
    """Logs documents, windows and tokens done, docs/s and, given an estimate of the
    documents to embed, the share done and an ETA, at most every ``PROGRESS_EVERY_S``.

    Per handler copy (so per worker thread): with the in-process DirectRunner's one worker
    it is the job's progress; with more workers each reports its own share (the ETA assumes
    it is the only one). On Dataflow these lines land in the worker logs, locally on
    stderr. The Beam counters above carry the job-wide totals.
    """

    def __init__(self, expected_documents: int = 0) -> None:
        self.start = time.monotonic()
        self.last = self.start
        self.expected = expected_documents
        self.documents = 0
        self.texts = 0
        self.tokens = 0

    def update(self, texts: int, tokens: int) -> None:
        now = time.monotonic()
        if self.texts == 0:  # time to first vector, per worker thread (bench_startup reads it)
            LOG.info("beam-e5: first micro-batch (%d texts) embedded %.2f s after the first batch "
                     "arrived",
                     texts, now - self.start)
        self.texts += texts
        self.tokens += tokens

    def batch_done(self, documents: int) -> None:
        self.documents += documents
        now = time.monotonic()
        if now - self.last >= PROGRESS_EVERY_S:
            self.last = now
            LOG.info("beam-e5: %s", progress_line(self.documents, self.expected, self.texts,
                                                  self.tokens, now - self.start))


def progress_line(documents: int, expected: int, windows: int, tokens: int,
                  seconds: float) -> str:
    """``embedded 1,200 of ~10,000 documents (12%), ...; 40.0 docs/s, ETA 3m40s``."""
    rate = documents / max(seconds, 1e-9)
    done = f"embedded {documents:,} documents"
    eta = ""
    if expected > 0:
        done = (f"embedded {documents:,} of ~{expected:,} documents read "
                f"({min(documents / expected, 1.0):.0%})")
        left = max(expected - documents, 0) / rate if rate > 0 else 0.0
        eta = f", ETA {int(left // 60)}m{int(left % 60):02d}s"
    return (f"{done}, {windows:,} windows, {tokens:,} tokens; {rate:.1f} docs/s, "
            f"{tokens / max(seconds, 1e-9):.0f} tokens/s{eta}")


class E5ModelHandler(ModelHandler[tuple[Any, str], Embedding, Encoder]):
    """Loads the encoder once per worker process and embeds batches of ``(key, text)``.

    ``encoder`` is a resolved :class:`EncoderSpec`, or an :class:`EncoderConfig` whose model
    was not reachable where the pipeline was built: the worker resolves it in
    :meth:`load_model`, with the same checks (a failure names the model).
    ``max_batch_duration_secs`` is Beam's (``BatchElements``): set, batches are gathered
    across bundles by a stateful DoFn for at most that long: how a streaming pipeline with
    one-element bundles gets batches of more than one text on a long-lived worker (not on
    the Python DirectRunner: docs/beam.md, "Streaming batching").
    """

    def __init__(self, encoder: Union[EncoderSpec, EncoderConfig],
                 long_text: Optional[LongTextConfig] = None, *,
                 min_batch_size: Optional[int] = None, max_batch_size: Optional[int] = None,
                 max_batch_duration_secs: Optional[float] = None,
                 expected_documents: int = 0) -> None:
        config = encoder.config if isinstance(encoder, EncoderSpec) else encoder
        # A fixed batch size by default: adaptive batching starts at 1 element, which would
        # defeat length sorting inside the batch. Bundle ends still flush partial batches.
        size = max_batch_size or config.beam_batch_size
        super().__init__(min_batch_size=min_batch_size or size, max_batch_size=size,
                         max_batch_duration_secs=max_batch_duration_secs)
        self._encoder = encoder
        self._long_text = long_text or LongTextConfig()
        self._metrics: Optional[_EncoderMetrics] = None
        self._progress: Optional[_Progress] = None
        self._expected_documents = expected_documents  # for the progress lines' share, ETA

    @property
    def spec(self) -> EncoderSpec:
        """The resolved spec (resolving it here if the pipeline was built without it)."""
        if not isinstance(self._encoder, EncoderSpec):
            self._encoder = self._resolve()
        return self._encoder

    def _resolve(self) -> EncoderSpec:
        spec = resolve_on_worker(self._encoder)
        self._long_text.check_budget(window_budget(spec.profile.max_length))
        return spec

    def load_model(self) -> Encoder:
        return Encoder.load(self.spec)

    def run_inference(self, batch: Sequence[tuple[Any, str]], model: Encoder,
                      inference_args: Optional[dict[str, Any]] = None) -> Iterable[Embedding]:
        """Embed a batch; a text that breaks inference or yields a non-finite vector gets an
        ``error`` instead of a vector, and the rest of the batch is embedded as usual."""
        del inference_args
        try:
            return self._embed(batch, model)
        except Exception as e:  # noqa: BLE001  (isolated below, text by text)
            if len(batch) == 1:
                return [self._failed(batch[0][0], f"inference failed: {type(e).__name__}: {e}")]
            LOG.warning("beam-e5: inference failed on a batch of %d (%s: %s); retrying text by "
                        "text to isolate the cause", len(batch), type(e).__name__, e)
            return [out for item in batch for out in self.run_inference([item], model)]

    def _failed(self, key: Any, reason: str) -> Embedding:
        self._get_metrics().failed.inc()
        return Embedding(key, None, 0, False, reason[:2000])

    def _embed(self, batch: Sequence[tuple[Any, str]], model: Encoder) -> list[Embedding]:
        if self._progress is None:
            self._progress = _Progress(self._expected_documents)
        # a Beam RAG item is one vector, never chunk rows: Beam's chunker already split the
        # text, and like Beam's own embedders the rare item over the window is truncated
        truncate = LongTextConfig("truncate")
        modes = [truncate if isinstance(key, EmbeddableItem) else self._long_text
                 for key, _ in batch]
        docs, stats = model.encode_documents([text for _, text in batch], modes,
                                             self._progress.update)
        metrics = self._get_metrics()
        metrics.texts.inc(stats.texts - stats.failed)
        metrics.real_tokens.inc(stats.real_tokens)
        metrics.padded_tokens.inc(stats.padded_tokens)
        metrics.micro_batches.inc(stats.micro_batches)
        metrics.truncated.inc(stats.truncated)
        metrics.tokens_cut.inc(stats.tokens_cut)
        metrics.chunked.inc(stats.chunked)
        metrics.chunks.inc(stats.windows)
        metrics.too_long.inc(stats.failed)
        metrics.oom_splits.inc(stats.oom_splits)
        metrics.encode_ms.update(int(stats.seconds * 1000))
        content = stats.content_per_text or [(1, 0)] * len(batch)
        out = []
        for (key, _), doc, (own, unknown) in zip(batch, docs, content):
            degenerate = "" if doc.error else degenerate_reason(own, unknown)
            if doc.error or degenerate:
                out.append(self._failed(key, doc.error or degenerate))
            elif not all(np.isfinite(c.vector).all() for c in doc.chunks):
                out.append(self._failed(key, "the model produced a non-finite (NaN or inf) "
                                             "vector; try --dtype float32"))
            else:
                if mostly_unknown(own, unknown):
                    metrics.mostly_unknown.inc()
                out.append(Embedding(key, doc.vector, doc.tokens, doc.tokens_cut > 0, "",
                                     doc.tokens_cut, tuple(doc.chunks)))
        self._progress.batch_done(len(batch))
        return out

    def _get_metrics(self) -> _EncoderMetrics:
        if self._metrics is None:
            self._metrics = _EncoderMetrics()
        return self._metrics

    def get_num_bytes(self, batch: Sequence[tuple[Any, str]]) -> int:
        return sum(len(text) for _, text in batch)

    def get_metrics_namespace(self) -> str:
        return METRICS_NAMESPACE

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_metrics"] = None  # Beam metric objects are rebuilt on the worker
        state["_progress"] = None
        return state
