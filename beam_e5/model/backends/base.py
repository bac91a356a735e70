"""The inference-backend interface: a padded batch in, one vector per row out.

The :class:`~beam_e5.model.encoder.Encoder` tokenises, plans windows and micro-batches, then
hands each padded micro-batch to its backend. A backend runs the model on it and pools the
token states where they are (on the GPU for PyTorch on CUDA, so only the pooled vectors cross
to the host), with the shared rule of :mod:`beam_e5.model.pooling`.
"""

from __future__ import annotations

import functools
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple, Optional

import numpy as np

from beam_e5.model.loading import DEFAULT_CACHE_DIR, cached_hub_commit, hub_commit
from beam_e5.model.profiles import Pooling

__all__ = ["InferenceBackend", "LoadRequest", "ModelConfig", "PaddedBatch"]


class PaddedBatch(NamedTuple):
    """Token ids padded to the longest row and the attention mask (1: a real token), both
    int64 of shape (rows, width)."""

    input_ids: np.ndarray
    attention_mask: np.ndarray


@dataclass(frozen=True)
class LoadRequest:
    """What the user asked for (``--backend``, ``--device``, ``--dtype`` as given, ``auto``
    included) and where the model's files are: what the chooser and every backend load from."""

    model: str  # as the user named it, for the log
    path: str  # the local directory (staged from gs:// if need be) or hub name to load
    revision: Optional[str] = None
    trust_remote_code: bool = False
    allow_pickle_weights: bool = False
    backend: str = "auto"
    device: str = "auto"
    dtype: str = "auto"
    threads: int = 0  # 0: the runtime decides (one per core)
    cache_dir: str = DEFAULT_CACHE_DIR  # where built artefacts (ONNX graphs) are kept
    # a hub model's configuration and tokenizer files, fetched apart from its weights
    # (loading.hub_files_dir: the Hub cache's snapshot folder, named by the commit)
    files_dir: Optional[str] = None

    @functools.cached_property
    def model_config(self) -> "ModelConfig":
        """Read once: a local directory's ``config.json`` directly (importing transformers
        costs a worker 0.7 s of its start), as is a hub model's from ``files_dir`` (the
        commit is the folder's name); else a hub name's through transformers' ``AutoConfig``
        (which resolves the name and its revision)."""
        config_file = Path(self.files_dir or self.path) / "config.json"
        if config_file.is_file():
            data = json.loads(config_file.read_text(encoding="utf-8"))
            if isinstance(data, dict) and isinstance(data.get("model_type"), str):
                commit = hub_commit(self.files_dir) if self.files_dir else None
                return ModelConfig(data["model_type"], commit)
        from transformers import AutoConfig  # a hub name, or a config transformers must read

        config = AutoConfig.from_pretrained(self.path, revision=self.revision,
                                            trust_remote_code=self.trust_remote_code)
        # transformers 5 no longer records the commit on the config: the cached file's
        # snapshot folder names it (else a new commit would reuse the old commit's graph)
        commit = getattr(config, "_commit_hash", None) or cached_hub_commit(self.path,
                                                                            self.revision)
        return ModelConfig(config.model_type, commit)


class ModelConfig(NamedTuple):
    """What the backends read of the model's configuration: its ``model_type`` and, for a
    hub model, the commit transformers resolved (part of the key of a cached graph)."""

    model_type: str
    commit_hash: Optional[str]


class InferenceBackend(ABC):
    """One runtime's forward pass over padded batches of one model.

    ``name`` is the ``--backend`` value that selects it, ``precision`` what it computes in
    (``float32``, ``bfloat16``, ``float16``, ``int8``), ``device`` where (``cpu``, ``cuda``),
    and ``label`` the runtime and precision as the log names them.

    ``call_overhead_tokens`` is what one ``embed`` call costs beyond its tokens, priced in
    tokens (measured per backend with ``bench/bench_call_cost.py``): the micro-batch planner
    trades padding against calls at this price. ``in_flight`` is how many calls the runtime
    computes at once (:meth:`embed_overlapped`); 1 for a runtime that spreads each call over
    every thread.
    ``max_call_tokens``: the padded tokens past which a call of this runtime gets no faster
    per token (the encoder plans under the smaller of it and ``--max-batch-tokens``, never
    under the max length); None: ``--max-batch-tokens`` alone.
    """

    name: str
    precision: str
    device: str
    label: str
    call_overhead_tokens: int
    in_flight: int = 1
    max_call_tokens: Optional[int] = None

    @classmethod
    @abstractmethod
    def load(cls, request: LoadRequest, name: str) -> "InferenceBackend":
        """Load the model of ``request`` as backend ``name`` (this class's own names)."""

    @classmethod
    def unsupported(cls, name: str, model_type: Optional[str], device: str) -> Optional[str]:
        """Why ``name`` cannot run ``model_type`` on ``device`` (``auto``, ``cpu``, ``cuda``),
        as a message for the user; None when it can."""
        return None

    @abstractmethod
    def embed(self, batch: PaddedBatch, pooling: Pooling) -> np.ndarray:
        """One vector per row of ``batch``: the model's last hidden state pooled as
        ``pooling`` says and L2-normalised, float32 (rows, dim), in row order."""

    def embed_overlapped(self, batches: Iterable[PaddedBatch], pooling: Pooling
                         ) -> Iterator[np.ndarray]:
        """:meth:`embed` of each batch, in order, as the caller draws them. A runtime that
        computes ``in_flight`` > 1 calls at once starts the next batches before it hands back
        the first (the encoder pads the next batch and pools the last while they run).
        Default: one at a time."""
        for batch in batches:
            yield self.embed(batch, pooling)

    def embed_and_release(self, batch: PaddedBatch, pooling: Pooling) -> np.ndarray:
        """:meth:`embed`, then give back the memory the runtime keeps for its next call (the
        encoder calls this for the last micro-batch of each Beam batch). Default: ``embed``."""
        return self.embed(batch, pooling)
