"""Synthetic unit vectors with planted similarities, shared by the dedupe tests."""

from __future__ import annotations

import numpy as np


def unit(rows) -> np.ndarray:
    """Rows scaled to unit length (computed in float64, returned as float32)."""
    rows = np.asarray(rows, dtype=np.float64)
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


def near(base: np.ndarray, sim: float, rng: np.random.Generator) -> np.ndarray:
    """A unit vector at cosine ``sim`` (up to float32 rounding) from unit ``base``."""
    noise = rng.normal(size=base.shape)
    noise -= noise.dot(base) * base
    noise /= np.linalg.norm(noise)
    return unit(sim * base.astype(np.float64) + np.sqrt(1 - sim**2) * noise)
