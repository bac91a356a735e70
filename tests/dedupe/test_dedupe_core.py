"""Tests of the pure numpy dedupe building blocks against a naive reference."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from synthetic import near, unit

from beam_e5.dedupe import core

THRESHOLDS = (0.85, 0.90, 0.95)


def planted_corpus(n_base: int, seed: int, clustered: bool, dim: int = 64):
    """Base vectors plus planted near-duplicates (0.86/0.91/0.96), chains, copies, ties."""
    rng = np.random.default_rng(seed)
    if clustered:
        centers = unit(rng.normal(size=(8, dim)))
        base = unit(centers[rng.integers(8, size=n_base)] + rng.normal(size=(n_base, dim)) * 0.12)
    else:
        base = unit(rng.normal(size=(n_base, dim)))
    vecs = list(base)
    for k in range(n_base // 4):  # near-duplicates around the thresholds
        vecs.append(near(base[k], (0.86, 0.91, 0.96)[k % 3], rng))
    for k in range(n_base // 4, n_base // 4 + n_base // 20):  # chains a ~ b ~ c
        b = near(base[k], 0.93, rng)
        vecs += [b, near(b, 0.93, rng)]
    for k in range(n_base // 2, n_base // 2 + n_base // 20):  # identical copies
        vecs += [base[k].copy(), base[k].copy()]
    for k in range(n_base - n_base // 20, n_base):  # exact ties: d equally close to e1, e2
        e2 = base[k].copy()
        e2[[0, 1]] = e2[[1, 0]]
        d = near(unit(base[k] + e2), 0.97, rng)
        d[1] = d[0]
        vecs += [e2, unit(d)]
    vecs = np.stack(vecs).astype(np.float32)
    ids = [f"doc-{x:06d}" for x in rng.permutation(len(vecs))]
    return ids, vecs


def naive_duplicates(ids, vecs, threshold, keys=None):
    """The rule written as plainly as possible (O(n^2) Python loop)."""
    keys = keys or [(i,) for i in ids]
    out = {}
    for d in range(len(ids)):
        best = None
        for e in range(len(ids)):
            if keys[e] < keys[d]:
                sim = core.exact_similarity(vecs[d], vecs[e])
                if sim >= threshold and (best is None or (-sim, keys[e]) < (-best[0], best[1])):
                    best = (sim, keys[e], ids[e])
        if best:
            out[ids[d]] = (best[2], best[0])
    return out


# ---------------------------------------------------------------- reference --


@pytest.mark.parametrize("threshold", THRESHOLDS)
@pytest.mark.parametrize("clustered", [False, True])
def test_brute_force_matches_naive_rule(threshold, clustered):
    ids, vecs = planted_corpus(80, seed=3, clustered=clustered)
    got = core.brute_force_duplicates(ids, vecs, threshold, block_size=16)
    assert got == naive_duplicates(ids, vecs, threshold)
    assert got  # the planted cases produce duplicates at every threshold


@pytest.mark.parametrize("keep", ["longest", "shortest"])
def test_brute_force_with_token_order(keep):
    ids, vecs = planted_corpus(60, seed=5, clustered=True)
    tokens = [int(i[-2:]) % 7 for i in ids]
    keys = [core.order_key(i, t, keep) for i, t in zip(ids, tokens)]
    got = core.brute_force_duplicates(ids, vecs, 0.9, order_keys=keys, block_size=7)
    assert got == naive_duplicates(ids, vecs, 0.9, keys)


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 40), st.integers(0, 10_000), st.sampled_from(THRESHOLDS),
       st.integers(1, 9))
def test_brute_force_property_random(n, seed, threshold, block):
    rng = np.random.default_rng(seed)
    vecs = unit(rng.normal(size=(n, 8)))
    vecs[rng.integers(n, size=n // 3)] = vecs[0]  # identical rows: exact ties
    ids = [f"{x:03d}" for x in rng.permutation(n)]
    assert core.brute_force_duplicates(ids, vecs, threshold, block_size=block) == \
        naive_duplicates(ids, vecs, threshold)


def test_chain_is_not_transitive():
    rng = np.random.default_rng(0)
    a = unit(rng.normal(size=32))
    b = near(a, 0.92, rng)
    c = near(b, 0.92, rng)  # cos(a, c) is about 0.85 < 0.9
    got = core.brute_force_duplicates(["a", "b", "c"], np.stack([a, b, c]), 0.9)
    assert set(got) == {"b", "c"}
    assert got["b"][0] == "a" and got["c"][0] == "b"


def test_ties_go_to_smallest_id_and_identical_vectors():
    e1 = unit([3.0, 1.0, 2.0])
    e2 = e1[[1, 0, 2]]
    d = unit([1.0, 1.0, 1.2])
    assert core.exact_similarity(d, e1) == core.exact_similarity(d, e2)
    got = core.brute_force_duplicates(["z-d", "m-e2", "b-e1"], np.stack([d, e2, e1]), 0.5)
    assert got["z-d"][0] == "b-e1"
    same = core.brute_force_duplicates(["c", "a", "b"], np.stack([e1, e1, e1]), 0.99)
    assert {k: v[0] for k, v in same.items()} == {"b": "a", "c": "a"}


# ----------------------------------------------------------- small pieces --


def test_pick_best_rule():
    cands = [core.Candidate(0.91, ("c",), "c"), core.Candidate(0.95, ("d",), "d"),
             core.Candidate(0.95, ("b",), "b")]
    assert core.pick_best(cands) == core.Candidate(0.95, ("b",), "b")
    assert core.better(cands[0], cands[1]) == cands[1]
    longest = [core.Candidate(0.9, (-10, "a"), "a"), core.Candidate(0.9, (-12, "z"), "z")]
    assert core.pick_best(longest).doc_id == "z"
    with pytest.raises(ValueError, match="at least one"):
        core.pick_best([])


def test_order_keys():
    assert core.order_key("a", None, "id") == ("a",)
    assert core.order_key("a", 7, "longest") == (-7, "a")
    assert core.order_key("a", 7, "shortest") == (7, "a")
    with pytest.raises(ValueError, match="tokens"):
        core.order_key("a", None, "longest")
    with pytest.raises(ValueError, match="keep must be one of"):
        core.order_key("a", 1, "newest")


def test_exact_similarity_is_layout_independent():
    rng = np.random.default_rng(1)
    a, b = unit(rng.normal(size=(2, 384)))
    padded = np.zeros(385, dtype=np.float32)
    padded[1:] = a  # a misaligned copy
    assert core.exact_similarity(a, b) == core.exact_similarity(padded[1:], b)
    assert abs(core.exact_similarity(a, b) - float(a.astype(np.float64) @ b)) < 1e-12


@pytest.mark.parametrize("triangular", [True, False])
def test_approx_pairs_and_best_earlier_match_naive(triangular):
    rng = np.random.default_rng(2)
    rows = unit(rng.normal(size=(50, 6)))
    rows[40:] = rows[3]  # identical vectors: equal similarities
    cols = rows[:30] if triangular else unit(rng.normal(size=(40, 6)))
    pairs = [(r, c) for r in range(len(rows)) for c in range(len(cols)) if not triangular or c < r]
    row_keys = [(f"r{x:02d}",) for x in rng.permutation(50)]
    col_keys = row_keys[:30] if triangular else [(f"c{x:02d}",) for x in rng.permutation(40)]
    want: dict = {}
    for r, c in pairs:
        sim = core.exact_similarity(rows[r], cols[c])
        if sim >= 0.5:
            d, e = sorted([row_keys[r], col_keys[c]], reverse=True)
            cand = core.Candidate(sim, e, e[0])
            want[d] = core.better(want[d], cand) if d in want else cand
    for block in (1, 7, 64):
        got = {(r, c) for r, c, _ in core.approx_pairs(rows, cols, 0.5 - 1e-4, block, triangular)}
        assert got >= {(r, c) for r, c in pairs if core.exact_similarity(rows[r], cols[c]) >= 0.5}
        assert core.best_earlier(rows, cols, row_keys, col_keys, 0.5, block, triangular) == want
    assert core.compared_pairs(50, 30, True) == 30 * 29 // 2 + 20 * 30
    assert core.compared_pairs(50, 40, False) == 2000


@pytest.mark.parametrize("chunks", [1, 2, 5])
def test_work_units_cover_every_pair_once(chunks):
    homes = [("h", i, i % chunks) for i in range(23)]
    probes = [("q", i, i % chunks) for i in range(11)]
    units: dict = {}
    for kind, i, chunk in homes + probes:
        for a, b, slot in core.work_units(kind == "h", chunk, chunks):
            units.setdefault((a, b), []).append((slot, (kind, i)))
    seen = []
    for (a, b), members in units.items():
        if a == b:
            hs = [m for s, m in members if s == "home"]
            rows = hs + [m for s, m in members if s == "row"]
            seen += [frozenset((rows[r], hs[c])) for r in range(len(rows)) for c in range(len(hs))
                     if c < r]
        else:
            rows = [m for s, m in members if s == "row"]
            seen += [frozenset((x, y)) for x in rows for y in (m for s, m in members if s == "col")]
    home_ids = [("h", i) for i in range(len(homes))]
    want = [frozenset(p) for p in itertools.combinations(home_ids, 2)]
    want += [frozenset((("q", q), ("h", h))) for q in range(11) for h in range(23)]
    assert sorted(seen, key=sorted) == sorted(want, key=sorted)


def test_chunks_are_stable_and_balanced():
    assert [core.num_chunks(size, 5) for size in (0, 5, 10, 11)] == [1, 1, 2, 3]
    counts = np.bincount([core.chunk_of(f"id{i}", 3, 4, seed=0) for i in range(4000)])
    assert counts.min() > 850
    assert core.chunk_of("x", 3, 4, 0) == core.chunk_of("x", 3, 4, 0)
    assert core.stable_hash("x", 0) != core.stable_hash("x", 1)


def test_fit_centroids_deterministic_and_assign():
    ids, vecs = planted_corpus(200, seed=4, clustered=True)
    c1 = core.fit_centroids(vecs, 8, seed=7, iterations=5)
    c2 = core.fit_centroids(vecs.copy(), 8, seed=7, iterations=5)
    np.testing.assert_array_equal(c1, c2)
    np.testing.assert_allclose(np.linalg.norm(c1, axis=1), 1.0, atol=1e-5)
    assert core.fit_centroids(vecs[:3], 8, seed=0, iterations=2).shape == (3, vecs.shape[1])
    home, others = core.assign_cells(vecs[0], c1, probes=3, margin=0.0)
    sims = c1 @ vecs[0]
    assert home == int(np.argmax(sims)) and len(others) == 2 and home not in others
    _, wide = core.assign_cells(vecs[0], c1, probes=1, margin=2.0)
    assert len(wide) == 7  # every other centroid is within a margin of 2
    _, capped = core.assign_cells(vecs[0], c1, probes=1, margin=2.0, max_probes=4)
    assert capped == sorted(int(c) for c in np.argsort(-sims, kind="stable")[1:4])
    _, floor = core.assign_cells(vecs[0], c1, probes=3, margin=0.0, max_probes=1)
    assert floor == others  # the cap never cuts below ``probes``
    with pytest.raises(ValueError, match="same dimension"):
        core.assign_cells(vecs[0][:5], c1, probes=1, margin=0.0)


def test_check_rows():
    vecs = np.eye(2, dtype=np.float32)
    ids, checked = core.check_rows(("a", "b"), vecs)
    assert ids == ["a", "b"] and checked.dtype == np.float32 and checked.shape == (2, 2)
    assert core.check_rows([], np.zeros((0, 4), np.float32))[0] == []
    with pytest.raises(ValueError, match="got 1 ids for 2 vectors"):
        core.check_rows(["a"], vecs)
    with pytest.raises(ValueError, match="ids must be unique"):
        core.check_rows(["a", "a"], vecs)
    with pytest.raises(ValueError, match="2-D"):
        core.check_rows(["a", "b"], [[1.0, 0.0], [0.0, 1.0]])


def test_argument_validation_messages():
    vecs = unit(np.eye(3))
    for bad in (0, 0.0, 1.5, -0.1, "0.9", True):
        with pytest.raises(ValueError, match="threshold"):
            core.brute_force_duplicates(["a", "b", "c"], vecs, bad)
    with pytest.raises(ValueError, match="float32"):
        core.brute_force_duplicates(["a", "b", "c"], vecs.astype(np.float64), 0.9)
    with pytest.raises(ValueError, match="one id per row"):
        core.brute_force_duplicates(["a", "b"], vecs, 0.9)
    with pytest.raises(ValueError, match="unique"):
        core.brute_force_duplicates(["a", "a", "c"], vecs, 0.9)
    with pytest.raises(ValueError, match="2-D"):
        core.brute_force_duplicates(["a"], vecs[0], 0.9)
    with pytest.raises(ValueError, match="NaN"):
        core.brute_force_duplicates(["a"], np.full((1, 3), np.nan, np.float32), 0.9)
    with pytest.raises(ValueError, match="block_size"):
        core.brute_force_duplicates(["a", "b", "c"], vecs, 0.9, block_size=0)
    with pytest.raises(ValueError, match="end with its document id"):
        core.brute_force_duplicates(["a", "b", "c"], vecs, 0.9, order_keys=[(1,), (2,), (3,)])
    with pytest.raises(ValueError, match="empty sample"):
        core.fit_centroids(np.zeros((0, 3), np.float32), 2, 0, 1)
    assert core.brute_force_duplicates([], np.zeros((0, 3), np.float32), 0.9) == {}


def test_fine_probes_of_divided_coarse_cells():
    axes = np.eye(4, dtype=np.float64)  # coarse cell 5 divided into four fine cells
    vec = np.array([0.8, 0.6, 0.0, 0.0], dtype=np.float32)
    coarse = [(5, 0.9, axes), (7, 0.3, None)]  # home coarse 5, probes undivided coarse 7
    # fine cells met: probes + 1 = 4 cells, ranked over both coarse cells, ties to the
    # lower (coarse, fine): (5, 2) and (5, 3) both have similarity 0
    assert core.fine_probes(vec, coarse, probes=3, margin=0.05) == ((5, 0), [(5, 1), (5, 2),
                                                                            (7, 0)])
    assert core.fine_probes(vec, coarse, probes=1, margin=0.05) == ((5, 0), [(5, 1)])
    # no margin at the fine level (the coarse level had it), and max_probes never cuts
    # below probes + 1
    tie = np.array([0.6, 0.58, 0.55, 0.0], dtype=np.float32)
    assert core.fine_probes(tie, coarse, 1, 0.1) == ((5, 0), [(5, 1)])
    assert core.fine_probes(vec, coarse, 3, 0.05, max_probes=2) == ((5, 0), [(5, 1), (5, 2),
                                                                            (7, 0)])
    # a fine cell of another coarse cell nearer than the home's: probed first, the home
    # stays in the home coarse cell
    nearer = [(5, 0.9, axes), (7, 0.3, np.array([[0.8, 0.6, 0.0, 0.0], [0, 0, 0, 1.0]]))]
    assert core.fine_probes(vec, nearer, probes=1, margin=0.0) == ((5, 0), [(7, 0)])
    with pytest.raises(ValueError, match="same dimension"):
        core.fine_probes(vec[:3], coarse, 1, 0.0)


def test_fine_probes_without_division_is_assign_cells():
    """Undivided coarse cells are cells: the same home and probes as one level."""
    rng = np.random.default_rng(2)
    centroids = unit(rng.normal(size=(30, 8))).astype(np.float64)
    vecs = unit(rng.normal(size=(200, 8)))
    for probes, margin, max_probes in [(3, 0.05, 12), (1, 0.3, 4), (2, 2.0, 6), (3, 0.0, None)]:
        for vec in vecs:
            home, others = core.assign_cells(vec, centroids, probes, margin, max_probes)
            coarse = core.coarse_probes(vec, centroids, probes, margin, max_probes)
            assert [c for c, _ in coarse] == [home] + others
            fine = core.fine_probes(vec, [(c, s, None) for c, s in coarse], probes, margin,
                                    max_probes)
            assert fine == ((home, 0), [(c, 0) for c in others])


def test_fine_probes_fixed_however_dense_the_fine_cells():
    """Dense fine cells all within the margin in four coarse cells: probes + 1 cells per
    vector in all (the margin widened the probes per coarse cell before)."""
    rng = np.random.default_rng(3)
    vec = unit(rng.normal(size=16))
    coarse = [(c, 0.5, unit(vec + 0.01 * rng.normal(size=(40, 16))).astype(np.float64))
              for c in range(4)]
    home, others = core.fine_probes(vec, coarse, probes=3, margin=0.05, max_probes=12)
    assert home[0] == 0 and len(others) == 3 and home not in others
