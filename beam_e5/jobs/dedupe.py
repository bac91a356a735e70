"""``beam-e5 dedupe``: near-duplicate removal over vectors written by an earlier run.

    beam-e5 dedupe --input 'run1/vectors-*.parquet' --output run1-deduped/ --threshold 0.92
    beam-e5 dedupe --input 'run1/vectors-*.parquet' --output explain/ --explain

The kept vectors are written with the input files' schema and metadata (model, profile, ...),
the removed ones to ``duplicates-*.parquet``, then ``manifest.json``. ``--explain`` runs no
pipeline: it samples the vectors and writes a nearest-neighbour similarity histogram and
table, to choose the threshold.
"""

from __future__ import annotations

import hashlib
import heapq
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Optional

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from beam_e5._version import __version__
from beam_e5.errors import ConfigError
from beam_e5.io.outputs import (
    OutputConfig,
    prepare_output,
    read_counts,
    record_counts,
    write_manifest,
)
from beam_e5.io.sinks import (
    WriteDuplicates,
    WriteVectors,
    read_vectors,
    table_to_records,
)
from beam_e5.jobs.embed import keep_chunks_of
from beam_e5.jobs.summary import RunSummary
from beam_e5.records import is_chunk_row, is_document_row
from beam_e5.transforms.semantic_dedupe import SemanticDedupe, SemanticDedupeConfig


@dataclass(frozen=True)
class DedupeJob:
    input: str
    output: OutputConfig
    semantic: SemanticDedupeConfig


def vectors_input_schema(pattern: str) -> pa.Schema:
    """The schema (with metadata) of the first matching vectors file; checks the columns."""
    matches = FileSystems.match([pattern])[0].metadata_list
    if not matches:
        raise ConfigError(f"no file matches {pattern!r}; point --input at vectors-*.parquet "
                          "files written by beam-e5 embed")
    with FileSystems.open(matches[0].path) as f:
        try:
            schema = pq.read_schema(f)
        except (pa.ArrowInvalid, OSError) as e:
            raise ConfigError(f"{matches[0].path} is not a readable Parquet file ({e})") from e
    missing = [c for c in ("id", "embedding") if c not in schema.names]
    if missing or not pa.types.is_fixed_size_list(schema.field("embedding").type):
        raise ConfigError(f"{matches[0].path} lacks beam-e5 vector columns "
                          "(id string, embedding fixed_size_list<float>); was it written by "
                          "beam-e5 embed?")
    return schema


def run_dedupe(job: DedupeJob, beam_args: list[str]) -> RunSummary:
    schema = vectors_input_schema(job.input)
    prepare_output(job.output)
    start = time.time()
    p = beam.Pipeline(options=PipelineOptions(beam_args))
    records = (p
               | "ReadVectors" >> beam.io.ReadFromParquetBatched(job.input)
               | "ToRecords" >> beam.FlatMap(table_to_records))
    # decided per document (its one row, or the document row of a chunked one); the window
    # rows of a kept document are kept with it, those of a duplicate dropped with it
    docs = records | "DocumentRows" >> beam.Filter(is_document_row)
    result = docs | "SemanticDedupe" >> SemanticDedupe(job.semantic)
    chunks = records | "ChunkRows" >> beam.Filter(is_chunk_row)
    kept_chunks = keep_chunks_of(result.kept, chunks)
    _ = ((result.kept, kept_chunks) | "KeptRows" >> beam.Flatten()
         | "WriteVectors" >> WriteVectors(job.output.output, schema))
    _ = result.duplicates | "WriteDuplicates" >> WriteDuplicates(job.output.output)
    record_counts(p, {"read": docs, "written": result.kept,
                      "semantic_duplicates": result.duplicates, "chunk_rows": kept_chunks},
                  job.output.output)
    p.run().wait_until_finish()
    raw = read_counts(job.output.output)
    counts = {"read": raw["read"], "invalid": 0, "exact_duplicates": 0,
              "semantic_duplicates": raw["semantic_duplicates"], "embedded": 0,
              "written": raw["written"], "chunk_rows": raw.get("chunk_rows", 0)}
    if counts["read"] != counts["written"] + counts["semantic_duplicates"]:
        raise RuntimeError(f"counts do not balance: {counts}; this is a bug, please report it")
    summary = RunSummary(counts, time.time() - start)
    write_manifest(job.output.output, {
        "beam_e5_version": __version__, "command": "dedupe", "input": job.input,
        "model": {k.decode(): v.decode() for k, v in (schema.metadata or {}).items()},
        "options": {"semantic": asdict(job.semantic), "output": asdict(job.output)},
        "counts": counts, "stats": summary.stats()})
    return summary


def sample_by_id(records: Iterable[dict], k: Optional[int], seed: int = 0) -> list[dict]:
    """A uniform, order-independent sample of ``k`` records (all if ``k`` is None), by id.

    Keeps the ``k`` records whose seeded hash of ``id`` is smallest (bottom-k sampling), in
    one pass with ``k`` records in memory; returned sorted by id.
    """
    if k is None:
        return sorted(records, key=lambda r: r["id"])
    if k < 1:
        raise ConfigError(f"--explain-max-vectors must be >= 1, got {k}")
    heap: list[tuple[int, str, dict]] = []  # max-heap on the hash, via negation
    for rec in records:
        digest = hashlib.blake2b(f"{seed}:{rec['id']}".encode("utf-8"), digest_size=8).digest()
        item = (-int.from_bytes(digest, "big"), rec["id"], rec)
        if len(heap) < k:
            heapq.heappush(heap, item)
        elif item[0] > heap[0][0]:
            heapq.heapreplace(heap, item)
    return sorted((rec for _, _, rec in heap), key=lambda r: r["id"])


def run_explain(pattern: str, out_dir: str, sample_size: int, max_vectors: Optional[int],
                seed: int = 0) -> list[dict]:
    """Histogram + table of nearest-neighbour similarities, written to the local ``out_dir``.

    Loads up to ``max_vectors`` vectors (all if None) into memory: sample a huge run with it.
    The sample is uniform over the whole input and independent of file order (the
    ``max_vectors`` smallest seeded hashes of the ids), not the first files read.
    """
    from beam_e5.dedupe.explain import explain

    vectors_input_schema(pattern)
    records = (rec for table in read_vectors(pattern) for rec in table_to_records(table)
               if is_document_row(rec))
    chosen = sample_by_id(records, max_vectors, seed)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    return explain(np.stack([r["embedding"] for r in chosen]), [r["id"] for r in chosen],
                   out_dir, sample_size=sample_size, seed=seed)
