"""The shapes of the records that flow between pipeline stages.

They are plain dicts (cheap to pickle and encode on every runner); these TypedDicts
document and type-check them.

* ``Document``: one corpus record after reading and validation.
* ``ErrorRecord``: a rejected input record (dead letter), written to ``errors-*.jsonl``.
* ``EmbeddedDocument``: a document with its vector (``text`` dropped).
* ``DuplicateRecord``: a document removed by exact or semantic dedupe.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypedDict

import numpy as np

from beam_e5.errors import ConfigError


class Document(TypedDict):
    id: str
    text: str
    text_sha256: str  # see beam_e5.dedupe.text_key.text_key
    source: str  # "path:line" (JSONL, text, CSV) or "path:row" (Parquet)
    fields: dict[str, Any]  # --keep-fields columns carried to the output


class _ErrorScope(TypedDict, total=False):
    scope: str  # "file": the whole file is affected (cut short, corrupt, broken quoting)


class ErrorRecord(_ErrorScope):
    source: str
    id: str | None
    reason: str
    record: str  # the raw record (or its repr), cut to 10,000 characters


class EmbeddedDocument(TypedDict):
    id: str  # the document id, or DOCID#N for window N of a document cut into several
    text_sha256: str
    source: str
    fields: dict[str, Any]
    embedding: np.ndarray  # float32, shape (dim,), L2-normalised
    tokens: int  # real (non-padding) tokens fed to the model
    doc_id: str  # the document's id
    chunk: int | None  # 0-based window; None on the document row of a multi-window document
    chunks: int  # windows of the document
    char_start: int | None  # text[char_start:char_end] is the window's text
    char_end: int | None
    tokens_cut: int  # text tokens no window held (--long-text truncate)


def is_document_row(record: dict) -> bool:
    """The one row standing for a whole document: its only window, or its document row."""
    return record.get("chunk") is None or record.get("chunks", 1) == 1


def is_chunk_row(record: dict) -> bool:
    """A window row of a document cut into several (not its document row)."""
    return record.get("chunk") is not None and record.get("chunks", 1) > 1


class DuplicateRecord(TypedDict):
    id: str
    duplicate_of: str
    similarity: float  # 1.0 for exact duplicates
    kind: str  # "exact" | "semantic"


MAX_RAW_RECORD_CHARS = 10_000
FILE_SCOPE = "file"  # ErrorRecord.scope of an error about a whole input file
# The namespace of every Beam metric beam-e5 reports (Dataflow's UI groups counters by it).
METRICS_NAMESPACE = "beam_e5"


# The columns beam-e5 writes itself in every vectors row (Parquet files and PostgreSQL tables
# alike), in order; TEXT_COLUMN only where the output stores the text (``--store-text``).
# Every check of a kept field's column name reads this one list.
TEXT_COLUMN = "text"
OUTPUT_COLUMNS = ("id", "embedding", "text_sha256", "tokens", "doc_id", "chunk", "chunks",
                  "char_start", "char_end", "tokens_cut", TEXT_COLUMN)


def written_columns(stores_text: bool) -> tuple[str, ...]:
    """The columns of :data:`OUTPUT_COLUMNS` an output writes (``text`` only if it stores it)."""
    return tuple(c for c in OUTPUT_COLUMNS if stores_text or c != TEXT_COLUMN)


def check_kept_columns(kept: Sequence[tuple[str, str]], stores_text: bool) -> None:
    """Refuse a kept field whose output column is one beam-e5 writes itself: two columns of
    one name, the user's values lost. ``kept``: ``(field, column)`` pairs."""
    written = written_columns(stores_text)
    for field_name, column in kept:
        if column not in written:
            continue
        entry = field_name if field_name == column else f"{field_name}:{column}"
        rename = f"--keep-fields {field_name}:source_{column} (FIELD:COLUMN)"
        if column == TEXT_COLUMN:
            raise ConfigError(f"--store-text adds a 'text' column, and --keep-fields {entry!r} "
                              f"names 'text' too: keep the field as {rename}, or drop one "
                              "of them")
        raise ConfigError(
            f"--keep-fields {entry!r} names a column beam-e5 writes itself "
            f"({', '.join(written)}); the output cannot hold it twice. Keep the field under "
            f"another column name with {rename}, or drop it (the id is always written as 'id')")
