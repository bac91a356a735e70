"""Pooling token states into one vector per text, and L2 normalisation.

All functions take ``hidden`` of shape (batch, seq, dim) and an ``attention_mask`` of
shape (batch, seq) with 1 for real tokens and 0 for padding, and compute in float32
whatever the model's dtype.
"""

from __future__ import annotations

import torch

from beam_e5.model.profiles import Pooling


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average of the real tokens' states (sentence-transformers ``pooling_mode_mean_tokens``)."""
    mask = attention_mask.to(torch.float32).unsqueeze(-1)
    summed = (hidden.to(torch.float32) * mask).sum(dim=1)
    counts = mask.sum(dim=1).clamp(min=1e-9)
    return summed / counts


def cls_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The first position's state (BGE). Assumes right padding, as encoders use."""
    del attention_mask
    return hidden[:, 0].to(torch.float32)


def last_token_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The last real token's state (e5-mistral), for left- or right-padded batches.

    With left padding every row's last position is real; with right padding the last real
    token of row i sits at ``sum(mask[i]) - 1``. Mixed cases are handled per row by taking the
    highest index whose mask is 1.
    """
    seq_len = attention_mask.shape[1]
    positions = torch.arange(seq_len, device=attention_mask.device).expand_as(attention_mask)
    last = torch.where(attention_mask.bool(), positions, torch.full_like(positions, -1)).amax(dim=1)
    last = last.clamp(min=0)
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    return hidden[rows, last].to(torch.float32)


def l2_normalize(vectors: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Scale rows to unit L2 norm (an all-zero row stays zero)."""
    return vectors / vectors.norm(p=2, dim=-1, keepdim=True).clamp(min=eps)


_POOLERS = {"mean": mean_pool, "cls": cls_pool, "last": last_token_pool}


def pool(kind: Pooling, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Dispatch on a profile's pooling name."""
    return _POOLERS[kind](hidden, attention_mask)


def pooled_vectors(kind: Pooling, hidden: torch.Tensor,
                   attention_mask: torch.Tensor) -> torch.Tensor:
    """One L2-normalised float32 vector per row: what every backend returns."""
    return l2_normalize(pool(kind, hidden, attention_mask))
