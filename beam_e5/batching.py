"""Token-budget micro-batching: sort by length, cut batches under a padded-token budget.

Like text-embeddings-inference's ``max_batch_tokens``, the budget counts *padded* tokens
(rows x longest row), which is what the model actually computes. Sorting by length first
keeps padding small; callers restore input order with the returned indices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from beam_e5.errors import ConfigError


@dataclass(frozen=True)
class MicroBatch:
    """Indices into the caller's list, and the padded width of the batch."""

    indices: tuple[int, ...]
    width: int

    @property
    def padded_tokens(self) -> int:
        return len(self.indices) * self.width


def plan_micro_batches(
    lengths: Sequence[int], max_batch_tokens: int, max_batch_size: int
) -> list[MicroBatch]:
    """Group items into batches whose padded size stays within ``max_batch_tokens``.

    Items are taken longest first, so the first batch of each run fixes the width and the
    batch keeps growing while ``rows * width`` fits. An item longer than the budget gets a
    batch of its own (it must still be embedded). Ties are broken by index, so the plan is
    deterministic.
    """
    if max_batch_tokens < 1:
        raise ConfigError(f"max_batch_tokens must be >= 1, got {max_batch_tokens}; "
                          "a good CPU value is 8192, a GPU one 32768 or more")
    if max_batch_size < 1:
        raise ConfigError(f"max_batch_size must be >= 1, got {max_batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[MicroBatch] = []
    current: list[int] = []
    width = 0
    for i in order:
        if current and ((len(current) + 1) * width > max_batch_tokens
                        or len(current) >= max_batch_size):
            batches.append(MicroBatch(tuple(current), width))
            current = []
        if not current:
            width = max(int(lengths[i]), 1)
        current.append(i)
    if current:
        batches.append(MicroBatch(tuple(current), width))
    return batches
