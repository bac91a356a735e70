"""Read a text corpus (JSONL, Parquet, CSV, TSV, plain text; local or gs://) into Documents.

Use::

    resolved = validate_reader_config(cfg)      # before the pipeline: ConfigError on bad input
    out = p | ReadCorpus(resolved)              # or ReadCorpus(cfg), which validates itself
    out.documents, out.errors                   # also out["documents"], out["errors"]

Every input record ends up exactly once in ``documents`` or in ``errors`` (Beam counters
``beam_e5/records_read`` and ``beam_e5/records_invalid``). Blank lines of JSONL, TSV,
CSV and plain-text files are not records: in a ``.txt`` corpus they separate documents.

Formats and ``source``
  * ``jsonl`` (``.jsonl``, ``.json``, ``.ndjson``, compressed variants): one JSON object
    per line. BEIR ``corpus.jsonl`` works as is: when the records have ``_id`` and no
    ``id``, the id field falls back to ``_id``; when they have ``_id`` and ``title`` the
    title field defaults to ``title`` and the document text is ``title + " " + text``
    (when the title is non-empty). The same fallbacks apply to CSV, TSV and Parquet.
  * ``text`` (``.txt`` and any other extension): one document per non-blank line, id
    and source ``path:LINE``.
  * ``csv``: header line, RFC 4180 quoting (quoted newlines allowed).
  * ``tsv``: header line, IANA text/tab-separated-values: no quoting, one record a line.
  * ``parquet``: read per row group, only the needed columns; source ``path:row=N``
    (0-based row index within the file).

  ``source`` of line-based records is ``path:LINE`` (1-based physical line). Ids are
  strings (integer ids are converted).

Parallel reading
  Files are planned into splits on the workers and reshuffled so splits read in
  parallel: a Parquet file gives one split per row group; an uncompressed JSONL, text
  or TSV file bigger than ``split_bytes`` (64 MiB) gives one split per byte range, each
  aligned to line starts. Line numbers are not known inside such a range, so records of
  a file that was split use ``source = "path:byte=OFFSET"``, the byte offset of the
  line start (``tail -c +$((OFFSET + 1)) FILE | head -n 1`` shows it); files that fit in
  one split keep ``path:LINE``. CSV files are read whole, one split per file, because a
  quoted newline makes byte ranges unsafe; compressed files are read whole as well.
  The plain-text id is the source, so in a split ``.txt`` file it is ``path:byte=N``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from beam_e5.errors import ConfigError
from beam_e5.io import reader_formats as rf
from beam_e5.io import reader_validation as rv
from beam_e5.io.compressed import open_input
from beam_e5.io.reader_formats import FieldSpec, split_keep_entry
from beam_e5.io.reader_validation import FORMATS, InputFile, ResolvedInput
from beam_e5.records import METRICS_NAMESPACE, check_kept_columns

__all__ = [
    "DOCUMENTS",
    "ERRORS",
    "FORMATS",
    "SPLIT_BYTES",
    "FieldSpec",
    "InputFile",
    "ReadCorpus",
    "ReaderConfig",
    "ResolvedInput",
    "Split",
    "plan_splits",
    "read_split",
    "validate_reader_config",
]

DOCUMENTS = "documents"
ERRORS = "errors"
SPLIT_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class ReaderConfig:
    """What to read. Validated on construction; raises ConfigError.

    ``input`` is a path, a glob or a gs:// path/glob, or several of them separated by
    commas. ``keep_fields`` may also be given as a comma-separated string; an entry
    ``FIELD:COLUMN`` keeps the input field ``FIELD`` as the output column ``COLUMN`` (split at
    the last ``:``), so a field named like a column beam-e5 writes (``doc_id``) can be kept.
    """

    input: str
    input_format: str = "auto"
    id_field: str = "id"
    text_field: str = "text"
    title_field: str | None = None
    keep_fields: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if not isinstance(self.input, str) or not self.input.strip(" ,"):
            raise ConfigError("--input is empty: give a file, a glob or a gs:// path "
                              "(comma-separated for several)")
        if self.input_format not in FORMATS:
            raise ConfigError(f"--input-format {self.input_format!r} is not one of "
                              f"{', '.join(FORMATS)}")
        for flag, value in (("--id-field", self.id_field), ("--text-field", self.text_field)):
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"{flag} must be a non-empty field name, got {value!r}")
        if self.title_field is not None and (not isinstance(self.title_field, str)
                                             or not self.title_field.strip()):
            raise ConfigError("--title-field must be a non-empty field name, "
                              f"got {self.title_field!r}")
        keep = self.keep_fields
        if isinstance(keep, str):
            keep = tuple(k.strip() for k in keep.split(",") if k.strip())
        if not all(isinstance(k, str) and k.strip() for k in keep):
            raise ConfigError(f"--keep-fields must be non-empty field names, got {list(keep)!r}")
        keep = tuple(dict.fromkeys(keep))
        pairs = [split_keep_entry(k) for k in keep]
        columns = [column for _, column in pairs]
        twice = next((c for c in columns if columns.count(c) > 1), None)
        if twice is not None:
            raise ConfigError(f"--keep-fields writes two fields to the column {twice!r}; give "
                              "each its own column name (FIELD:COLUMN)")
        check_kept_columns(pairs, stores_text=False)
        object.__setattr__(self, "keep_fields", keep)

    @property
    def kept(self) -> tuple[tuple[str, str], ...]:
        """``(input field, output column)`` of every ``--keep-fields`` entry."""
        return tuple(split_keep_entry(k) for k in self.keep_fields)

    @property
    def kept_columns(self) -> tuple[str, ...]:
        """The output column names of the kept fields, in order."""
        return tuple(column for _, column in self.kept)

    def patterns(self) -> list[str]:
        """The comma-separated parts of ``input``."""
        return [p.strip() for p in self.input.split(",") if p.strip()]


def validate_reader_config(cfg: ReaderConfig) -> ResolvedInput:
    """Match the input files and check field names before the pipeline runs.

    Raises ConfigError when no file matches a pattern, a field is not in a file's
    Parquet schema / CSV or TSV header / first JSON records (a sample), a Parquet schema cannot be
    read, or field options are given for plain-text input.
    """
    return rv.resolve(
        cfg.patterns(),
        cfg.input_format,
        FieldSpec(cfg.id_field, cfg.text_field, cfg.title_field,
                  tuple(f for f, _ in cfg.kept), cfg.kept_columns),
    )


@dataclass(frozen=True)
class Split:
    """A unit of parallel reading: a byte range, a whole file or a Parquet row group."""

    file: InputFile
    start: int = 0
    end: int | None = None
    numbered: bool = True  # source is path:LINE (else path:byte=OFFSET)
    row_group: int = -1
    row_offset: int = 0
    problem: str = ""  # set when the file could not be planned; read as one error


def plan_splits(f: InputFile, split_bytes: int = SPLIT_BYTES) -> list[Split]:
    """Cut one input file into splits (see the module docstring)."""
    if f.format == "parquet":
        try:
            with FileSystems.open(f.path, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
                meta = pq.ParquetFile(fh).metadata
                sizes = [meta.row_group(k).num_rows for k in range(meta.num_row_groups)]
        except Exception as e:  # noqa: BLE001 - any reader failure is reported per file
            return [Split(f, problem=f"cannot read Parquet file: {type(e).__name__}: {e}")]
        splits, offset = [], 0
        for k, n in enumerate(sizes):
            splits.append(Split(f, row_group=k, row_offset=offset))
            offset += n
        return splits
    if f.format == "csv" or f.compressed or f.size_bytes <= split_bytes:
        return [Split(f)]
    starts = range(0, f.size_bytes, split_bytes)
    return [Split(f, s, min(s + split_bytes, f.size_bytes), numbered=False) for s in starts]


def _sourced(path: str, lines: Iterator[tuple[int, bytes]],
             numbered: bool) -> Iterator[tuple[str, bytes]]:
    for n, (offset, line) in enumerate(lines, start=1):
        line = rf.strip_bom(offset, line)
        yield (f"{path}:{n}" if numbered else f"{path}:byte={offset}"), line


def _open(f: InputFile):  # Beam returns several file types
    return open_input(f.path)


def _tsv_header(f: InputFile) -> list[str]:
    with _open(f) as fh:
        for offset, line in rf.iter_lines(fh):
            line = rf.strip_bom(offset, line)
            if line.strip():
                return line.decode("utf-8", "replace").split("\t")
    return []


class _ReadState:
    """What :func:`_guarded` saw: lines read, and why reading stopped early (if it did)."""

    def __init__(self) -> None:
        self.lines = 0
        self.problem = ""


def _stream_complete(fh) -> bool:  # fh: Beam's CompressedFile or GzipMembers
    """Whether a fully read compressed file reached the end of its compressed stream.

    Beam's ``CompressedFile`` stops quietly where a cut-off file ends; its decompressor
    (zlib, bz2, lzma, zstd) knows whether the end-of-stream marker was seen.
    """
    if hasattr(fh, "complete"):  # gzip: GzipMembers
        return bool(fh.complete)
    decompressor = getattr(fh, "_decompressor", None)
    eof = getattr(decompressor, "eof", None)
    return True if eof is None else bool(eof)


def _guarded(f: InputFile, fh, lines: Iterator, state: _ReadState) -> Iterator:
    """Yield ``lines``; a read failure or a compressed stream cut short ends the file with
    ``state.problem`` set, instead of crashing the job or passing silently."""
    try:
        for item in lines:
            state.lines += 1
            yield item
    except Exception as e:  # noqa: BLE001 - only reading can raise here: any failure is the file's
        state.problem = f"{type(e).__name__}: {e}"
        return
    if f.compressed and f.size_bytes > 0 and not _stream_complete(fh):
        state.problem = "the compressed stream ends before its end-of-stream marker"


def _file_problem(f: InputFile, state: _ReadState) -> rf.Parsed:
    what = "compressed file" if f.compressed else "file"
    return rf.file_error(
        f.path, f"the {what} is cut short or corrupt after {state.lines} lines "
        f"({state.problem}); the records after that point could not be read. Re-upload or "
        "re-export the file and rerun")


def read_split(split: Split) -> Iterator[rf.Parsed]:
    """Read one split; yields ``("doc", Document)`` / ``("error", ErrorRecord)``.

    A file that cannot be read to its end (a compressed file cut short, a corrupt stream, an
    unreadable Parquet file) yields the records before the break and one ``scope: "file"``
    error naming the file.
    """
    f, fields = split.file, split.file.fields
    state = _ReadState()
    if split.problem:
        yield rf.file_error(f.path, split.problem)
    elif f.format == "parquet":
        try:
            with FileSystems.open(f.path, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
                table = pq.ParquetFile(fh).read_row_group(split.row_group, columns=fields.columns())
        except (OSError, ValueError, KeyError, pa.ArrowException) as e:  # e.g. a missing column
            reason = f"cannot read row group {split.row_group}: {type(e).__name__}: {e}"
            yield rf.file_error(f"{f.path}:row={split.row_offset}", reason)
            return
        yield from rf.parse_rows(table.to_pylist(), f.path, split.row_offset, fields)
    elif f.format == "csv":
        with _open(f) as fh:
            raw = _guarded(f, fh, rf.iter_lines(fh, keep_ends=True), state)
            yield from rf.parse_csv((rf.strip_bom(o, line) for o, line in raw), f.path, fields)
    else:
        try:
            header = _tsv_header(f) if f.format == "tsv" else []
        except Exception as e:  # noqa: BLE001 - an unreadable file is the file's error
            state.problem = f"{type(e).__name__}: {e}"
            header = []
        with _open(f) as fh:
            lines = _sourced(f.path,
                             _guarded(f, fh, rf.iter_lines(fh, split.start, split.end), state),
                             split.numbered)
            if state.problem:
                pass
            elif f.format == "jsonl":
                yield from rf.parse_jsonl(lines, fields)
            elif f.format == "text":
                yield from rf.parse_text(lines)
            else:
                data = _skip_first_nonblank(lines) if split.start == 0 else lines
                yield from rf.parse_tsv(data, header, fields)
    if state.problem:
        yield _file_problem(f, state)


def _skip_first_nonblank(lines: Iterator[tuple[str, bytes]]) -> Iterator[tuple[str, bytes]]:
    seen_header = False
    for source, line in lines:
        if not seen_header and line.strip():
            seen_header = True
            continue
        yield source, line


class _ReadSplitFn(beam.DoFn):
    """Reads a split, routing rejected records to the ``errors`` output."""

    def __init__(self) -> None:
        self._read = Metrics.counter(METRICS_NAMESPACE, "records_read")
        self._invalid = Metrics.counter(METRICS_NAMESPACE, "records_invalid")

    def process(self, split: Split) -> Iterator[object]:
        for kind, payload in read_split(split):
            self._read.inc()
            if kind == "doc":
                yield payload
            else:
                self._invalid.inc()
                yield beam.pvalue.TaggedOutput(ERRORS, payload)


class ReadCorpus(beam.PTransform):
    """Apply to the pipeline root; returns outputs ``documents`` and ``errors``."""

    def __init__(self, cfg: ReaderConfig | ResolvedInput, *,
                 split_bytes: int = SPLIT_BYTES) -> None:
        super().__init__()
        if not isinstance(split_bytes, int) or split_bytes < 1:
            raise ConfigError(f"split_bytes must be a positive integer, got {split_bytes!r}")
        self._resolved = cfg if isinstance(cfg, ResolvedInput) else validate_reader_config(cfg)
        self._split_bytes = split_bytes

    @property
    def resolved(self) -> ResolvedInput:
        """The matched files and resolved field names."""
        return self._resolved

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.pvalue.DoOutputsTuple:
        return (
            pbegin
            | "Files" >> beam.Create(list(self._resolved.files))
            | "ReshuffleFiles" >> beam.Reshuffle()
            | "PlanSplits" >> beam.FlatMap(plan_splits, self._split_bytes)
            | "ReshuffleSplits" >> beam.Reshuffle()
            | "ReadSplits" >> beam.ParDo(_ReadSplitFn()).with_outputs(ERRORS, main=DOCUMENTS)
        )
