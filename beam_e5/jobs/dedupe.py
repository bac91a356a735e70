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
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Optional

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from beam_e5._version import __version__
from beam_e5.dedupe.explain import INSTALL_HINT
from beam_e5.errors import ConfigError
from beam_e5.io.rundir import (
    OutputConfig,
    claim_output,
    read_counts,
    record_counts,
    write_manifest,
)
from beam_e5.io.sinks import (
    WriteDuplicates,
    WriteErrors,
    WriteVectors,
    read_vectors,
    table_to_records,
)
from beam_e5.jobs.counts import check_balance
from beam_e5.jobs.summary import RunSummary, bound_local_memory, peak_rss_mib
from beam_e5.records import is_document_row
from beam_e5.transforms.semantic_dedupe import (
    SemanticDedupeConfig,
    dedupe_documents,
    for_runner,
)


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
    id_type = schema.field("id").type
    if not (pa.types.is_string(id_type) or pa.types.is_large_string(id_type)):
        raise ConfigError(f"the id column of {matches[0].path} is {id_type}, not a string; "
                          "beam-e5 writes string ids: convert the column (or re-run beam-e5 "
                          "embed on the corpus)")
    return schema


def set_aside(record: dict) -> Optional[str]:
    """Why a vectors row cannot enter semantic dedupe ("" or None if it can): a null or empty
    id, or a NaN/infinite vector; such rows go to errors-*.jsonl, like ``embed`` does."""
    doc_id = record.get("id")
    if not isinstance(doc_id, str) or not doc_id:
        return "the id is null or empty"
    if not np.isfinite(record["embedding"]).all():
        return "the vector holds NaN or infinite values"
    return None


def _aside_to_error(record: dict, reason: str) -> dict:
    return {"source": "", "id": record.get("id"), "reason": reason,
            "record": json.dumps({"id": record.get("id"),
                                  "text_sha256": record.get("text_sha256")})}


def signature_from_metadata(metadata: Optional[dict]) -> dict[str, str]:
    """The model signature (as ``beam-e5 embed`` records it in its manifest) from a vectors
    file's metadata, so ``reembed --previous`` can carry vectors from a dedupe output."""
    out = {}
    for k, v in (metadata or {}).items():
        key, value = k.decode(), v.decode()
        if key.startswith("beam_e5.") and key not in ("beam_e5.version",
                                                      "beam_e5.normalization"):
            out[key[len("beam_e5."):]] = value
    return out


def run_dedupe(job: DedupeJob, beam_args: list[str]) -> RunSummary:
    schema = vectors_input_schema(job.input)
    with claim_output(job.output):
        return _run_dedupe(job, schema, beam_args)


def _run_dedupe(job: DedupeJob, schema: pa.Schema, beam_args: list[str]) -> RunSummary:
    start = time.time()
    p = beam.Pipeline(options=PipelineOptions(beam_args))
    bound_local_memory(p.options.view_as(StandardOptions).runner)
    records = (p
               | "ReadVectors" >> beam.io.ReadFromParquetBatched(job.input)
               | "ToRecords" >> beam.FlatMap(table_to_records))
    checked = records | "SetAside" >> beam.Map(lambda r: (set_aside(r), r))
    valid = (checked | "Valid" >> beam.Filter(lambda rr: rr[0] is None)
             | "ValidRecords" >> beam.Map(lambda rr: rr[1]))
    invalid_rows = checked | "Invalid" >> beam.Filter(lambda rr: rr[0] is not None)
    invalid = invalid_rows | "InvalidToErrors" >> beam.Map(lambda rr: _aside_to_error(rr[1], rr[0]))
    # counts balance in documents: an invalid window row is in errors-*.jsonl, not counted
    invalid_docs = invalid_rows | "InvalidDocs" >> beam.Filter(lambda rr: is_document_row(rr[1]))
    result = dedupe_documents(valid, for_runner(job.semantic,
                                                p.options.view_as(StandardOptions).runner))
    kept_chunks = result.kept_chunks
    _ = ((result.kept, kept_chunks) | "KeptRows" >> beam.Flatten()
         | "WriteVectors" >> WriteVectors(job.output.output, schema))
    _ = result.duplicates | "WriteDuplicates" >> WriteDuplicates(job.output.output)
    _ = invalid | "WriteErrors" >> WriteErrors(job.output.output)
    record_counts(p, {"read": records | "ReadDocs" >> beam.Filter(is_document_row),
                      "written": result.kept, "invalid": invalid_docs,
                      "semantic_duplicates": result.duplicates, "chunk_rows": kept_chunks},
                  job.output.output)
    p.run().wait_until_finish()
    raw = read_counts(job.output.output)
    counts = check_balance({
        "read": raw["read"], "invalid": raw["invalid"], "exact_duplicates": 0,
        "semantic_duplicates": raw["semantic_duplicates"], "embedded": 0,
        "written": raw["written"], "chunk_rows": raw.get("chunk_rows", 0)})
    summary = RunSummary(counts, time.time() - start, peak_rss_mib=peak_rss_mib())
    write_manifest(job.output.output, {
        "beam_e5_version": __version__, "command": "dedupe", "input": job.input,
        "model": signature_from_metadata(schema.metadata),
        "file_metadata": {k.decode(): v.decode() for k, v in (schema.metadata or {}).items()},
        "options": {"semantic": asdict(job.semantic), "output": asdict(job.output)},
        "counts": counts, "stats": summary.stats()})
    return summary


def check_explain_installed() -> None:
    """``--explain`` draws a histogram with matplotlib: refuse before reading any vector."""
    try:
        import matplotlib  # noqa: F401  (the histogram is drawn with it, at the end)
    except ImportError as e:
        raise ConfigError(f"dedupe --explain needs matplotlib to draw nn_similarity.png: "
                          f"{INSTALL_HINT}") from e


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

    check_explain_installed()
    vectors_input_schema(pattern)
    records = (rec for table in read_vectors(pattern) for rec in table_to_records(table)
               if is_document_row(rec))
    chosen = sample_by_id(records, max_vectors, seed)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    return explain(np.stack([r["embedding"] for r in chosen]), [r["id"] for r in chosen],
                   out_dir, sample_size=sample_size, seed=seed)
