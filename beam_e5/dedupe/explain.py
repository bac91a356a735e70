"""Help pick a semantic dedupe threshold: nearest-neighbour similarity of a sample.

:func:`explain` takes a deterministic sample (smallest id hashes), computes each
sampled vector's nearest-neighbour similarity over the *whole* set (blocked matrix
products, never n x n in memory) and writes

* ``nn_similarity.png``: histogram of those similarities (needs matplotlib:
  ``pip install 'beam-e5[explain]'``),
* ``nn_similarity.tsv``: per threshold, how many sampled documents would be
  duplicates under the dedupe rule (a more similar document with a smaller id) and
  the estimate for the whole set,
* ``nn_similarity_quantiles.tsv``: quantiles of the nearest-neighbour similarity.

It returns the threshold table as a list of dicts.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from beam_e5.dedupe import core

DEFAULT_THRESHOLDS = (0.80, 0.85, 0.90, 0.92, 0.95, 0.98)
QUANTILES = (0.0, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 1.0)
INSTALL_HINT = "pip install 'beam-e5[explain]'"


def sample_indices(ids: Sequence[str], sample_size: int, seed: int) -> np.ndarray:
    """Indices of the ``sample_size`` ids with the smallest stable hash, in id order."""
    ranked = sorted(range(len(ids)), key=lambda i: (core.stable_hash(ids[i], seed), ids[i]))
    return np.array(sorted(ranked[:sample_size], key=lambda i: ids[i]), dtype=np.int64)


def nearest_similarities(
    vectors: np.ndarray, ids: Sequence[str], sample: np.ndarray, block_size: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """For each sampled row: (max similarity to any other row, to rows with a smaller id).

    ``-1.0`` where no such row exists.  Uses float32 matrix products (rounding ~1e-5).
    """
    rank = np.empty(len(ids), dtype=np.int64)
    rank[sorted(range(len(ids)), key=lambda i: ids[i])] = np.arange(len(ids))
    nearest = np.full(len(sample), -1.0)
    earlier = np.full(len(sample), -1.0)
    for s0 in range(0, len(sample), block_size):
        rows = sample[s0 : s0 + block_size]
        for c0 in range(0, len(vectors), block_size):
            sims = vectors[rows] @ vectors[c0 : c0 + block_size].T
            cols = np.arange(c0, c0 + sims.shape[1])
            sims[rows[:, None] == cols[None, :]] = -np.inf  # not itself
            block = slice(s0, s0 + len(rows))
            nearest[block] = np.maximum(nearest[block], sims.max(axis=1))
            sims[rank[cols][None, :] >= rank[rows][:, None]] = -np.inf  # only smaller ids
            earlier[block] = np.maximum(earlier[block], sims.max(axis=1))
    return nearest, earlier


def threshold_table(
    earlier: np.ndarray, corpus_size: int, thresholds: Sequence[float]
) -> list[dict]:
    """Rows ``{threshold, sampled, sampled_duplicates, estimated_duplicates, fraction}``."""
    rows = []
    for t in thresholds:
        hits = int((earlier >= t).sum())
        fraction = hits / len(earlier) if len(earlier) else 0.0
        rows.append({
            "threshold": float(t),
            "sampled": int(len(earlier)),
            "sampled_duplicates": hits,
            "estimated_duplicates": int(round(fraction * corpus_size)),
            "fraction": round(fraction, 6),
        })
    return rows


def explain(
    vectors: np.ndarray,
    ids: Sequence[str],
    out_dir: str | Path,
    sample_size: int = 2_000,
    seed: int = 0,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    block_size: int = 1024,
) -> list[dict]:
    """Write the histogram and tables described in the module docstring; return the table.

    With ``sample_size >= len(ids)`` every document is sampled and the counts are exact
    (up to float32 rounding at the thresholds).
    """
    figure_cls = _figure_class()
    ids, vectors = core.check_rows(ids, vectors)
    if len(ids) < 2:
        raise ValueError(f"explain needs at least 2 vectors, got {len(ids)}")
    core.check_positive_int("sample_size", sample_size)
    core.check_positive_int("block_size", block_size)
    thresholds = [core.check_threshold(t) for t in thresholds]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    sample = sample_indices(ids, sample_size, seed)
    nearest, earlier = nearest_similarities(vectors, ids, sample, block_size)
    table = threshold_table(earlier, len(ids), thresholds)
    _write_tsv(out / "nn_similarity.tsv", table)
    quantiles = [{"quantile": q, "nn_similarity": round(float(np.quantile(nearest, q)), 6)}
                 for q in QUANTILES]
    _write_tsv(out / "nn_similarity_quantiles.tsv", quantiles)
    _plot(figure_cls, nearest, thresholds, len(ids), out / "nn_similarity.png")
    return table


def _write_tsv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter="\t")
        writer.writeheader()
        writer.writerows(rows)


def _plot(figure_cls, nearest: np.ndarray, thresholds: Sequence[float], corpus_size: int,
          path: Path) -> None:
    fig = figure_cls(figsize=(7, 4))
    ax = fig.add_subplot()
    ax.hist(nearest, bins=100, range=(max(-1.0, float(nearest.min())), 1.0), color="#4477aa")
    for t in thresholds:
        ax.axvline(t, color="#cc3311", linewidth=0.8, linestyle="--")
    ax.set_xlabel("cosine similarity to nearest neighbour")
    ax.set_ylabel("sampled documents")
    ax.set_title(f"nearest-neighbour similarity ({len(nearest)} sampled of {corpus_size})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _figure_class():
    """Import matplotlib lazily; a bare Figure renders with Agg, no pyplot or display."""
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(
            f"dedupe explain needs matplotlib to draw nn_similarity.png: {INSTALL_HINT}"
        ) from exc
    return Figure
