"""Tests of the threshold explainer (histogram + duplicate counts per threshold)."""

from __future__ import annotations

import csv
import sys

import numpy as np
import pytest

from beam_e5.dedupe import core
from beam_e5.dedupe.explain import DEFAULT_THRESHOLDS, explain, nearest_similarities


def corpus(n: int, seed: int, dim: int = 48):
    """Clustered unit vectors with near-duplicates at 0.83 ... 0.99."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(6, dim))
    base = centers[rng.integers(6, size=n)] + rng.normal(size=(n, dim)) * 0.6
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    src = rng.integers(n, size=n // 3)
    noise = rng.normal(size=(len(src), dim))
    noise -= (noise * base[src]).sum(1, keepdims=True) * base[src]
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    sims = rng.choice([0.83, 0.87, 0.91, 0.93, 0.96, 0.99], size=(len(src), 1))
    vecs = np.vstack([base, sims * base[src] + np.sqrt(1 - sims**2) * noise])
    vecs = (vecs / np.linalg.norm(vecs, axis=1, keepdims=True)).astype(np.float32)
    return [f"id{x:05d}" for x in rng.permutation(len(vecs))], vecs


def read_tsv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def test_full_sample_counts_match_brute_force(tmp_path):
    ids, vecs = corpus(300, seed=1)
    table = explain(vecs, ids, tmp_path, sample_size=10_000, block_size=64)
    assert [row["threshold"] for row in table] == list(DEFAULT_THRESHOLDS)
    for row in table:
        want = len(core.brute_force_duplicates(ids, vecs, row["threshold"]))
        assert row["sampled"] == len(ids)
        assert row["sampled_duplicates"] == row["estimated_duplicates"] == want
    counts = [row["sampled_duplicates"] for row in table]
    assert counts == sorted(counts, reverse=True) and counts[-1] > 0
    assert (tmp_path / "nn_similarity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = read_tsv(tmp_path / "nn_similarity.tsv")
    assert [int(r["sampled_duplicates"]) for r in rows] == counts
    quantile_rows = read_tsv(tmp_path / "nn_similarity_quantiles.tsv")
    quantiles = [float(r["nn_similarity"]) for r in quantile_rows]
    assert quantiles == sorted(quantiles) and quantiles[-1] <= 1.0 + 1e-6


def test_sample_estimates_whole_set(tmp_path):
    ids, vecs = corpus(1500, seed=2)
    table = explain(vecs, ids, tmp_path, sample_size=500, seed=3, thresholds=[0.9])
    (row,) = table
    truth = len(core.brute_force_duplicates(ids, vecs, 0.9))
    assert row["sampled"] == 500
    assert abs(row["estimated_duplicates"] - truth) < 0.25 * truth
    again = explain(vecs, ids, tmp_path / "again", sample_size=500, seed=3, thresholds=[0.9])
    assert again == table  # deterministic


def test_nearest_similarities_match_naive():
    ids, vecs = corpus(40, seed=4)
    sample = np.array([0, 5, 17, 39])
    nearest, earlier = nearest_similarities(vecs, ids, sample, block_size=7)
    full = vecs.astype(np.float64) @ vecs.T.astype(np.float64)
    for k, i in enumerate(sample):
        others = [j for j in range(len(ids)) if j != i]
        smaller = [j for j in others if ids[j] < ids[i]]
        assert nearest[k] == pytest.approx(full[i, others].max(), abs=1e-5)
        want = full[i, smaller].max() if smaller else -1.0
        assert earlier[k] == pytest.approx(want, abs=1e-5)


def test_missing_matplotlib_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    ids, vecs = corpus(10, seed=5)
    with pytest.raises(ImportError, match=r"pip install 'beam-e5\[explain\]'"):
        explain(vecs, ids, tmp_path)


@pytest.mark.parametrize("kwargs, message", [
    ({"sample_size": 0}, "sample_size"),
    ({"thresholds": [0.9, 1.2]}, "threshold"),
    ({"block_size": -1}, "block_size"),
])
def test_argument_validation(tmp_path, kwargs, message):
    ids, vecs = corpus(10, seed=6)
    with pytest.raises(ValueError, match=message):
        explain(vecs, ids, tmp_path, **kwargs)
    with pytest.raises(ValueError, match="one id per row"):
        explain(vecs, ids[:-1], tmp_path)
    with pytest.raises(ValueError, match="float32"):
        explain(vecs.astype(np.float64), ids, tmp_path)
    with pytest.raises(ValueError, match="at least 2"):
        explain(vecs[:1], ids[:1], tmp_path)


def test_explain_sample_is_uniform_and_order_independent():
    from beam_e5.jobs.dedupe import sample_by_id

    records = [{"id": f"doc-{i:05d}"} for i in range(10_000)]
    forward = sample_by_id(iter(records), 500)
    backward = sample_by_id(iter(records[::-1]), 500)
    assert forward == backward and len(forward) == 500
    # spread over the whole input, not the first files: each tenth holds about 50
    tenths = [int(r["id"][4:]) // 1000 for r in forward]
    assert all(25 <= tenths.count(t) <= 80 for t in range(10)), tenths
    assert sample_by_id(iter(records), 500, seed=1) != forward  # the seed picks another sample
    assert len(sample_by_id(iter(records[:20]), 500)) == 20
    assert [r["id"] for r in sample_by_id(iter(records[:3]), None)] == ["doc-00000", "doc-00001",
                                                                        "doc-00002"]
