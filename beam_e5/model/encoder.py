"""The encoder: prefixed texts in, L2-normalised float32 vectors out, in input order.

One :class:`Encoder` is built per worker process (see :mod:`beam_e5.transforms.handler`).
``encode`` tokenises a whole Beam batch, cuts long texts into windows, sorts the windows by
token length, cuts micro-batches under a padded token budget (:mod:`beam_e5.model.batching`)
and hands each to its inference backend (:mod:`beam_e5.model.backends`), which returns one
pooled, L2-normalised vector per window; the windows of a document are combined into its
vector, and the input order is restored. On CUDA out-of-memory a micro-batch is split in
half and retried, never dropped.
"""

from __future__ import annotations

import logging
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import chain
from typing import Callable, NamedTuple, Optional, Sequence, TypeVar, Union

import numpy as np

from beam_e5.model.backends.base import InferenceBackend, LoadRequest, PaddedBatch
from beam_e5.model.backends.choose import load_backend
from beam_e5.model.batching import plan_micro_batches, split_tail
from beam_e5.model.chunking import (
    ChunkSpan,
    LongTextConfig,
    chunk_spans,
    document_vector,
    split_prefix,
    text_offsets,
    truncate_span,
)
from beam_e5.model.config import EncoderConfig, EncoderSpec
from beam_e5.model.hardware import release_free_memory
from beam_e5.model.loading import hub_commit, hub_files_dir, local_model_path
from beam_e5.model.tokenizer import TextTokenizer, TokenizerInfo, load_tokenizer

LOG = logging.getLogger(__name__)


@dataclass
class EncodeStats:
    """Counts for one ``encode`` call; summed into Beam metrics by the handler."""

    texts: int = 0
    real_tokens: int = 0
    padded_tokens: int = 0  # tokens computed, padding included
    micro_batches: int = 0
    truncated: int = 0
    oom_splits: int = 0
    seconds: float = 0.0
    tokens_per_text: list[int] = field(default_factory=list)
    truncated_per_text: list[bool] = field(default_factory=list)
    windows: int = 0  # forward-pass rows: one per chunk (one per text unless chunked)
    chunked: int = 0  # texts cut into more than one window
    tokens_cut: int = 0  # text tokens no window holds (truncate mode)
    failed: int = 0  # texts over the limit in fail mode
    # per text: (tokens of the text itself, how many of them are the unknown token)
    content_per_text: list[tuple[int, int]] = field(default_factory=list)


@dataclass(frozen=True)
class Tokenized:
    ids: list[list[int]]
    truncated: list[bool]


class ChunkVector(NamedTuple):
    """One window of a document: its vector and where its text lies in the document."""

    vector: np.ndarray  # float32 (dim,), L2-normalised
    tokens: int  # real tokens the model saw for this window (prefix and specials included)
    text_tokens: int  # the document's tokens in this window
    char_start: int
    char_end: int


@dataclass
class DocumentVectors:
    """What one document became: its vector, its windows, and what was cut or refused."""

    vector: Optional[np.ndarray]  # the one window's vector, or the token-weighted mean
    chunks: list[ChunkVector]
    text_tokens: int  # the document's own tokens (no prefix, no specials)
    tokens_cut: int = 0
    error: str = ""

    @property
    def tokens(self) -> int:
        return sum(c.tokens for c in self.chunks)


@dataclass(frozen=True)
class _Plan:
    """How one document is fed to the model: its token ids and the windows over them."""

    ids: list[int]  # prefix + text tokens, no special tokens
    prefix_tokens: int
    spans: list[ChunkSpan]
    text_tokens: int
    tokens_cut: int = 0
    error: str = ""


T = TypeVar("T")


class _NeverRaised(Exception):
    """What ``except`` matches where torch was never imported (no CUDA call ran)."""


def _cuda_out_of_memory() -> type[Exception]:
    """torch's CUDA out-of-memory error, looked up only where torch is imported: the CPU
    runtimes never import it (a worker saves its 0.6-0.9 s import and its memory)."""
    cuda = getattr(sys.modules.get("torch"), "cuda", None)  # None: not (yet) imported
    return getattr(cuda, "OutOfMemoryError", _NeverRaised)


def run_splitting_on_oom(fn: Callable[[Sequence[T]], list], items: Sequence[T],
                         stats: EncodeStats) -> list:
    """``fn(items)``, retrying on CUDA out-of-memory with halves until single items."""
    try:
        return fn(items)
    except _cuda_out_of_memory():
        if len(items) <= 1:
            raise
        torch = sys.modules["torch"]
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        stats.oom_splits += 1
        mid = len(items) // 2
        LOG.warning("beam-e5: CUDA out of memory on %d texts; retrying as %d + %d",
                    len(items), mid, len(items) - mid)
        return (run_splitting_on_oom(fn, items[:mid], stats)
                + run_splitting_on_oom(fn, items[mid:], stats))


class Encoder:
    """A loaded tokenizer + inference backend + profile. Build with :meth:`load`."""

    def __init__(self, spec: EncoderSpec, tokenizer: TextTokenizer,
                 backend: InferenceBackend) -> None:
        self.spec = spec
        self.backend = backend  # what runs the forward pass (beam_e5.model.backends)
        self.profile = spec.profile
        self.prefix = spec.prefix
        self.tokenizer = tokenizer
        self.max_length = min(self.profile.max_length, _tokenizer_limit(tokenizer.info))
        self.pad_id = _pad_id(tokenizer.info)
        self.eos_id = tokenizer.info.eos_token_id
        self.left_padding = tokenizer.info.padding_side == "left"
        self.dim = spec.dim
        self._frame_ids: Optional[tuple[list[int], list[int]]] = None
        self._told: set[str] = set()  # warnings already logged (see _tell_once)
        self.unk_id = tokenizer.info.unk_token_id
        # Every forward pass runs on this one thread, one at a time: the model already uses
        # every core (or the GPU), and passes from many Beam worker threads would each grow
        # their own malloc arena by a batch's activations, so peak memory would rise with the
        # thread count. Tokenisation stays on the caller's thread.
        self._inference_thread = ThreadPoolExecutor(max_workers=1,
                                                    thread_name_prefix="beam-e5-inference")

    @classmethod
    def load(cls, spec: EncoderSpec) -> "Encoder":
        """Load the tokenizer and the backend that ``spec`` asks for
        (:func:`~beam_e5.model.backends.choose.load_backend`)."""
        cfg = spec.config
        path = local_model_path(spec.source, cfg.model_cache_dir)
        files = hub_files_dir(path, cfg.revision) if spec.source.kind == "hub" else None
        # a hub model's weights are then loaded at the commit its files came from
        revision = (hub_commit(files) if files else None) or cfg.revision
        tokenizer = _load_tokenizer(files, path, revision, cfg)
        backend = load_backend(LoadRequest(
            model=cfg.model, path=path, revision=revision,
            trust_remote_code=cfg.trust_remote_code,
            allow_pickle_weights=cfg.allow_pickle_weights, backend=cfg.backend,
            device=cfg.device, dtype=cfg.dtype, threads=cfg.torch_threads,
            cache_dir=cfg.model_cache_dir, files_dir=files))
        return cls(spec, tokenizer, backend)

    # -- tokenisation ----------------------------------------------------------------
    def _frame(self) -> tuple[list[int], list[int]]:
        """The special tokens the tokenizer puts before and after a text ([CLS] ... [SEP])."""
        if self._frame_ids is None:
            probe = "hello"
            with_sp = self.tokenizer.ids([probe])[0]
            bare = self.tokenizer.ids([probe], special_tokens=False)[0]
            head: list[int] = []
            tail: list[int] = []
            for i in range(len(with_sp) - len(bare) + 1):
                if with_sp[i:i + len(bare)] == bare:
                    head, tail = with_sp[:i], with_sp[i + len(bare):]
                    break
            self._frame_ids = (head, tail)
        return self._frame_ids

    def _window_ids(self, plan: _Plan, span: ChunkSpan) -> list[int]:
        head, tail = self._frame()
        k = plan.prefix_tokens
        ids = head + plan.ids[:k] + plan.ids[k + span.token_start:k + span.token_end] + tail
        if (self.profile.append_eos and self.eos_id is not None
                and (not ids or ids[-1] != self.eos_id)):
            ids.append(self.eos_id)
        return ids

    def _tell_once(self, message: Optional[str]) -> None:
        """Log ``message`` at WARNING the first time this encoder meets it."""
        if message is not None and message not in self._told:
            self._told.add(message)
            LOG.warning("beam-e5: %s", message)

    def text_budget(self, prefix_tokens: int) -> int:
        """Text tokens one window holds: max length less special tokens and the prefix."""
        head, tail = self._frame()
        eos = 1 if self.profile.append_eos and (not tail or tail[-1] != self.eos_id) else 0
        return self.max_length - len(head) - len(tail) - eos - prefix_tokens

    def plan_documents(self, texts: Sequence[str],
                       long_text: Union[LongTextConfig, Sequence[LongTextConfig]]) -> list[_Plan]:
        """Tokenise each prefixed text once (with character offsets) and choose its windows.
        ``long_text``: one config for all texts, or one per text."""
        full = [self.prefix + t for t in texts]
        if not full:
            return []
        modes = ([long_text] * len(full) if isinstance(long_text, LongTextConfig)
                 else list(long_text))
        if not self.tokenizer.is_fast:
            return [self._plan_slow(t, m) for t, m in zip(full, modes)]
        all_ids, all_offsets = self.tokenizer.ids_and_offsets(full)
        plans = []
        for text, ids, offsets, long_text in zip(texts, all_ids, all_offsets, modes):
            k = split_prefix(offsets, len(self.prefix))
            n = len(ids) - k
            budget = max(1, self.text_budget(k))
            window = long_text.window(budget)
            self._tell_once(long_text.shortened(budget))
            if n <= budget or long_text.mode == "truncate":
                span = truncate_span(text, offsets[k:], budget, len(self.prefix))
                plans.append(_Plan(ids, k, [span], n, max(0, n - budget)))
            elif long_text.mode == "fail":
                plans.append(_Plan(list(ids), k, [], n, error=(
                    f"the text has {n} tokens, over the limit of {budget} (max length "
                    f"{self.max_length} less special and prefix tokens); --long-text fail "
                    "refuses it: use --long-text chunk to embed all of it, or truncate")))
            else:
                offs = text_offsets(offsets[k:], len(self.prefix))
                spans = chunk_spans(text, offs, window, long_text.overlap_for(window))
                plans.append(_Plan(ids, k, spans, n))
        return plans

    def _plan_slow(self, full: str, long_text: LongTextConfig) -> _Plan:
        """A slow (Python) tokenizer has no offsets: truncate only, offsets unknown."""
        ids = self.tokenizer.ids([full], special_tokens=False)[0]
        k = len(self.tokenizer.ids([self.prefix], special_tokens=False)[0]) if self.prefix else 0
        n = len(ids) - k
        budget = max(1, self.text_budget(k))
        if n > budget and long_text.mode != "truncate":
            return _Plan(ids, k, [], n, error=(
                f"the text has {n} tokens, over the limit of {budget}, and this model's "
                "tokenizer is not a fast one, so it cannot be chunked; use --long-text "
                "truncate"))
        return _Plan(ids, k, [ChunkSpan(0, min(n, budget), 0, len(full) - len(self.prefix))],
                     n, max(0, n - budget))

    def tokenize(self, texts: Sequence[str]) -> Tokenized:
        """Prefix and tokenise, truncated to the max length (special tokens included)."""
        plans = self.plan_documents(texts, LongTextConfig("truncate"))
        return Tokenized([self._window_ids(p, p.spans[0]) for p in plans],
                         [p.tokens_cut > 0 for p in plans])

    def content_tokens(self, plan: _Plan) -> tuple[int, int]:
        """(the text's own tokens, unknown ones among them), prefix and special tokens not
        counted: exact, from the whole text's tokens (every window of it, not just one)."""
        own = len(plan.ids) - plan.prefix_tokens
        if self.unk_id is None or own <= 0:
            return max(own, 0), 0
        return own, plan.ids[plan.prefix_tokens:].count(self.unk_id)

    # -- inference ----------------------------------------------------------------------
    def encode(self, texts: Sequence[str],
               on_progress: Optional[Callable[[int, int], None]] = None,
               ) -> tuple[np.ndarray, EncodeStats]:
        """Vectors (len(texts), dim) float32 in input order, each text truncated to the max
        length, and the stats of the call. (:meth:`encode_documents` chunks instead.)

        ``on_progress(texts, real_tokens)`` is called after each micro-batch.
        """
        docs, stats = self.encode_documents(texts, LongTextConfig("truncate"), on_progress)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for i, d in enumerate(docs):
            out[i] = d.vector
        return out, stats

    def encode_documents(self, texts: Sequence[str],
                         long_text: Union[LongTextConfig, Sequence[LongTextConfig]],
                         on_progress: Optional[Callable[[int, int], None]] = None,
                         ) -> tuple[list[DocumentVectors], EncodeStats]:
        """Each text tokenised once, cut into windows as ``long_text`` says, every window of
        the call micro-batched together (sorted by length), vectors back per document."""
        start = time.perf_counter()
        stats = EncodeStats(texts=len(texts))
        plans = self.plan_documents(texts, long_text)
        windows: list[list[int]] = []
        owner: list[tuple[int, ChunkSpan]] = []
        for d, plan in enumerate(plans):
            for span in plan.spans:
                windows.append(self._window_ids(plan, span))
                owner.append((d, span))
        lengths = [len(x) for x in windows]
        out = np.empty((len(windows), self.dim), dtype=np.float32)
        if windows:
            batch_plan = split_tail(
                plan_micro_batches(lengths, self.batch_tokens(lengths),
                                   self.spec.config.max_batch_size,
                                   self.backend.call_overhead_tokens),
                lengths, self.backend.in_flight, self.backend.call_overhead_tokens)
            self._inference_thread.submit(self._run_plan, batch_plan, windows, lengths, out,
                                          stats, on_progress).result()
            stats.micro_batches = len(batch_plan) + stats.oom_splits
        chunks: list[list[ChunkVector]] = [[] for _ in plans]
        for w, (d, span) in enumerate(owner):
            chunks[d].append(ChunkVector(out[w], lengths[w], span.tokens, span.char_start,
                                         span.char_end))
        docs = []
        for plan, cs in zip(plans, chunks):
            if plan.error:
                docs.append(DocumentVectors(None, [], plan.text_tokens, 0, plan.error))
                continue
            vector = cs[0].vector if len(cs) == 1 else document_vector(
                np.stack([c.vector for c in cs]), [c.text_tokens for c in cs])
            docs.append(DocumentVectors(vector, cs, plan.text_tokens, plan.tokens_cut))
        stats.windows = len(windows)
        stats.real_tokens = sum(lengths)
        stats.tokens_per_text = [d.tokens for d in docs]
        stats.truncated_per_text = [d.tokens_cut > 0 for d in docs]
        stats.truncated = sum(stats.truncated_per_text)
        stats.tokens_cut = sum(d.tokens_cut for d in docs)
        stats.chunked = sum(len(d.chunks) > 1 for d in docs)
        stats.failed = sum(bool(d.error) for d in docs)
        stats.content_per_text = [self.content_tokens(p) for p in plans]
        stats.seconds = time.perf_counter() - start
        return docs, stats

    def batch_tokens(self, lengths: Sequence[int] = ()) -> int:
        """The padded-token budget of one micro-batch: ``--max-batch-tokens``, or less where
        the backend's calls gain nothing past ``max_call_tokens`` (at least one window). Where
        the backend computes several calls at once, the windows of a small Beam batch
        (``lengths``) are shared out among them, not left to one of its streams."""
        own = self.backend.max_call_tokens
        budget = self.spec.config.max_batch_tokens
        if own is not None:
            budget = min(budget, max(own, self.max_length))
        if self.backend.in_flight > 1 and lengths:
            share = -(-sum(lengths) // self.backend.in_flight)
            budget = min(budget, max(share, max(lengths)))
        return budget

    def _run_plan(self, plan: list, ids: list[list[int]], lengths: list[int], out: np.ndarray,
                  stats: EncodeStats, on_progress: Optional[Callable[[int, int], None]]) -> None:
        """Embed every micro-batch into its rows of ``out``."""
        if self.backend.in_flight > 1:
            self._run_plan_overlapped(plan, ids, lengths, out, stats, on_progress)
            return
        for k, batch in enumerate(plan):
            rows = list(batch.indices)
            last = k == len(plan) - 1
            vectors = run_splitting_on_oom(
                lambda part, last=last: [self._embed([ids[i] for i in part], stats, last)],
                rows, stats)
            out[rows] = np.concatenate(vectors)
            if on_progress is not None:
                on_progress(len(rows), sum(lengths[i] for i in rows))
        if self.backend.device == "cpu":
            # here, between forward passes, not on a caller's thread while another caller's
            # batch runs: the heap's free pages go back to the OS once per Beam batch
            release_free_memory()

    def _run_plan_overlapped(self, plan: list, ids: list[list[int]], lengths: list[int],
                             out: np.ndarray, stats: EncodeStats,
                             on_progress: Optional[Callable[[int, int], None]]) -> None:
        """:meth:`_run_plan` for a runtime that computes several micro-batches at once (a CPU
        runtime, OpenVINO's streams: no out-of-memory splitting, and no runtime arena to give
        back after the last call): each is padded while the ones before it run."""
        padded = (self._padded([ids[i] for i in batch.indices], stats) for batch in plan)
        vectors_of = self.backend.embed_overlapped(padded, self.profile.pooling)
        for batch, vectors in zip(plan, vectors_of, strict=True):
            rows = list(batch.indices)
            out[rows] = vectors
            if on_progress is not None:
                on_progress(len(rows), sum(lengths[i] for i in rows))
        release_free_memory()

    def _padded(self, ids: list[list[int]], stats: EncodeStats) -> PaddedBatch:
        batch = pad_batch(ids, self.pad_id, self.left_padding)
        stats.padded_tokens += batch.input_ids.size
        return batch

    def _embed(self, ids: list[list[int]], stats: EncodeStats, release: bool = False
               ) -> np.ndarray:
        """``release``: the last micro-batch of a Beam batch (the backend then gives back the
        memory its runtime keeps between calls)."""
        batch = self._padded(ids, stats)
        if release:
            return self.backend.embed_and_release(batch, self.profile.pooling)
        return self.backend.embed(batch, self.profile.pooling)


def pad_batch(ids: Sequence[Sequence[int]], pad_id: int,
              left: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Token ids padded to the longest row, and the attention mask (both int64), built in
    one pass at C speed: one row per text, padding on the right (``left``: on the left)."""
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    width = int(lengths.max()) if len(ids) else 0
    cols = np.arange(width)
    keep = cols >= (width - lengths)[:, None] if left else cols < lengths[:, None]
    out = np.full((len(ids), width), pad_id, dtype=np.int64)
    out[keep] = np.fromiter(chain.from_iterable(ids), dtype=np.int64, count=int(lengths.sum()))
    return PaddedBatch(out, keep.astype(np.int64))


def _load_tokenizer(files: Optional[str], path: str, revision: Optional[str],
                    cfg: EncoderConfig) -> TextTokenizer:
    """The tokenizer from a hub model's files in the Hub cache (``files``), else, or where
    those do not build one, from ``path`` as transformers resolves it."""
    if files is not None:
        try:
            return load_tokenizer(files, revision, cfg.trust_remote_code, cfg.model_cache_dir)
        except Exception as e:  # noqa: BLE001 - a tokenizer class may need a file not fetched
            LOG.warning("beam-e5: the tokenizer of %s did not load from its files in the Hub "
                        "cache (%s: %s); transformers loads it from the hub name", path,
                        type(e).__name__, e)
    return load_tokenizer(path, revision, cfg.trust_remote_code, cfg.model_cache_dir)


def _tokenizer_limit(info: TokenizerInfo) -> int:
    limit = info.model_max_length
    return int(limit) if 0 < limit < 1_000_000 else 1_000_000


def _pad_id(info: TokenizerInfo) -> int:
    for candidate in (info.pad_token_id, info.eos_token_id, info.unk_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


__all__ = ["ChunkVector", "DocumentVectors", "Encoder", "EncodeStats", "pad_batch",
           "run_splitting_on_oom"]
