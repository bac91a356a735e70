"""Pure numpy building blocks of semantic (cosine) near-duplicate removal.

The rule, implemented exactly by :func:`brute_force_duplicates` and approximated at
scale by :class:`beam_e5.transforms.semantic_dedupe.SemanticDedupe`:

    A document *d* is a duplicate when some document *e* that comes before it in the
    order key has ``cos(d, e) >= threshold``.  Its ``duplicate_of`` is the most similar
    such *e*; ties go to the smallest order key.  There is no transitivity.

The order key is ``(id,)`` for ``keep='id'``, ``(-tokens, id)`` for ``'longest'`` and
``(tokens, id)`` for ``'shortest'``.

Every reported similarity is :func:`exact_similarity`: the correctly rounded dot
product of the two float32 vectors (float64 products are exact, ``math.fsum`` rounds
once), so it never depends on block layout, BLAS, bundle or worker.  Matrix products
in float32 only pre-select pairs, with a slack larger than their rounding error.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np

KEEP_CHOICES = ("id", "longest", "shortest")

OrderKey = tuple  # ends with the document id, see order_key()


class Candidate(NamedTuple):
    """An earlier document *e* that a later document matches (compared field by field:
    :func:`better` prefers the higher ``similarity``, then the smaller ``key``)."""

    similarity: float
    key: OrderKey  # the order key of e
    doc_id: str  # the id of e


# ----------------------------------------------------------------- validation --


def check_threshold(threshold: float) -> float:
    """Return ``threshold`` as a float, or raise ValueError if not in (0, 1]."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise ValueError(f"threshold must be a number in (0, 1], got {threshold!r}")
    if not 0.0 < float(threshold) <= 1.0:
        raise ValueError(
            f"threshold must be in (0, 1], got {threshold!r}; "
            "typical values for semantic dedupe are 0.85 to 0.98"
        )
    return float(threshold)


def check_positive_int(name: str, value: int) -> int:
    """Return ``value`` or raise ValueError when it is not an int >= 1."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def check_matrix(vectors: np.ndarray, name: str = "vectors") -> np.ndarray:
    """Return ``vectors`` as a C-contiguous float32 2-D array, or raise ValueError."""
    if not isinstance(vectors, np.ndarray) or vectors.ndim != 2:
        raise ValueError(f"{name} must be a 2-D numpy array (n, dim), got {_shape(vectors)}")
    if vectors.dtype != np.float32:
        raise ValueError(f"{name} must be float32, got {vectors.dtype}; use .astype(np.float32)")
    if not np.isfinite(vectors).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return np.ascontiguousarray(vectors)


def _shape(value: object) -> str:
    return f"shape {value.shape}" if isinstance(value, np.ndarray) else type(value).__name__


def check_rows(ids: Sequence[str], vectors: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Return ``(ids as a list, vectors checked by check_matrix)``, or raise ValueError
    unless there is one unique id per row."""
    vectors = check_matrix(vectors)
    ids = list(ids)
    if len(ids) != len(vectors):
        raise ValueError(f"got {len(ids)} ids for {len(vectors)} vectors; pass one id per row")
    if len(set(ids)) != len(ids):
        raise ValueError("ids must be unique; run exact dedupe or fix the id field first")
    return ids, vectors


# --------------------------------------------------------------- order, hashing --


def order_key(doc_id: str, tokens: int | None, keep: str) -> OrderKey:
    """The order key of a document: documents with smaller keys are kept first."""
    if keep == "id":
        return (doc_id,)
    if keep not in KEEP_CHOICES:
        raise ValueError(f"keep must be one of {KEEP_CHOICES}, got {keep!r}")
    if isinstance(tokens, bool) or not isinstance(tokens, (int, np.integer)):
        raise ValueError(
            f"document {doc_id!r} needs an int 'tokens' field for keep={keep!r}, "
            f"got {tokens!r}; use keep='id' when token counts are unknown"
        )
    return (-int(tokens), doc_id) if keep == "longest" else (int(tokens), doc_id)


def stable_hash(text: str, seed: int) -> int:
    """A 64-bit hash of ``text`` that is the same in every process (unlike ``hash``)."""
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8, salt=_salt(seed))
    return int.from_bytes(digest.digest(), "big")


def _salt(seed: int) -> bytes:
    return int(seed).to_bytes(16, "big", signed=True)


# --------------------------------------------------------------- similarities --


def exact_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Correctly rounded dot product of two float32 vectors (deterministic everywhere)."""
    products = a.astype(np.float64) * b.astype(np.float64)  # exact for float32 inputs
    return math.fsum(products.tolist())


def matmul_slack(dim: int) -> float:
    """Pre-selection slack: well above the float32 rounding error of a unit dot product."""
    return 4.0 * max(dim, 1) * float(np.finfo(np.float32).eps) + 1e-6


def approx_pairs(
    rows: np.ndarray,
    cols: np.ndarray,
    floor: float,
    block_size: int,
    triangular: bool,
) -> Iterator[tuple[int, int, float]]:
    """Yield ``(row, col, float32 similarity)`` for pairs whose similarity >= ``floor``.

    With ``triangular`` the columns must be the first ``len(cols)`` rows and only pairs
    ``col < row`` are considered (each unordered pair once, never a self pair).  Memory
    is ``block_size ** 2`` floats whatever the sizes.
    """
    for r0 in range(0, len(rows), block_size):
        r1 = min(r0 + block_size, len(rows))
        c_end = min(len(cols), r1) if triangular else len(cols)
        for c0 in range(0, c_end, block_size):
            c1 = min(c0 + block_size, c_end)
            sims = rows[r0:r1] @ cols[c0:c1].T
            hit_r, hit_c = np.nonzero(sims >= floor)
            values = sims[hit_r, hit_c].tolist()
            for r, c, sim in zip((hit_r + r0).tolist(), (hit_c + c0).tolist(), values):
                if not triangular or c < r:
                    yield r, c, sim


def best_earlier(
    rows: np.ndarray,
    cols: np.ndarray,
    row_keys: Sequence[OrderKey],
    col_keys: Sequence[OrderKey],
    threshold: float,
    block_size: int,
    triangular: bool,
) -> dict[OrderKey, Candidate]:
    """Per later document of a pair: its best earlier match among the compared pairs.

    Order keys end with the document id.  Returns ``{order key of d: Candidate}`` with
    the rule's pick-best (exact similarity >= threshold, highest, ties to the smaller
    key).  Only candidates within twice the float32 slack of a document's best float32
    similarity are verified exactly, so the result equals checking every pair exactly.
    """
    slack = matmul_slack(rows.shape[1])
    pending: dict[tuple[bool, int], tuple[float, list]] = {}
    for r, c, approx in approx_pairs(rows, cols, threshold - slack, block_size, triangular):
        later_is_row = row_keys[r] > col_keys[c]
        d, e = ((True, r), (False, c)) if later_is_row else ((False, c), (True, r))
        top, near = pending.get(d, (approx, []))
        if approx > top:
            top, near = approx, [x for x in near if x[0] >= approx - 2 * slack]
        if approx >= top - 2 * slack:
            near.append((approx, e))
        pending[d] = (top, near)
    best: dict[OrderKey, Candidate] = {}
    for (d_is_row, d), (_, near) in pending.items():
        d_vec, d_key = (rows[d], row_keys[d]) if d_is_row else (cols[d], col_keys[d])
        for _, (e_is_row, e) in near:
            e_vec, e_key = (rows[e], row_keys[e]) if e_is_row else (cols[e], col_keys[e])
            sim = exact_similarity(d_vec, e_vec)
            if sim >= threshold:
                cand = Candidate(sim, e_key, e_key[-1])
                best[d_key] = better(best[d_key], cand) if d_key in best else cand
    return best


def compared_pairs(num_rows: int, num_cols: int, triangular: bool) -> int:
    """How many pairs :func:`approx_pairs` compares (for metrics and benchmarks)."""
    if not triangular:
        return num_rows * num_cols
    return num_cols * (num_cols - 1) // 2 + (num_rows - num_cols) * num_cols


# ------------------------------------------------------------- pick-best rule --


def better(a: Candidate, b: Candidate) -> Candidate:
    """The preferred candidate: higher similarity, then smaller order key."""
    if a.similarity != b.similarity:
        return a if a.similarity > b.similarity else b
    return a if a.key <= b.key else b


def pick_best(candidates: Sequence[Candidate]) -> Candidate:
    """The ``duplicate_of`` candidate among ``candidates`` (a non-empty sequence)."""
    if not candidates:
        raise ValueError("pick_best needs at least one candidate")
    best = candidates[0]
    for cand in candidates[1:]:
        best = better(best, cand)
    return best


# -------------------------------------------------------------- reference rule --


def brute_force_duplicates(
    ids: Sequence[str],
    vectors: np.ndarray,
    threshold: float,
    order_keys: Sequence[OrderKey] | None = None,
    block_size: int = 1024,
) -> dict[str, tuple[str, float]]:
    """The exact rule over all pairs: ``{duplicate id: (duplicate_of, similarity)}``.

    ``order_keys`` defaults to ``(id,)`` per document.  Runs in O(n^2 dim) time and
    O(block_size^2) extra memory; meant as the reference for tests and small corpora.
    """
    threshold = check_threshold(threshold)
    check_positive_int("block_size", block_size)
    ids, vectors = check_rows(ids, vectors)
    keys = [(i,) for i in ids] if order_keys is None else list(order_keys)
    if len(keys) != len(ids):
        raise ValueError(f"got {len(keys)} order_keys for {len(ids)} ids")
    order = sorted(range(len(ids)), key=lambda i: keys[i])
    ranked = vectors[order]
    ranked_keys = [keys[i] for i in order]
    if any(k[-1] != ids[i] for i, k in zip(order, ranked_keys)):
        raise ValueError("every order key must end with its document id, as order_key() does")
    best = best_earlier(ranked, ranked, ranked_keys, ranked_keys, threshold, block_size,
                        triangular=True)
    return {d[-1]: (cand.doc_id, cand.similarity) for d, cand in best.items()}


# ----------------------------------------------------------------- clustering --


def fit_centroids(sample: np.ndarray, num_cells: int, seed: int, iterations: int) -> np.ndarray:
    """Seeded spherical k-means (k-means++ init, Lloyd steps): unit float32 centroids.

    Deterministic for a given sample order, ``seed`` and machine.  Returns at most
    ``len(sample)`` centroids; an empty cluster keeps its previous centroid.
    """
    sample = check_matrix(sample, "sample")
    check_positive_int("num_cells", num_cells)
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
        raise ValueError(f"iterations must be an integer >= 0, got {iterations!r}")
    if len(sample) == 0:
        raise ValueError("cannot fit centroids on an empty sample")
    centroids = _kmeans_plus_plus(sample, min(num_cells, len(sample)), seed)
    for _ in range(iterations):
        sums = _cluster_sums(sample, _nearest(sample, centroids), len(centroids))
        norms = np.linalg.norm(sums, axis=1)
        filled = norms > 0
        centroids[filled] = (sums[filled] / norms[filled, None]).astype(np.float32)
    return centroids


def _kmeans_plus_plus(sample: np.ndarray, k: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    chosen = [int(rng.integers(len(sample)))]
    dist = np.maximum(0.0, 1.0 - sample @ sample[chosen[0]]).astype(np.float64)
    for _ in range(1, k):
        total = dist.sum()
        if total <= 0:  # every point coincides with a centroid: take unused points
            nxt = next(i for i in range(len(sample)) if i not in set(chosen))
        else:
            nxt = int(np.searchsorted(np.cumsum(dist), rng.random() * total, side="right"))
            nxt = min(nxt, len(sample) - 1)
        chosen.append(nxt)
        dist = np.minimum(dist, np.maximum(0.0, 1.0 - sample @ sample[nxt]))
    return sample[chosen].copy()


def _cluster_sums(sample: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    order = np.argsort(labels, kind="stable")
    present, starts = np.unique(labels[order], return_index=True)
    sums = np.zeros((k, sample.shape[1]), dtype=np.float64)
    sums[present] = np.add.reduceat(sample[order].astype(np.float64), starts, axis=0)
    return sums


def _nearest(sample: np.ndarray, centroids: np.ndarray, block: int = 4096) -> np.ndarray:
    labels = np.empty(len(sample), dtype=np.int64)
    for s in range(0, len(sample), block):
        labels[s : s + block] = np.argmax(sample[s : s + block] @ centroids.T, axis=1)
    return labels


def assign_cells(
    vector: np.ndarray, centroids: np.ndarray, probes: int, margin: float,
    max_probes: int | None = None,
) -> tuple[int, list[int]]:
    """``(home cell, other probed cells)`` of one vector (multi-probe assignment).

    The home is the most similar centroid; the probed cells are the next
    ``probes - 1`` centroids plus every centroid whose similarity is within
    ``margin`` of the home's, at most ``max_probes`` cells in all (home included; the
    most similar are kept), so that on embeddings crowded into a narrow cone, where many
    centroids fall within the margin, a vector's work stays bounded.  Computed per
    vector in float64, ties to the lower index, so the result never depends on batching.
    """
    home, others, _ = _assign(vector, centroids, probes, margin, max_probes)
    return home, others


def _centroid_similarities(vector: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Similarity of one vector to each centroid, in float64 (so never batch-dependent)."""
    if vector.shape != (centroids.shape[1],):
        raise ValueError(
            f"embedding has shape {vector.shape} but the centroids have dim "
            f"{centroids.shape[1]}; every embedding must have the same dimension"
        )
    return np.asarray(centroids, dtype=np.float64) @ vector.astype(np.float64)


def _assign(
    vector: np.ndarray, centroids: np.ndarray, probes: int, margin: float,
    max_probes: int | None,
) -> tuple[int, list[int], np.ndarray]:
    sims = _centroid_similarities(vector, centroids)
    ranked = np.argsort(-sims, kind="stable")
    home = int(ranked[0])
    near = int(np.count_nonzero(sims >= sims[home] - margin))  # a prefix of ``ranked``
    count = _probe_count(near, probes, max_probes)
    return home, sorted(int(c) for c in ranked[1:count]), sims


def _probe_count(near: int, probes: int, max_probes: int | None) -> int:
    """Cells a vector is compared in, home included: ``probes``, or the ``near`` cells
    within the margin if more, at most ``max_probes`` (never fewer than ``probes``)."""
    count = max(probes, near)
    if max_probes is not None:
        count = min(count, max(max_probes, probes))
    return count


Cell = tuple[int, int]  # (coarse cell, fine cell); fine cell 0 when the coarse is undivided


def coarse_probes(
    vector: np.ndarray, centroids: np.ndarray, probes: int, margin: float,
    max_probes: int | None = None,
) -> list[tuple[int, float]]:
    """``[(coarse cell, similarity)]`` of one vector: its home first, then the cells
    :func:`assign_cells` probes, with the float64 similarity of each centroid."""
    home, others, sims = _assign(vector, centroids, probes, margin, max_probes)
    return [(cell, float(sims[cell])) for cell in [home] + others]


def fine_probes(
    vector: np.ndarray,
    coarse: Sequence[tuple[int, float, np.ndarray | None]],
    probes: int,
    margin: float,
    max_probes: int | None = None,
) -> tuple[Cell, list[Cell]]:
    """``(home cell, other probed cells)`` of one vector among two-level cells.

    ``coarse`` lists the coarse cells the vector probes, its home first, as ``(coarse
    cell, similarity to its centroid, fine centroids)``; an undivided coarse cell
    (``None`` or one fine centroid) is one cell, ``(coarse, 0)``, ranked by its coarse
    similarity. The home is the most similar fine cell of the home coarse cell.

    When none of those coarse cells is divided this is exactly :func:`assign_cells` on
    the coarse centroids (``probes`` cells, more within ``margin``, at most
    ``max_probes``). When one is divided, the vector is placed in exactly ``probes + 1``
    cells, home included: the most similar fine cells among *all* the fine cells of the
    coarse cells it probes (the coarse level's ``margin`` already chose those). No margin
    at the fine level: the fine centroids of a coarse cell are packed into its cone, so
    an absolute margin takes in more of them as they multiply and copies per vector grow
    with the corpus, recall unchanged (docs/benchmarks.md, two-level cells); and one cell
    more than ``probes`` because fine centroids, fitted on fewer vectors each, place
    vectors less surely (tests/transforms/test_semantic_dedupe.py). So a vector's copies
    stay fixed however many cells there are. Ties go to the lower
    ``(coarse, fine)``; computed per vector in float64.
    """
    if not coarse:
        raise ValueError("fine_probes needs at least the home coarse cell")
    ranked: list[tuple[float, int, int]] = []  # (-similarity, coarse, fine)
    home: tuple[float, int, int] | None = None
    divided = False
    for position, (cell, sim, centroids) in enumerate(coarse):
        if centroids is None or len(centroids) == 1:
            cands = [(-float(sim), int(cell), 0)]
        else:
            divided = True
            sims = _centroid_similarities(vector, centroids)
            cands = [(-float(s), int(cell), f) for f, s in enumerate(sims.tolist())]
        if position == 0:
            home = min(cands)
        ranked += cands
    ranked.sort()
    others = [c for c in ranked if c != home]
    if divided:
        count = probes
    else:
        best = -ranked[0][0]
        near = 1 + sum(1 for c in others if -c[0] >= best - margin)  # home included
        count = _probe_count(near, probes, max_probes) - 1
    return (home[1], home[2]), sorted((c[1], c[2]) for c in others[:count])


# ------------------------------------------------------------ cell splitting --


def num_chunks(cell_size: int, max_cell_size: int) -> int:
    """How many chunks a cell of ``cell_size`` members is split into."""
    return max(1, -(-cell_size // max_cell_size))


def chunk_of(doc_id: str, cell: object, chunks: int, seed: int) -> int:
    """The chunk of a document inside a split cell (hash based, balanced)."""
    return 0 if chunks == 1 else stable_hash(f"{cell}\x00{doc_id}", seed) % chunks


def work_units(is_home: bool, chunk: int, chunks: int) -> list[tuple[int, int, str]]:
    """The ``(i, j, slot)`` work units a cell member takes part in.

    Unit ``(i, i)`` is triangular: columns are the homes of chunk i, rows those
    homes then the probes of chunk i.  Unit ``(i, j)``, ``i != j``, compares rows
    (probes of chunk i, plus homes of chunk i when ``i < j``) with the homes of
    chunk j.  Together they compare every home pair once and every probe with every
    home of the cell.  ``slot`` is ``'home'`` (triangular), ``'row'`` or ``'col'``.
    """
    units = [(chunk, chunk, "home" if is_home else "row")]
    for other in range(chunks):
        if other == chunk:
            continue
        if not is_home or chunk < other:
            units.append((chunk, other, "row"))
        if is_home:
            units.append((other, chunk, "col"))
    return units
