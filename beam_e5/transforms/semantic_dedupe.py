"""Semantic (cosine) near-duplicate removal as a Beam transform that scales out.

The rule is the one of :mod:`beam_e5.dedupe.core`: a document is a duplicate when an
earlier document (in the ``keep`` order) has cosine similarity >= ``threshold``.

Pipeline (no step collects the corpus or all pairs on one worker)::

    points --CombineGlobally(sample by id hash, fit k-means)--> centroids (side input)
    points --coarse home + probed coarse cells, one element per vector--> coarse
    coarse --homes counted per coarse cell; the homes of the cells to divide only:
           CombinePerKey(sample, fit k-means)--> fine centroids
    coarse --place in cells (fine centroids: multimap side input), keys only--> count per cell
    coarse --place in cells again, route by cell size (side input)--> (cell, chunk i, chunk j)
           --GroupByKey--> blocked cosine, exact check --> (d, Candidate e)
           --CombinePerKey(pick best)--> CoGroupByKey with records --> kept / duplicates

Each vector lives in one *home* cell (nearest centroid) and is compared, as a probe,
with the homes of its next ``probes - 1`` cells and of every cell within
``probe_margin`` of its best, at most ``max_probes`` cells in all, so a pair is found when
either one probes the other's home.

Cells grow with the corpus without a global sample that grows with it: the global k-means
fits at most ``sample_size / 10`` coarse cells on ``sample_size`` vectors; with
``num_cells='auto'``, every coarse cell whose homes exceed ``2 * probes`` target-sized cells
is divided again by its own k-means on at most ``sample_size`` of its homes (in parallel, one
coarse cell per worker at a time). A vector's home is the nearest fine cell of its home
coarse cell, and it probes the next ``probes`` fine cells among those of all the coarse
cells it probes (:func:`core.fine_probes`): ``probes + 1`` copies per vector however many
cells there are (up to ``max_probes`` fine cells per probed coarse cell would let copies per
vector grow with the corpus: docs/benchmarks.md, two-level cells). The placement is computed
twice (count, then route) instead of materialising the placed copies. On the DirectRunner
(``slices`` > 1, see :class:`SemanticDedupeConfig`) the work units run in sequential slices
by cell, the coarse cells are recomputed from the records wherever they are needed instead
of materialised beside them, and the verdicts reach the records through a side input. So
the total sample, the number of cells and the copies grow linearly with the corpus (cells
stay near ``target_cell_size`` homes on average) up to ``(sample_size / 10) ** 2`` cells, 4 million
with the defaults; the pairs compared grow faster as far as cells grow unequal
(docs/benchmarks.md, two-level cells). The memory of any one step stays bounded by
``sample_size`` vectors, a cell's work unit (at most ``max_cell_size`` rows and columns),
or the centroids of the coarse cells a worker meets. Reported pairs are always exact
(precision 1.0); recall is >= 0.99 with the default probes and probe_margin on the
synthetic and real-text tests and the benchmark (tests/transforms/test_semantic_dedupe.py,
tests/dedupe/test_dedupe_realtext.py, bench/bench_dedupe.py).
"""

from __future__ import annotations

import dataclasses
import heapq
from collections import OrderedDict
from typing import Any, NamedTuple

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from beam_e5.dedupe import core
from beam_e5.errors import ConfigError
from beam_e5.records import METRICS_NAMESPACE, is_chunk_row, is_document_row
from beam_e5.transforms.streaming import require_bounded

MIN_SAMPLE_PER_CELL = 10  # 'auto' never asks k-means for more centroids than sample/10
# SemanticDedupeConfig.slices on the local DirectRunner (bench/bench_stage_memory.py)
LOCAL_SLICES = 16


class Point(NamedTuple):
    """One input record as semantic dedupe sees it."""

    doc_id: str
    key: core.OrderKey  # see core.order_key
    vector: np.ndarray  # the record's embedding: float32, 1-D


@dataclasses.dataclass(frozen=True)
class SemanticDedupeConfig:
    """Settings of :class:`SemanticDedupe`; validated on construction.

    threshold: cosine similarity at or above which a later document is a duplicate.
    keep: 'id' (smallest id kept), 'longest' or 'shortest' (by the int ``tokens``
        field, then id).
    sample_size: documents (smallest id hash) the k-means centroids are fitted on.
    num_cells: number of k-means cells, or 'auto' = corpus size / target_cell_size
        (1 cell, i.e. exact, when that is <= 2 * probes): at most sample_size / 10 coarse
        cells, each divided again by its own k-means when it is too big (two levels, so
        cells keep their size up to (sample_size / 10) ** 2 cells). A number is used as is,
        one level.
    target_cell_size: average home-cell size 'auto' aims for; work grows linearly
        with corpus size at a fixed cell size.
    probes: cells each vector is compared in (its home and the next probes - 1); with
        two levels, coarse cells so, then probes + 1 fine cells among theirs.
    max_probes: at most this many cells per vector (home included) however many fall
        within ``probe_margin``: bounds the work on crowded embeddings.
    probe_margin: also probe every cell whose centroid similarity is within this
        margin of the best one (protects recall near cell borders; with two levels, at
        the coarse level).
    max_cell_size: cells with more members are split into chunks and every chunk
        pair is its own work unit (no hot key).
    block_size: rows/columns per float32 matrix product inside a work unit.
    kmeans_iterations: Lloyd iterations after seeded k-means++ initialisation.
    seed: seeds the sample hash, k-means and chunk hashes.
    slices: 1 (the default, and what a distributed runner should use): one shuffle of the
        work units and a CoGroupByKey of the records with their verdicts. More (the
        DirectRunner, which holds a whole shuffle in memory, gets ``LOCAL_SLICES`` through
        :func:`for_runner`): the work units are routed, grouped and compared in this many
        branches by a hash of the cell, one after the other (each waits for the count of
        the previous one's output through a side input), and the records meet their
        verdicts through a side input of the duplicates (one entry per duplicate), so no
        shuffle carries the records; the coarse cells are computed again from the records
        by each step that needs them rather than held as a second copy of every vector. The
        result is the same for any value.
    """

    threshold: float = 0.9
    keep: str = "id"
    sample_size: int = 20_000
    num_cells: int | str = "auto"
    target_cell_size: int = 1_000
    probes: int = 3
    probe_margin: float = 0.05
    max_probes: int = 12
    max_cell_size: int = 5_000
    block_size: int = 1_024
    kmeans_iterations: int = 10
    seed: int = 0
    slices: int = 1

    def __post_init__(self) -> None:
        try:
            core.check_threshold(self.threshold)
            for name in ("sample_size", "target_cell_size", "probes", "max_probes",
                         "max_cell_size", "block_size", "slices"):
                core.check_positive_int(name, getattr(self, name))
            if self.num_cells != "auto":
                core.check_positive_int("num_cells (or 'auto')", self.num_cells)
            _check_nonnegative_int("kmeans_iterations", self.kmeans_iterations)
            _check_nonnegative_int("seed", self.seed)
        except ValueError as exc:
            raise ConfigError(f"semantic dedupe: {exc}") from None
        if self.keep not in core.KEEP_CHOICES:
            raise ConfigError(
                f"semantic dedupe: keep must be one of {core.KEEP_CHOICES}, got {self.keep!r}"
            )
        margin = self.probe_margin
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0 <= margin <= 2:
            raise ConfigError(
                f"semantic dedupe: probe_margin must be a number in [0, 2], got {margin!r}; "
                "0.05 is a good default, larger raises recall and cost"
            )

    def fine_cells_for(self, coarse_homes: int) -> int:
        """Into how many fine cells a coarse cell with ``coarse_homes`` homes is divided."""
        if self.num_cells != "auto":
            return 1
        return SemanticDedupeConfig.cells_for(
            dataclasses.replace(self, num_cells="auto"), coarse_homes)

    def cells_for(self, corpus_size: int) -> int:
        """The number of k-means cells for a corpus of ``corpus_size`` documents."""
        if self.num_cells != "auto":
            return int(self.num_cells)
        by_size = round(corpus_size / self.target_cell_size)
        if by_size <= 2 * self.probes:  # probing would compare about as much as one cell
            return 1
        return max(1, min(by_size, self.sample_size // MIN_SAMPLE_PER_CELL))


LOCAL_RUNNERS = (None, "DirectRunner", "direct", "SwitchingDirectRunner",
                 "BundleBasedDirectRunner")


def is_local_runner(runner: Any) -> bool:
    """Whether ``runner`` (a name, a runner object or None) is the DirectRunner."""
    name = runner if isinstance(runner, str) or runner is None else type(runner).__name__
    return name in LOCAL_RUNNERS


def for_runner(config: SemanticDedupeConfig, runner: Any) -> SemanticDedupeConfig:
    """``config`` with ``LOCAL_SLICES`` slices on the DirectRunner (it holds whole shuffles
    in memory), unchanged on any other runner or when ``slices`` was set."""
    if is_local_runner(runner) and config.slices == 1:
        return dataclasses.replace(config, slices=LOCAL_SLICES)
    return config


def _check_nonnegative_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")


class CellModel(NamedTuple):
    """The fitted centroids (float64, unit rows; None for an empty corpus)."""

    centroids: np.ndarray | None
    corpus_size: int


# ------------------------------------------------------------------ records --


def to_point(record: dict[str, Any], keep: str) -> Point:
    """Validate one input record and project it to a :class:`Point`."""
    doc_id = record.get("id") if isinstance(record, dict) else None
    if not isinstance(doc_id, str):
        raise ValueError(f"semantic dedupe needs a str 'id' on every record, got {doc_id!r}")
    vec = record.get("embedding")
    if not isinstance(vec, np.ndarray) or vec.ndim != 1 or vec.dtype != np.float32:
        raise ValueError(
            f"record {doc_id!r}: 'embedding' must be a 1-D float32 numpy array, "
            f"got {type(vec).__name__} {getattr(vec, 'dtype', '')} {getattr(vec, 'shape', '')}"
        )
    if not np.isfinite(vec).all():
        raise ValueError(f"record {doc_id!r}: 'embedding' contains NaN or infinite values")
    return Point(doc_id, core.order_key(doc_id, record.get("tokens"), keep), vec)


def _keyed_by_id(record: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    doc_id = record.get("id") if isinstance(record, dict) else None
    if not isinstance(doc_id, str):
        raise ValueError(f"semantic dedupe needs a str 'id' on every record, got {doc_id!r}")
    return doc_id, record


def _check_unique_id(id_count: tuple[str, int]) -> None:
    doc_id, count = id_count
    if count != 1:
        raise ValueError(_not_unique(doc_id, count))


def _not_unique(doc_id: str, count: int) -> str:
    return (f"semantic dedupe: id {doc_id!r} occurs {count} times; ids must be unique (run "
            "exact dedupe first or make the id field unique)")


# ------------------------------------------------------- sample + centroids --


class _Sampled(NamedTuple):
    """A point in the k-means sample, which keeps the smallest ``(rank, doc_id)``."""

    rank: int  # core.stable_hash of the id
    doc_id: str
    vector: np.ndarray


def _sample_order(item: _Sampled) -> tuple[int, str]:
    return item.rank, item.doc_id


class FitCellsFn(beam.CombineFn):
    """Keeps the ``sample_size`` points with the smallest id hash, then fits k-means.

    The accumulator is ``(count, items, bound)``: at most ``sample_size`` items plus
    ``sample_size // 8`` not yet trimmed, and once a trim has filled the sample, ``bound``
    is its largest ``(rank, doc_id)``: a point above it can never enter the sample, so it
    is dropped on arrival. The corpus is never collected; the result does not depend on
    bundling (the sample is the ``sample_size`` smallest keys whatever the order). With
    ``fine``, it divides one coarse cell (``fine_cells_for`` its home count; no k-means,
    centroids ``None``, when the cell stays whole).
    """

    def __init__(self, config: SemanticDedupeConfig, fine: bool = False) -> None:
        self._config = config
        self._fine = fine

    def create_accumulator(self) -> tuple[int, list, tuple | None]:
        return 0, [], None

    def add_input(self, acc: tuple[int, list, tuple | None], point: Point):
        count, items, bound = acc
        item = _Sampled(core.stable_hash(point.doc_id, self._config.seed), point.doc_id,
                        point.vector)
        if bound is None or _sample_order(item) < bound:
            items.append(item)
            if len(items) >= self._config.sample_size + self._config.sample_size // 8 + 1:
                items, bound = self._trim(items)
        return count + 1, items, bound

    def merge_accumulators(self, accs) -> tuple[int, list, tuple | None]:
        count, items = 0, []
        for acc_count, acc_items, _ in accs:
            count += acc_count
            items, _ = self._trim(items + acc_items)
        return count, *self._trim(items)

    def extract_output(self, acc: tuple[int, list, tuple | None]) -> CellModel:
        count, items, _ = acc
        items = sorted(self._trim(items)[0], key=_sample_order)
        if not items:
            return CellModel(None, count)
        dims = {item.vector.shape for item in items}
        if len(dims) > 1:
            raise ValueError(
                f"embeddings have different shapes {sorted(dims)}; every embedding must "
                "come from the same model"
            )
        cfg = self._config
        cells = cfg.fine_cells_for(count) if self._fine else cfg.cells_for(count)
        if self._fine and cells == 1:
            return CellModel(None, count)
        sample = np.stack([item.vector for item in items])  # float32: to_point checked
        del items
        centroids = core.fit_centroids(sample, cells, cfg.seed, cfg.kmeans_iterations)
        return CellModel(centroids.astype(np.float64), count)

    def _trim(self, items: list) -> tuple[list, tuple | None]:
        """The ``sample_size`` smallest items, and the bound once the sample is full."""
        size = self._config.sample_size
        if len(items) <= size:
            return items, None
        kept = heapq.nsmallest(size, items, key=_sample_order)
        return kept, _sample_order(kept[-1])


class Coarse(NamedTuple):
    """A point with the coarse cells it probes, one element per vector however many."""

    point: Point
    cells: tuple[tuple[int, float], ...]  # (coarse cell, similarity): its home first

    @property
    def home(self) -> int:
        return self.cells[0][0]


class CoarseCellsFn(beam.DoFn):
    """``point -> Coarse``: the coarse cells of :func:`core.coarse_probes`."""

    def __init__(self, config: SemanticDedupeConfig) -> None:
        self._config = config

    def process(self, point: Point, model: CellModel):
        yield _placed(point, self._config, model)


def _placed(point: Point, config: SemanticDedupeConfig, model: CellModel) -> Coarse:
    return Coarse(point, tuple(core.coarse_probes(point.vector, model.centroids, config.probes,
                                                  config.probe_margin, config.max_probes)))


def coarse_of(element: Coarse | dict[str, Any], config: SemanticDedupeConfig,
              coarse_model: CellModel | None = None) -> Coarse:
    """``element`` itself when it is a :class:`Coarse` (one slice: the coarse cells are
    materialised once), else the input record placed in its coarse cells by
    ``coarse_model`` (the sliced path: each step that needs them recomputes them from the
    records, which it holds for the join anyway, instead of holding a second copy of every
    vector; the placement is a pure function of the vector)."""
    if isinstance(element, Coarse):
        return element
    return _placed(to_point(element, config.keep), config, coarse_model)


def _home_cell(element: Coarse | dict[str, Any], config: SemanticDedupeConfig,
               coarse_model: CellModel | None = None) -> int:
    return coarse_of(element, config, coarse_model).home


def _divided_home(element: Coarse | dict[str, Any], homes: dict[int, int],
                  config: SemanticDedupeConfig, coarse_model: CellModel | None = None):
    """``(home, point)`` of a vector whose home coarse cell is divided, else nothing."""
    element = coarse_of(element, config, coarse_model)
    if config.fine_cells_for(homes[element.home]) > 1:
        yield element.home, element.point


def _whole_cell(cell_homes: tuple[int, int], config: SemanticDedupeConfig):
    """The model of a coarse cell that stays whole: no centroids, no points needed."""
    cell, homes = cell_homes
    if config.fine_cells_for(homes) == 1:
        yield cell, CellModel(None, homes)


def _fine_models(coarse, config: SemanticDedupeConfig, placed: dict[str, Any]):
    """``(coarse cell, CellModel)`` for every coarse cell with homes, as
    ``CombinePerKey(FitCellsFn(fine=True))`` over all its homes gives it; but the homes are
    counted first and only those of the cells ``fine_cells_for`` divides are collected (under
    2 million vectors, with the defaults, usually none), instead of every vector of the
    corpus in the accumulators of cells that stay whole."""
    homes = (coarse | "HomeCells" >> beam.Map(_home_cell, config, **placed)
             | "CountHomes" >> beam.combiners.Count.PerElement())
    fitted = (coarse
              | "DividedHomes" >> beam.FlatMap(_divided_home, beam.pvalue.AsDict(homes), config,
                                               **placed)
              | "FitFineCells" >> beam.CombinePerKey(FitCellsFn(config, fine=True)))
    whole = homes | "WholeCells" >> beam.FlatMap(_whole_cell, config)
    return (fitted, whole) | "FineModels" >> beam.Flatten()


class CellsOfFn(beam.DoFn):
    """Base of the two steps that place a vector in its cells, ``[(cell, is_home)]``.

    One level (no ``models``): the coarse cells are the cells, ``(coarse, 0)``. Two
    levels: :func:`core.fine_probes` over the fine centroids of the coarse cells the
    vector probes, fetched per coarse cell from a multimap side input; each instance
    keeps the ones it fetched (they never change) in an LRU bounded by
    ``MODEL_CACHE_BYTES``, so a worker holds only the coarse cells it meets and fetches
    and decodes each about once instead of once per vector. The placement is a pure
    function of the vector, so counting cells and routing to work units can each
    compute it (the placed copies are never materialised between the two).
    """

    MODEL_CACHE_BYTES = 256 << 20

    def __init__(self, config: SemanticDedupeConfig) -> None:
        self._config = config
        self._cache: OrderedDict[Any, np.ndarray | None] = OrderedDict()
        self._cached_bytes = 0

    def setup(self) -> None:
        self._cache, self._cached_bytes = OrderedDict(), 0

    def _centroids(self, coarse: Any, models) -> tuple[bool, np.ndarray | None]:
        if coarse in self._cache:
            self._cache.move_to_end(coarse)
            return True, self._cache[coarse]
        found = list(models[coarse])  # a multimap side input: looked up per coarse cell
        if not found:  # a coarse cell without homes: nothing to compare with there
            return False, None
        centroids = found[0].centroids
        self._cache[coarse] = centroids
        self._cached_bytes += 0 if centroids is None else centroids.nbytes
        while self._cached_bytes > self.MODEL_CACHE_BYTES and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            self._cached_bytes -= 0 if old is None else old.nbytes
        return True, centroids

    def cells(self, element: Coarse, models=None) -> list[tuple[core.Cell, bool]]:
        if models is None:
            return ([((element.home, 0), True)]
                    + [((cell, 0), False) for cell, _ in element.cells[1:]])
        fine = []
        for cell, sim in element.cells:
            has_homes, centroids = self._centroids(cell, models)
            if has_homes:  # always true of the home cell: the vector is a home there
                fine.append((cell, sim, centroids))
        cfg = self._config
        home, others = core.fine_probes(element.point.vector, fine, cfg.probes,
                                        cfg.probe_margin, cfg.max_probes)
        return [(home, True)] + [(cell, False) for cell in others]


class CountCellsFn(CellsOfFn):
    """Emits the cell of every placed copy (only the key: to count members per cell)."""

    def process(self, element: Coarse | dict[str, Any], models=None, coarse_model=None):
        for cell, _ in self.cells(coarse_of(element, self._config, coarse_model), models):
            yield cell


class CellMetricsFn(beam.DoFn):
    """Records per-cell metrics and passes ``(cell, size)`` on."""

    def __init__(self) -> None:
        self._cells = Metrics.counter(METRICS_NAMESPACE, "dedupe_cells")
        self._largest = Metrics.distribution(METRICS_NAMESPACE, "dedupe_largest_cell")

    def process(self, cell_size: tuple[Any, int]):
        _, size = cell_size
        self._cells.inc()
        self._largest.update(size)
        yield cell_size


def slice_of(key: object, slices: int, seed: int) -> int:
    """The branch (0 .. slices - 1) of a cell or an id when shuffles run in slices."""
    return 0 if slices == 1 else core.stable_hash(f"slice\x00{key}", seed) % slices


class ToWorkUnitsFn(CellsOfFn):
    """Places a vector in its cells and routes each copy to the work units of its
    (possibly split) cell; with ``slices`` > 1, only the copies whose cell falls in slice
    ``part`` (``after``: the previous slice's count, a side input only waited for)."""

    def __init__(self, config: SemanticDedupeConfig, part: int = 0) -> None:
        super().__init__(config)
        self._part = part

    def process(self, element: Coarse | dict[str, Any], sizes: dict[Any, int], models=None,
                after=None, coarse_model=None):
        element = coarse_of(element, self._config, coarse_model)
        point = element.point
        cfg = self._config
        for cell, is_home in self.cells(element, models):
            if cfg.slices > 1 and slice_of(cell, cfg.slices, cfg.seed) != self._part:
                continue
            chunks = core.num_chunks(sizes[cell], self._config.max_cell_size)
            chunk = core.chunk_of(point.doc_id, cell, chunks, self._config.seed)
            for i, j, slot in core.work_units(is_home, chunk, chunks):
                yield (cell, i, j), (slot, point)


def _point_key(point: Point) -> core.OrderKey:
    return point.key


class CompareUnitFn(beam.DoFn):
    """Blocked cosine inside one work unit; emits each later doc's best exact match."""

    def __init__(self, config: SemanticDedupeConfig) -> None:
        self._config = config
        self._pairs = Metrics.counter(METRICS_NAMESPACE, "dedupe_candidate_pairs")

    def process(self, element: tuple[tuple[int, int, int], list]):
        (_, i, j), members = element
        by_slot: dict[str, list[Point]] = {"home": [], "row": [], "col": []}
        for slot, point in members:
            by_slot[slot].append(point)
        for points in by_slot.values():
            points.sort(key=_point_key)
        triangular = i == j
        rows = by_slot["home"] + by_slot["row"] if triangular else by_slot["row"]
        cols = by_slot["home"] if triangular else by_slot["col"]
        if not rows or not cols:
            return
        self._pairs.inc(core.compared_pairs(len(rows), len(cols), triangular))
        row_m = np.stack([p.vector for p in rows])
        col_m = row_m[: len(cols)] if triangular else np.stack([p.vector for p in cols])
        cfg = self._config
        best = core.best_earlier(row_m, col_m, [p.key for p in rows], [p.key for p in cols],
                                 cfg.threshold, cfg.block_size, triangular)
        for later_key, cand in best.items():
            yield later_key[-1], cand


class PickBestFn(beam.CombineFn):
    """Per duplicate: the most similar earlier document, ties to the smaller key."""

    def create_accumulator(self) -> core.Candidate | None:
        return None

    def add_input(self, acc: core.Candidate | None, cand: core.Candidate) -> core.Candidate:
        return cand if acc is None else core.better(acc, cand)

    def merge_accumulators(self, accs) -> core.Candidate | None:
        best = None
        for acc in accs:
            if acc is not None:
                best = acc if best is None else core.better(best, acc)
        return best

    def extract_output(self, acc: core.Candidate | None) -> core.Candidate | None:
        return acc


class SplitKeptFn(beam.DoFn):
    """Joins records with their best candidate: main output kept, tag 'duplicates'."""

    def __init__(self) -> None:
        self._dups = Metrics.counter(METRICS_NAMESPACE, "semantic_duplicates")

    def process(self, element: tuple[str, dict[str, list]]):
        doc_id, joined = element
        docs, best = list(joined["doc"]), list(joined["best"])
        if len(docs) != 1:
            raise ValueError(_not_unique(doc_id, len(docs)))
        if not best:
            yield docs[0]
            return
        self._dups.inc()
        yield beam.pvalue.TaggedOutput("duplicates", _duplicate(doc_id, best[0]))


def _duplicate(doc_id: str, cand: core.Candidate) -> dict[str, Any]:
    return {"id": doc_id, "duplicate_of": cand.doc_id, "similarity": float(cand.similarity),
            "kind": "semantic"}


class SplitByBestFn(beam.DoFn):
    """A record and the verdicts (``{later id: Candidate}``, a side input): main output
    kept, tag 'duplicates'."""

    def __init__(self) -> None:
        self._dups = Metrics.counter(METRICS_NAMESPACE, "semantic_duplicates")

    def process(self, record: dict[str, Any], best: dict[str, core.Candidate]):
        doc_id, record = _keyed_by_id(record)
        cand = best.get(doc_id)
        if cand is None:
            yield record
            return
        self._dups.inc()
        yield beam.pvalue.TaggedOutput("duplicates", _duplicate(doc_id, cand))


# ---------------------------------------------------------------- transform --


class SemanticDedupe(beam.PTransform):
    """Split embedded documents into ``kept`` and semantic ``duplicates``.

    Input: dicts with a unique str ``id`` and a float32 L2-normalised ``embedding``
    (plus an int ``tokens`` for keep='longest'/'shortest'); other keys pass through.
    Output: a tagged result; ``result.kept`` holds the input dicts of documents kept,
    unchanged, and ``result.duplicates`` holds
    ``{'id', 'duplicate_of', 'similarity', 'kind': 'semantic'}`` dicts.
    """

    def __init__(self, config: SemanticDedupeConfig) -> None:
        super().__init__()
        if not isinstance(config, SemanticDedupeConfig):
            raise ConfigError(
                f"SemanticDedupe needs a SemanticDedupeConfig, got {type(config).__name__}"
            )
        self._config = config

    def expand(self, docs):
        require_bounded(docs, "SemanticDedupe")
        cfg = self._config
        points = docs | "ToPoint" >> beam.Map(to_point, cfg.keep)
        model = points | "FitCells" >> beam.CombineGlobally(FitCellsFn(cfg))
        placed: dict[str, Any] = {}  # the coarse cells: materialised, or (sliced) recomputed
        if cfg.slices == 1:
            coarse = points | "CoarseCells" >> beam.ParDo(
                CoarseCellsFn(cfg), beam.pvalue.AsSingleton(model))
        else:
            coarse, placed = docs, {"coarse_model": beam.pvalue.AsSingleton(model)}
        fine = ()
        if cfg.num_cells == "auto":  # two levels: big coarse cells divided by their own k-means
            fine = (beam.pvalue.AsMultiMap(_fine_models(coarse, cfg, placed)),)
        sizes = (
            coarse
            | "CountCells" >> beam.ParDo(CountCellsFn(cfg), *fine, **placed)
            | "CountPerCell" >> beam.combiners.Count.PerElement()
            | "CellMetrics" >> beam.ParDo(CellMetricsFn())
        )
        best = self._compare(coarse, beam.pvalue.AsDict(sizes), fine, placed)
        return self._join(docs, best)

    def _compare(self, coarse, sizes, fine, placed: dict[str, Any]):
        """Work units -> each later document's best earlier match, slice after slice."""
        cfg = self._config
        if cfg.slices == 1:
            units = coarse | "ToWorkUnits" >> beam.ParDo(ToWorkUnitsFn(cfg), sizes, *fine)
            return (_candidates_of(units, cfg, "")
                    | "PickBest" >> beam.CombinePerKey(PickBestFn()))
        parts, after = [], {}
        for part in range(cfg.slices):
            units = coarse | f"ToWorkUnits_{part}" >> beam.ParDo(
                ToWorkUnitsFn(cfg, part), sizes, *fine, **after, **placed)
            parts.append(_candidates_of(units, cfg, f"_{part}"))
            after = _done_after(parts[-1], f"UnitsDone_{part}")
        candidates = tuple(parts) | "AllCandidates" >> beam.Flatten()
        return candidates | "PickBest" >> beam.CombinePerKey(PickBestFn())

    def _join(self, docs, best):
        """Records joined with their verdict by id: kept, or a duplicate. One slice: a
        CoGroupByKey; more: the verdicts (one per duplicate) as a side input, and the ids
        checked for uniqueness on their own, so no shuffle carries the records."""
        if self._config.slices == 1:
            keyed = docs | "KeyById" >> beam.Map(_keyed_by_id)
            return ({"doc": keyed, "best": best} | "JoinBest" >> beam.CoGroupByKey()
                    | "SplitKept" >> beam.ParDo(SplitKeptFn()).with_outputs("duplicates",
                                                                            main="kept"))
        _ = (docs
             | "Ids" >> beam.Map(lambda r: _keyed_by_id(r)[0])
             | "CountIds" >> beam.combiners.Count.PerElement()
             | "UniqueIds" >> beam.Map(_check_unique_id))
        return docs | "SplitKept" >> beam.ParDo(
            SplitByBestFn(), beam.pvalue.AsDict(best)).with_outputs("duplicates", main="kept")


def _done_after(pcoll, label: str) -> dict[str, Any]:
    """A side input (keyword ``after``) that is ready once ``pcoll`` is complete: the next
    slice waits for it, so the DirectRunner holds one slice's shuffle at a time."""
    done = pcoll | label >> beam.combiners.Count.Globally()
    return {"after": beam.pvalue.AsSingleton(done)}


def _candidates_of(units, config: SemanticDedupeConfig, tag: str):
    """Work units -> ``(later doc, Candidate)`` for the matches found in them."""
    return (units
            | f"GroupUnits{tag}" >> beam.GroupByKey()
            | f"CompareUnits{tag}" >> beam.ParDo(CompareUnitFn(config)))


class DocumentDedupe(NamedTuple):
    """What :func:`dedupe_documents` decided: PCollections of rows."""

    kept: Any  # the document rows kept (a document's only row, or its document row)
    kept_chunks: Any  # the window rows of the kept documents
    duplicates: Any  # DuplicateRecord dicts, one per dropped document


def dedupe_documents(rows, config: SemanticDedupeConfig) -> DocumentDedupe:
    """Semantic dedupe decided per document, on its document row; the window rows of a
    kept document are kept with it, those of a duplicate are dropped with it."""
    result = (rows | "DocumentRows" >> beam.Filter(is_document_row)
              | "SemanticDedupe" >> SemanticDedupe(config))
    chunks = rows | "ChunkRows" >> beam.Filter(is_chunk_row)
    return DocumentDedupe(result.kept, keep_chunks_of(result.kept, chunks), result.duplicates)


def keep_chunks_of(kept_docs, chunk_rows):
    """The window rows of the documents in ``kept_docs`` (by ``doc_id``)."""
    return ({"kept": kept_docs | "KeptIds" >> beam.Map(lambda r: (r["id"], True)),
             "chunks": chunk_rows | "ChunksByDoc" >> beam.Map(lambda r: (r["doc_id"], r))}
            | "JoinKept" >> beam.CoGroupByKey()
            | "KeptChunks" >> beam.FlatMap(
                lambda kv: kv[1]["chunks"] if kv[1]["kept"] else []))
