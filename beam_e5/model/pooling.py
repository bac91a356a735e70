"""Pooling token states into one vector per text, and L2 normalisation, in NumPy.

All functions take ``hidden`` of shape (batch, seq, dim) and an ``attention_mask`` of
shape (batch, seq) with 1 for real tokens and 0 for padding, and compute in float32
whatever the model's dtype. The CPU runtimes (ONNX Runtime, OpenVINO) pool with these, so a
worker on them never imports torch; the torch backend pools on its device with the same rule
written for tensors (:func:`beam_e5.model.backends.torch_backend.torch_pooled_vectors`,
tested equal to these).
"""

from __future__ import annotations

import numpy as np

from beam_e5.model.profiles import Pooling

__all__ = ["cls_pool", "l2_normalize", "last_token_pool", "mean_pool", "pool", "pooled_vectors"]


def mean_pool(hidden: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """Average of the real tokens' states (sentence-transformers ``pooling_mode_mean_tokens``).
    One ``einsum`` (NumPy's own loop: no BLAS threads to compete with the runtime's)."""
    mask = attention_mask.astype(np.float32)
    summed = np.einsum("bsd,bs->bd", hidden.astype(np.float32, copy=False), mask)
    counts = np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)
    return summed / counts


def cls_pool(hidden: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """The first position's state (BGE). Assumes right padding, as encoders use."""
    del attention_mask
    return hidden[:, 0].astype(np.float32)


def last_token_pool(hidden: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """The last real token's state (e5-mistral), for left- or right-padded batches.

    With left padding every row's last position is real; with right padding the last real
    token of row i sits at ``sum(mask[i]) - 1``. Mixed cases are handled per row by taking the
    highest index whose mask is 1.
    """
    positions = np.arange(attention_mask.shape[1])
    last = np.where(attention_mask.astype(bool), positions, -1).max(axis=1).clip(min=0)
    return hidden[np.arange(hidden.shape[0]), last].astype(np.float32)


def l2_normalize(vectors: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Scale rows to unit L2 norm (an all-zero row stays zero)."""
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), eps)


_POOLERS = {"mean": mean_pool, "cls": cls_pool, "last": last_token_pool}


def pool(kind: Pooling, hidden: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """Dispatch on a profile's pooling name."""
    return _POOLERS[kind](hidden, attention_mask)


def pooled_vectors(kind: Pooling, hidden: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """One L2-normalised float32 vector per row: what every backend returns."""
    return l2_normalize(pool(kind, hidden, attention_mask)).astype(np.float32, copy=False)
