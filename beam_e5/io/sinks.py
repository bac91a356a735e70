"""Writing vectors, duplicates and dead letters with Beam's file sinks (local or ``gs://``).

Beam's ``FileBasedSink`` writes every shard to a temporary directory and renames shards into
place only at finalize, so a failed run leaves no half-written file under a final name.

Vectors are written from Arrow tables built per batch straight from numpy (one
``FixedSizeListArray`` over a contiguous float buffer): no per-element Python lists of floats.
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Iterator, Mapping, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.parquetio import WriteToParquetBatched

from beam_e5.errors import ConfigError
from beam_e5.records import OUTPUT_COLUMNS, check_kept_columns, written_columns

VECTOR_DTYPES = {"float32": (np.float32, pa.float32()), "float16": (np.float16, pa.float16())}
ARROW_BATCH_ROWS = 2048
# beam_e5.records.OUTPUT_COLUMNS names them all; the text, where an output stores it,
# travels as a kept field (a string column named "text")
CORE_COLUMNS = OUTPUT_COLUMNS[:4]
# Where each vector's text lies: its document, window and characters (beam_e5.records).
CHUNK_COLUMNS = (("doc_id", pa.string()), ("chunk", pa.int32()), ("chunks", pa.int32()),
                 ("char_start", pa.int64()), ("char_end", pa.int64()),
                 ("tokens_cut", pa.int32()))
_CHUNK_NAMES = tuple(name for name, _ in CHUNK_COLUMNS)
assert CORE_COLUMNS + _CHUNK_NAMES == written_columns(stores_text=False)


def vectors_schema(dim: int, vector_dtype: str, keep_fields: Sequence[str],
                   metadata: Mapping[str, str]) -> pa.Schema:
    """``id``, ``embedding`` fixed_size_list<dtype>[dim], ``text_sha256``, ``tokens``, the chunk
    columns (``doc_id``, ``chunk``, ``chunks``, ``char_start``, ``char_end``, ``tokens_cut``),
    kept fields (string)."""
    if vector_dtype not in VECTOR_DTYPES:
        raise ConfigError(f"--vector-dtype must be one of {', '.join(VECTOR_DTYPES)}, "
                          f"got {vector_dtype!r}")
    check_kept_columns([(name, name) for name in keep_fields], stores_text=False)
    fields = [pa.field("id", pa.string(), nullable=False),
              pa.field("embedding", pa.list_(VECTOR_DTYPES[vector_dtype][1], dim), nullable=False),
              pa.field("text_sha256", pa.string()),
              pa.field("tokens", pa.int32())]
    fields += [pa.field(name, typ) for name, typ in CHUNK_COLUMNS]
    fields += [pa.field(name, pa.string()) for name in keep_fields]
    return pa.schema(fields, metadata={k: str(v) for k, v in metadata.items()})


DUPLICATES_SCHEMA = pa.schema([
    pa.field("id", pa.string(), nullable=False),
    pa.field("duplicate_of", pa.string(), nullable=False),
    pa.field("similarity", pa.float32()),
    pa.field("kind", pa.string()),
])


def _field_as_string(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def vectors_to_table(records: Sequence[dict], schema: pa.Schema) -> pa.Table:
    """One Arrow table from a batch of embedded records (numpy vectors, stacked once)."""
    emb_type = schema.field("embedding").type
    np_dtype = VECTOR_DTYPES["float16" if emb_type.value_type == pa.float16() else "float32"][0]
    dim = emb_type.list_size
    matrix = np.stack([r["embedding"] for r in records]).astype(np_dtype, copy=False)
    if matrix.shape[1] != dim:
        raise ValueError(f"vector dim {matrix.shape[1]} != schema dim {dim}")
    flat = pa.array(matrix.reshape(-1), type=emb_type.value_type)
    columns = {
        "id": pa.array([r["id"] for r in records], pa.string()),
        "embedding": pa.FixedSizeListArray.from_arrays(flat, dim),
        "text_sha256": pa.array([r.get("text_sha256") for r in records], pa.string()),
        "tokens": pa.array([r.get("tokens") for r in records], pa.int32()),
    }
    for name, typ in CHUNK_COLUMNS:
        if name in schema.names:
            columns[name] = pa.array([_chunk_value(r, name) for r in records], typ)
    for name in [n for n in schema.names if n not in CORE_COLUMNS + _CHUNK_NAMES]:
        columns[name] = pa.array(
            [_field_as_string((r.get("fields") or {}).get(name)) for r in records], pa.string())
    return pa.Table.from_pydict(columns, schema=schema)


def _chunk_value(record: dict, name: str) -> Any:
    """A chunk column of a record; records without them are one-window documents."""
    if name in record:
        return record[name]
    return {"doc_id": record.get("id"), "chunk": 0, "chunks": 1, "tokens_cut": 0}.get(name)


def duplicates_to_table(records: Sequence[dict]) -> pa.Table:
    return pa.Table.from_pylist(
        [{k: r[k] for k in ("id", "duplicate_of", "similarity", "kind")} for r in records],
        schema=DUPLICATES_SCHEMA)


class WriteVectors(beam.PTransform):
    """Embedded records -> ``OUTPUT/vectors-SSSSS-of-NNNNN.parquet``."""

    def __init__(self, output_dir: str, schema: pa.Schema) -> None:
        super().__init__()
        self._output_dir = output_dir
        self._schema = schema

    def expand(self, pcoll):
        schema = self._schema
        return (pcoll
                | "Batch" >> beam.BatchElements(min_batch_size=ARROW_BATCH_ROWS,
                                                max_batch_size=ARROW_BATCH_ROWS)
                | "ToArrow" >> beam.Map(vectors_to_table, schema)
                | "Write" >> WriteToParquetBatched(FileSystems.join(self._output_dir, "vectors"),
                                                   schema=schema, codec="zstd",
                                                   file_name_suffix=".parquet"))


class WriteDuplicates(beam.PTransform):
    """Duplicate records -> ``OUTPUT/duplicates-*.parquet``."""

    def __init__(self, output_dir: str) -> None:
        super().__init__()
        self._output_dir = output_dir

    def expand(self, pcoll):
        return (pcoll
                | "Batch" >> beam.BatchElements(min_batch_size=ARROW_BATCH_ROWS,
                                                max_batch_size=ARROW_BATCH_ROWS)
                | "ToArrow" >> beam.Map(duplicates_to_table)
                | "Write" >> WriteToParquetBatched(FileSystems.join(self._output_dir, "duplicates"),
                                                   schema=DUPLICATES_SCHEMA, codec="zstd",
                                                   file_name_suffix=".parquet"))


def error_to_json(record: Mapping[str, Any]) -> str:
    """One JSON line; a lone surrogate anywhere (not UTF-8 encodable) is written escaped."""
    line = json.dumps(dict(record), ensure_ascii=False, sort_keys=True, default=str)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        line = json.dumps(dict(record), ensure_ascii=True, sort_keys=True, default=str)
    return line


class WriteErrors(beam.PTransform):
    """Dead-letter records -> ``OUTPUT/errors-*.jsonl`` (one JSON object a line)."""

    def __init__(self, output_dir: str) -> None:
        super().__init__()
        self._output_dir = output_dir

    def expand(self, pcoll):
        return (pcoll
                | "ToJson" >> beam.Map(error_to_json)
                | "Write" >> beam.io.WriteToText(FileSystems.join(self._output_dir, "errors"),
                                                 file_name_suffix=".jsonl"))


def table_to_records(table: pa.Table) -> Iterator[dict]:
    """Rows of a vectors table as embedded-document dicts (numpy float32 vectors)."""
    emb = table.column("embedding").combine_chunks()
    matrix = emb.values.to_numpy(zero_copy_only=False).reshape(-1, emb.type.list_size)
    matrix = matrix.astype(np.float32, copy=False)
    ids = table.column("id").to_pylist()
    sha = (table.column("text_sha256").to_pylist() if "text_sha256" in table.column_names
           else [None] * table.num_rows)
    tokens = (table.column("tokens").to_pylist() if "tokens" in table.column_names
              else [0] * table.num_rows)
    kept = [c for c in table.column_names if c not in CORE_COLUMNS + _CHUNK_NAMES]
    kept_values = {c: table.column(c).to_pylist() for c in kept}
    # files written before chunking have no chunk columns: each row is a whole document
    chunk_values = {c: table.column(c).to_pylist() for c in _CHUNK_NAMES
                    if c in table.column_names}
    for i, vid in enumerate(ids):
        rec = {"id": vid, "embedding": matrix[i], "text_sha256": sha[i],
               "tokens": tokens[i] or 0, "fields": {c: kept_values[c][i] for c in kept},
               "doc_id": vid, "chunk": 0, "chunks": 1, "char_start": None, "char_end": None,
               "tokens_cut": 0}
        for c, values in chunk_values.items():
            rec[c] = values[i] if values[i] is not None or c in ("chunk", "char_start",
                                                                  "char_end") else rec[c]
        yield rec


def read_vectors(pattern: str) -> Iterable[pa.Table]:
    """Tables of every ``vectors-*.parquet`` matching ``pattern`` (for tools and tests)."""
    import pyarrow.parquet as pq

    for match in FileSystems.match([pattern])[0].metadata_list:
        with FileSystems.open(match.path) as f:
            yield pq.read_table(f)
