"""What semantic dedupe changed to hold less memory decides exactly what it decided before:
the bounded k-means sample and the fine cells fitted only where a coarse cell is divided."""

from __future__ import annotations

import random

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.util import assert_that
from synthetic import unit

from beam_e5.dedupe import core
from beam_e5.model.hardware import MMAP_THRESHOLD_BYTES, return_large_blocks
from beam_e5.transforms import semantic_dedupe as sd


def points(n: int, dim: int = 16, seed: int = 0) -> list[sd.Point]:
    rng = np.random.default_rng(seed)
    vecs = unit(rng.normal(size=(n, dim)))
    return [sd.to_point({"id": f"doc-{k:05d}", "embedding": v}, "id") for k, v in enumerate(vecs)]


def sample_model(pts: list[sd.Point], cfg: sd.SemanticDedupeConfig,
                 fine: bool) -> np.ndarray | None:
    """The rule by definition: k-means on the ``sample_size`` smallest ``(id hash, id)``."""
    ranked = sorted(pts, key=lambda p: (core.stable_hash(p.doc_id, cfg.seed), p.doc_id))
    cells = cfg.fine_cells_for(len(pts)) if fine else cfg.cells_for(len(pts))
    if fine and cells == 1:
        return None
    sample = np.stack([p.vector for p in ranked[: cfg.sample_size]])
    return core.fit_centroids(sample, cells, cfg.seed, cfg.kmeans_iterations).astype(np.float64)


def combine_in_pieces(fn: sd.FitCellsFn, pts: list[sd.Point], rng: random.Random):
    """FitCellsFn as a runner may drive it: shuffled inputs, bundles of any size, merges of
    any grouping, accumulators merged again."""
    pts = pts[:]
    rng.shuffle(pts)
    accs, start = [], 0
    while start < len(pts):
        end = start + rng.randint(1, len(pts) // 3)
        acc = fn.create_accumulator()
        for p in pts[start:end]:
            acc = fn.add_input(acc, p)
        accs.append(acc)
        start = end
    while len(accs) > 1:
        take = rng.randint(2, len(accs))
        accs = [fn.merge_accumulators(accs[:take])] + accs[take:]
    return fn.extract_output(accs[0])


@pytest.mark.parametrize("n, sample_size", [(40, 50), (400, 50), (1_000, 64), (333, 7)])
def test_bounded_sample_fits_what_the_whole_sample_rule_fits(n, sample_size):
    """However the inputs are split and merged, the accumulator never holds more than
    sample_size * 9 / 8 + 1 points, and the centroids are bit for bit those of k-means
    on the sample_size smallest id hashes."""
    cfg = sd.SemanticDedupeConfig(sample_size=sample_size, target_cell_size=10)
    pts = points(n)
    expected = sample_model(pts, cfg, fine=False)
    fn = sd.FitCellsFn(cfg)
    for seed in range(4):
        model = combine_in_pieces(fn, pts, random.Random(seed))
        assert model.corpus_size == n
        assert model.centroids.dtype == np.float64
        assert np.array_equal(model.centroids, expected)
    acc, peak = fn.create_accumulator(), 0
    for p in pts:
        acc = fn.add_input(acc, p)
        peak = max(peak, len(acc[1]))
    assert peak <= sample_size + sample_size // 8 + 1
    assert n <= sample_size or acc[2] is not None  # once full, later points are turned away


def _same_model(kv) -> tuple[int, bool, bool]:
    cell, got = kv
    (new,), (old,) = got["new"], got["old"]
    if old.centroids is None:
        return cell, new.centroids is None and new.corpus_size == old.corpus_size, False
    same = new.centroids is not None and np.array_equal(new.centroids, old.centroids)
    return cell, same and new.corpus_size == old.corpus_size, True


def _all_same_both_kinds(rows) -> None:
    assert rows and all(same for _, same, _ in rows), rows
    assert {divided for _, _, divided in rows} == {True, False}, rows


def test_fine_models_only_collect_divided_cells_and_equal_fitting_every_cell():
    """Fine cells fitted only where fine_cells_for divides a coarse cell give every coarse
    cell the model CombinePerKey(FitCellsFn(fine=True)) over all its homes gave it: the
    same centroids, bit for bit, where it is divided, none where it stays whole."""
    cfg = sd.SemanticDedupeConfig(threshold=0.9, sample_size=100, target_cell_size=10)
    records = [{"id": p.doc_id, "embedding": p.vector} for p in points(700, seed=5)]
    with beam.Pipeline() as p:
        pts = p | beam.Create(records) | beam.Map(sd.to_point, "id")
        model = pts | "Fit" >> beam.CombineGlobally(sd.FitCellsFn(cfg))
        coarse = pts | beam.ParDo(sd.CoarseCellsFn(cfg), beam.pvalue.AsSingleton(model))
        new = sd._fine_models(coarse, cfg, {})
        old = (coarse | "Homes" >> beam.Map(lambda c: (c.home, c.point))  # the old graph
               | "FitAll" >> beam.CombinePerKey(sd.FitCellsFn(cfg, fine=True)))
        joined = {"new": new, "old": old} | beam.CoGroupByKey() | beam.Map(_same_model)
        assert_that(joined, _all_same_both_kinds)


def test_return_large_blocks_fixes_the_threshold_unless_the_user_set_it():
    env: dict[str, str] = {}
    fixed = return_large_blocks(env)
    assert isinstance(fixed, bool)
    if fixed:  # glibc: mallopt accepted it, and worker processes inherit it
        assert env == {"MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD_BYTES)}
    mine = {"MALLOC_MMAP_THRESHOLD_": "65536"}
    assert return_large_blocks(mine) is False and mine == {"MALLOC_MMAP_THRESHOLD_": "65536"}


def test_sliced_path_recomputing_the_cells_decides_what_one_shuffle_decides(tmp_path):
    """The sliced path places every record in its coarse cells again where it needs them
    (count, divided homes, each slice) instead of holding them: with coarse cells that are
    divided and cells split in chunks, the same duplicates, similarities and kept records as
    the one-shuffle graph, which materialises them once."""
    from test_semantic_dedupe import planted_records, run_dedupe

    records = planted_records(300, seed=4, clustered=False)
    base = dict(threshold=0.86, sample_size=60, target_cell_size=10, max_cell_size=40)
    configs = {f"s{k}": sd.SemanticDedupeConfig(**base, slices=k) for k in (1, 4)}
    outputs, result = run_dedupe(records, configs, tmp_path)
    (kept_1, dups_1), (kept_4, dups_4) = outputs["s1"], outputs["s4"]
    assert dups_4 == dups_1 and len(dups_1) > 50
    assert sorted(r["id"] for r in kept_4) == sorted(r["id"] for r in kept_1)
    assert len(kept_1) + len(dups_1) == len(records)
    cells = result.metrics().query(beam.metrics.MetricsFilter().with_step("Dedupes4")
                                   .with_name("dedupe_cells"))["counters"]
    assert sum(c.committed for c in cells) > 6  # past the 6 coarse cells: some were divided
