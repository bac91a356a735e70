"""The encoder: prefixed texts in, L2-normalised float32 vectors out, in input order.

One :class:`Encoder` is built per worker process (see :mod:`beam_e5.transforms.handler`). ``encode``
tokenises a whole Beam batch, sorts it by token length, cuts micro-batches under a padded
token budget (:mod:`beam_e5.model.batching`), runs them under ``torch.inference_mode``, pools in
float32 over the attention mask, normalises, and restores the input order. On CUDA
out-of-memory a micro-batch is split in half and retried, never dropped.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence, TypeVar

import numpy as np
import torch

from beam_e5.errors import ConfigError
from beam_e5.model.batching import plan_micro_batches
from beam_e5.model.config import EncoderSpec
from beam_e5.model.loading import local_model_path
from beam_e5.model.onnx_backend import describe_backend
from beam_e5.model.pooling import l2_normalize, pool

LOG = logging.getLogger(__name__)

# Texts are cut to this many characters per allowed token before tokenising, so a 10 MB
# document costs no more than a long one. If the cut text does not overflow the max length
# by a clear margin, the full text is tokenised instead, so the result never changes.
CHARS_PER_TOKEN_CUT = 16
OVERFLOW_MARGIN_TOKENS = 64
# What one forward call costs beyond its tokens, priced in tokens: it decides how far the
# micro-batch planner trades padding for fewer, larger calls. Small on CPU; on a GPU a
# small batch leaves the device idle, so calls are dearer.
BATCH_OVERHEAD_TOKENS = {"cpu": 32, "cuda": 2048}


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
    # per text: (tokens of the text itself, how many of them are the unknown token)
    content_per_text: list[tuple[int, int]] = field(default_factory=list)


@dataclass(frozen=True)
class Tokenized:
    ids: list[list[int]]
    truncated: list[bool]


def pick_device(requested: str) -> torch.device:
    """``auto`` takes CUDA when present; an explicit ``cuda`` without a GPU is an error."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was requested but no CUDA GPU is visible to this "
                          "worker; use --device auto or cpu, or run on GPU workers")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def pick_dtype(requested: str, device: torch.device) -> torch.dtype:
    """fp32 on CPU; on CUDA bf16 where supported, else fp16, unless told otherwise."""
    if requested != "auto":
        return getattr(torch, requested)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


T = TypeVar("T")


def run_splitting_on_oom(fn: Callable[[Sequence[T]], list], items: Sequence[T],
                         stats: EncodeStats) -> list:
    """``fn(items)``, retrying on CUDA out-of-memory with halves until single items."""
    try:
        return fn(items)
    except torch.cuda.OutOfMemoryError:
        if len(items) <= 1:
            raise
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        stats.oom_splits += 1
        mid = len(items) // 2
        LOG.warning("beam-e5: CUDA out of memory on %d texts; retrying as %d + %d",
                    len(items), mid, len(items) - mid)
        return (run_splitting_on_oom(fn, items[:mid], stats)
                + run_splitting_on_oom(fn, items[mid:], stats))


class Encoder:
    """A loaded tokenizer + model + profile. Build with :meth:`load`."""

    def __init__(self, spec: EncoderSpec, tokenizer, model, device: torch.device,
                 dtype: torch.dtype, backend: str = "torch") -> None:
        self.spec = spec
        self.backend = backend  # what runs the forward pass: torch | onnx | onnx-int8
        self.profile = spec.profile
        self.prefix = spec.prefix
        self.tokenizer = tokenizer
        self.model = model
        self.device = device
        self.dtype = dtype
        self.max_length = min(self.profile.max_length, _tokenizer_limit(tokenizer))
        self.pad_id = _pad_id(tokenizer)
        self.eos_id = tokenizer.eos_token_id
        self.left_padding = getattr(tokenizer, "padding_side", "right") == "left"
        self.dim = int(model.config.hidden_size)
        self.unk_id = tokenizer.unk_token_id
        self._framing_ids = set(tokenizer.all_special_ids) - {self.unk_id}
        self._prefix_tokens = (len(tokenizer(self.prefix, add_special_tokens=False)["input_ids"])
                               if self.prefix else 0)
        # Every forward pass runs on this one thread, one at a time: the model already uses
        # every core (or the GPU), and passes from many Beam worker threads would each grow
        # their own malloc arena by a batch's activations, so peak memory would rise with the
        # thread count. Tokenisation stays on the caller's thread.
        self._inference_thread = ThreadPoolExecutor(max_workers=1,
                                                    thread_name_prefix="beam-e5-inference")

    @classmethod
    def load(cls, spec: EncoderSpec) -> "Encoder":
        """Load tokenizer and weights (safetensors only unless opted in), move to device.

        With ``backend`` ``onnx`` / ``onnx-int8`` the forward pass is an ONNX Runtime session
        over a graph exported from the same weights (:mod:`beam_e5.model.onnx_backend`); ``auto``
        takes ``onnx`` on CPU where it can run and falls back to torch (with a warning) if
        building the graph fails.
        """
        from transformers import AutoModel, AutoTokenizer

        cfg = spec.config
        device = pick_device(cfg.device)
        dtype = pick_dtype(cfg.dtype, device)
        if cfg.torch_threads:
            torch.set_num_threads(cfg.torch_threads)
        path = local_model_path(spec.source, cfg.model_cache_dir)
        common = dict(revision=cfg.revision, trust_remote_code=cfg.trust_remote_code)
        tokenizer = AutoTokenizer.from_pretrained(path, **common)
        model_kwargs = dict(common, dtype=dtype,
                            use_safetensors=None if cfg.allow_pickle_weights else True)

        def load_torch_model():
            try:
                return AutoModel.from_pretrained(path, attn_implementation="sdpa", **model_kwargs)
            except (ValueError, ImportError) as e:
                if "sdpa" not in str(e).lower() and "attn" not in str(e).lower():
                    raise
                LOG.info("beam-e5: %s has no SDPA attention; using the default", cfg.model)
                return AutoModel.from_pretrained(path, **model_kwargs)

        backend = cfg.backend
        if backend != "torch":
            from transformers import AutoConfig

            from beam_e5.model.onnx_backend import load_onnx_model, pick_backend

            model_config = AutoConfig.from_pretrained(path, **common)
            backend = pick_backend(cfg.backend, device.type, model_config.model_type,
                                   fp32=dtype == torch.float32)
        model = None
        if backend != "torch":
            try:
                model = load_onnx_model(path, model_config, backend, cfg.model_cache_dir,
                                        cfg.torch_threads, load_torch_model)
            except Exception as e:  # noqa: BLE001
                if cfg.backend != "auto":
                    raise
                LOG.warning("beam-e5: the ONNX backend failed for %s (%s: %s); using torch",
                            cfg.model, type(e).__name__, e)
                backend = "torch"
        if model is None:
            model = load_torch_model().eval().to(device)
        LOG.info("beam-e5: %s on %s with %s", cfg.model, device,
                 describe_backend(backend, cfg.backend))
        return cls(spec, tokenizer, model, device, dtype, backend)

    # -- tokenisation -------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> Tokenized:
        """Prefix, cut overlong texts cheaply, tokenise with truncation to the max length."""
        budget = self.max_length - 1 if self.profile.append_eos else self.max_length
        limit = budget * CHARS_PER_TOKEN_CUT
        full = [self.prefix + t for t in texts]
        cut = [t[:limit] for t in full]
        ids, truncated = self._tokenize(cut, budget)
        redo = [i for i, t in enumerate(full)
                if len(t) > limit and truncated[i] < OVERFLOW_MARGIN_TOKENS]
        if redo:
            redo_ids, redo_trunc = self._tokenize([full[i] for i in redo], budget)
            for j, i in enumerate(redo):
                ids[i], truncated[i] = redo_ids[j], redo_trunc[j]
        if self.profile.append_eos and self.eos_id is not None:
            ids = [x if x and x[-1] == self.eos_id else x + [self.eos_id] for x in ids]
        return Tokenized(ids, [t > 0 for t in truncated])

    def _tokenize(self, texts: list[str], max_length: int) -> tuple[list[list[int]], list[int]]:
        """Token ids and, per text, how many tokens were cut off (0: not truncated)."""
        enc = self.tokenizer(texts, truncation=True, max_length=max_length, padding=False,
                             return_attention_mask=False, return_token_type_ids=False)
        encodings = getattr(enc, "encodings", None)
        if encodings:
            over = [sum(len(o.ids) for o in e.overflowing) for e in encodings]
        else:  # slow tokenizer: a text is 'truncated' when it fills the limit
            over = [OVERFLOW_MARGIN_TOKENS if len(x) >= max_length else 0
                    for x in enc["input_ids"]]
        return [list(x) for x in enc["input_ids"]], over

    def content_tokens(self, texts: Sequence[str], ids: list[list[int]]) -> list[tuple[int, int]]:
        """Per text: (its own tokens, unknown ones among them), prefix and special tokens
        not counted. Estimated from ``ids``; texts near zero or holding unknown tokens are
        tokenised again on their own (few), so the count that decides is exact."""
        out = []
        check = []
        for i, x in enumerate(ids):
            unknown = sum(1 for t in x if t == self.unk_id) if self.unk_id is not None else 0
            content = sum(1 for t in x if t not in self._framing_ids) - self._prefix_tokens
            out.append((content, unknown))
            if unknown or content <= 1:
                check.append(i)
        if check:
            budget = self.max_length * CHARS_PER_TOKEN_CUT
            enc = self.tokenizer([texts[i][:budget] for i in check], add_special_tokens=False,
                                 truncation=True, max_length=self.max_length,
                                 return_attention_mask=False, return_token_type_ids=False)
            for i, x in zip(check, enc["input_ids"]):
                unknown = sum(1 for t in x if t == self.unk_id) if self.unk_id is not None else 0
                out[i] = (len(x), unknown)
        return out

    # -- inference ----------------------------------------------------------------------
    def encode(self, texts: Sequence[str],
               on_progress: Optional[Callable[[int, int], None]] = None,
               ) -> tuple[np.ndarray, EncodeStats]:
        """Vectors (len(texts), dim) float32 in input order, and the stats of the call.

        ``on_progress(texts, real_tokens)`` is called after each micro-batch is launched.
        """
        start = time.perf_counter()
        stats = EncodeStats(texts=len(texts))
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out, stats
        tok = self.tokenize(texts)
        lengths = [len(x) for x in tok.ids]
        stats.tokens_per_text = lengths
        stats.real_tokens = sum(lengths)
        stats.truncated_per_text = tok.truncated
        stats.truncated = sum(tok.truncated)
        stats.content_per_text = self.content_tokens(texts, tok.ids)
        plan = plan_micro_batches(lengths, self.spec.config.max_batch_tokens,
                                  self.spec.config.max_batch_size,
                                  BATCH_OVERHEAD_TOKENS.get(self.device.type, 32))
        self._inference_thread.submit(self._run_plan, plan, tok.ids, lengths, out, stats,
                                      on_progress).result()
        stats.micro_batches = len(plan) + stats.oom_splits
        stats.seconds = time.perf_counter() - start
        return out, stats

    def _run_plan(self, plan: list, ids: list[list[int]], lengths: list[int], out: np.ndarray,
                  stats: EncodeStats, on_progress: Optional[Callable[[int, int], None]]) -> None:
        """Launch every micro-batch, then copy the vectors to ``out`` (one sync at the end)."""
        pending: list[tuple[list[int], torch.Tensor]] = []
        for batch in plan:
            rows = list(batch.indices)
            vectors = run_splitting_on_oom(
                lambda part: [self._forward([ids[i] for i in part], stats)], rows, stats)
            pending.append((rows, torch.cat(vectors)))
            if on_progress is not None:
                on_progress(len(rows), sum(lengths[i] for i in rows))
        for rows, vecs in pending:
            out[rows] = vecs.cpu().numpy()

    def _forward(self, ids: list[list[int]], stats: EncodeStats) -> torch.Tensor:
        width = max(len(x) for x in ids)
        input_ids = torch.full((len(ids), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for r, x in enumerate(ids):
            if self.left_padding:
                input_ids[r, width - len(x):] = torch.tensor(x)
                mask[r, width - len(x):] = 1
            else:
                input_ids[r, :len(x)] = torch.tensor(x)
                mask[r, :len(x)] = 1
        stats.padded_tokens += len(ids) * width
        input_ids = input_ids.to(self.device, non_blocking=True)
        mask = mask.to(self.device, non_blocking=True)
        with torch.inference_mode():
            hidden = self.model(input_ids=input_ids, attention_mask=mask)
            if not isinstance(hidden, torch.Tensor):  # a transformers model output
                hidden = hidden.last_hidden_state
            return l2_normalize(pool(self.profile.pooling, hidden, mask))


def _tokenizer_limit(tokenizer) -> int:
    limit = getattr(tokenizer, "model_max_length", None)
    return int(limit) if isinstance(limit, int) and 0 < limit < 1_000_000 else 1_000_000


def _pad_id(tokenizer) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


__all__ = ["Encoder", "EncodeStats", "pick_device", "pick_dtype", "run_splitting_on_oom"]
