"""Pre-pipeline checks for :mod:`beam_e5.io.readers`: match files, pick formats, check fields.

Runs on the launching machine through ``apache_beam.io.filesystems.FileSystems`` (local
paths and ``gs://`` alike) and raises :class:`~beam_e5.errors.ConfigError` with a message
that says what to change. Field names are checked against the Parquet schema, the CSV or
TSV header, or the first JSON object among the first ``JSONL_PROBE_LINES`` non-blank
lines, for the first ``SCHEMA_CHECK_MAX_FILES`` non-empty files of each format (the
rest are assumed to share the layout; a record lacking a field is rejected at read time).
"""

from __future__ import annotations

import csv
import json
import os
import posixpath
from dataclasses import dataclass, replace

import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes, FileMetadata
from apache_beam.io.filesystems import FileSystems

from beam_e5.errors import ConfigError
from beam_e5.io import reader_formats as rf
from beam_e5.io.reader_formats import FieldSpec

FORMATS = ("auto", "jsonl", "parquet", "csv", "tsv", "text")
SCHEMA_CHECK_MAX_FILES = 16
JSONL_PROBE_LINES = 100
_EXTENSIONS = {
    ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl",
    ".parquet": "parquet", ".csv": "csv", ".tsv": "tsv",
}  # fmt: skip
_WHAT = {"parquet": "Parquet schema", "csv": "CSV header", "tsv": "TSV header", "jsonl": "first JSON record"}


@dataclass(frozen=True)
class InputFile:
    """One matched input file with its format and resolved field names."""

    path: str
    size_bytes: int
    format: str
    compressed: bool
    fields: FieldSpec


@dataclass(frozen=True)
class ResolvedInput:
    """The result of validation: every matched file, sorted by path."""

    files: tuple[InputFile, ...]

    @property
    def formats(self) -> tuple[str, ...]:
        """The distinct formats among the files."""
        return tuple(sorted({f.format for f in self.files}))


def detect_format(path: str) -> tuple[str, bool]:
    """``(format, compressed)`` from the file name (compression suffix first)."""
    compressed = CompressionTypes.detect_compression_type(path) != CompressionTypes.UNCOMPRESSED
    name = posixpath.basename(path).lower()
    if compressed:
        name = name.rsplit(".", 1)[0]
    return _EXTENSIONS.get(posixpath.splitext(name)[1], "text"), compressed


def match_inputs(patterns: list[str]) -> list[FileMetadata]:
    """All files matching the patterns, de-duplicated and sorted by path."""
    found: dict[str, FileMetadata] = {}
    for pattern in patterns:
        try:
            metadata = FileSystems.match([pattern])[0].metadata_list
        except Exception as e:  # noqa: BLE001 - Beam wraps every listing failure
            raise ConfigError(f"cannot list --input {pattern!r}: {e}. Check the path and your access to it") from e
        if not metadata:
            raise ConfigError(
                f"no file matches --input {pattern!r}. Check the path or glob "
                "(e.g. 'data/*.jsonl' or 'gs://bucket/corpus/*.parquet') and that it is readable"
            )
        for m in metadata:
            if "://" not in m.path and os.path.isdir(m.path):
                raise ConfigError(
                    f"--input {pattern!r} matches the directory {m.path}; "
                    f"use '{m.path.rstrip('/')}/*' to read the files in it"
                )
            found[m.path] = m
    return [found[p] for p in sorted(found)]


def _jsonl_names(path: str) -> list[str] | None:
    probed = 0
    with FileSystems.open(path, compression_type=CompressionTypes.AUTO) as fh:
        for offset, line in rf.iter_lines(fh):
            line = rf.strip_bom(offset, line)
            if not line.strip():
                continue
            probed += 1
            try:
                rec = json.loads(line.decode("utf-8"))
            except ValueError:
                rec = None
            if isinstance(rec, dict):
                return list(rec)
            if probed >= JSONL_PROBE_LINES:
                break
    if probed == 0:
        return None
    raise ConfigError(
        f"none of the first {probed} non-blank lines of {path} is a JSON object: is it JSONL? "
        "Fix the file or set --input-format to its real format"
    )


def _header_names(path: str, fmt: str) -> list[str] | None:
    with FileSystems.open(path, compression_type=CompressionTypes.AUTO) as fh:
        lines = (rf.strip_bom(o, line) for o, line in rf.iter_lines(fh, keep_ends=True))
        decoded = (line.decode("utf-8", "surrogateescape") for line in lines)
        if fmt == "tsv":
            rows = (line.rstrip("\r\n").split("\t") for line in decoded)
        else:
            csv.field_size_limit(2**31 - 1)
            rows = csv.reader(decoded)
        for row in rows:
            if any(v.strip() for v in row):
                try:
                    "".join(row).encode("utf-8")
                except UnicodeEncodeError as e:
                    raise ConfigError(
                        f"the header line of {path} is not valid UTF-8; re-encode the file as UTF-8"
                    ) from e
                return row
    return None


def _parquet_names(path: str, compressed: bool) -> list[str]:
    if compressed:
        raise ConfigError(f"{path}: Parquet files carry their own compression; decompress the file first")
    try:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
            return list(pq.read_schema(fh).names)
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types
        raise ConfigError(
            f"cannot read the Parquet schema of {path} ({type(e).__name__}: {e}). Is it a Parquet file? "
            "Remove it from --input or set --input-format to its real format"
        ) from e


def field_names(f: InputFile) -> list[str] | None:
    """The field names of a structured file, or None when it holds no record."""
    if f.format == "parquet":
        return _parquet_names(f.path, f.compressed)
    if f.format == "jsonl":
        return _jsonl_names(f.path)
    return _header_names(f.path, f.format)


def _resolve_fields(names: list[str], requested: FieldSpec) -> FieldSpec:
    id_field, title_field = requested.id_field, requested.title_field
    if id_field == "id" and "id" not in names and "_id" in names:
        id_field = "_id"  # BEIR corpus.jsonl
    if title_field is None and "_id" in names and "title" in names:
        title_field = "title"
    return replace(requested, id_field=id_field, title_field=title_field)


def _check_fields(f: InputFile, names: list[str], explicit_title: bool) -> None:
    spec = f.fields
    checks = [("--id-field", spec.id_field), ("--text-field", spec.text_field)]
    if spec.title_field is not None:
        checks.append(("--title-field" if explicit_title else "title field (auto-detected)", spec.title_field))
    checks += [("--keep-fields", k) for k in spec.keep_fields]
    for flag, value in checks:
        if value not in names:
            raise ConfigError(
                f"{flag} {value!r} is not a field of {f.path}: its {_WHAT[f.format]} has "
                f"{', '.join(map(repr, names)) or 'no fields'}. Use one of those names"
            )


def _check_text_options(path: str, requested: FieldSpec) -> None:
    given = [
        ("--id-field", requested.id_field != "id"),
        ("--text-field", requested.text_field != "text"),
        ("--title-field", requested.title_field is not None),
        ("--keep-fields", bool(requested.keep_fields)),
    ]
    for flag, is_set in given:
        if is_set:
            raise ConfigError(
                f"{flag} does not apply to plain-text input ({path}): each non-blank line is a "
                "document whose id is 'path:LINE'. Drop the option, or set --input-format "
                "(jsonl, csv, tsv, parquet) if the file has fields"
            )


def resolve(patterns: list[str], input_format: str, requested: FieldSpec) -> ResolvedInput:
    """Match, detect formats and resolve/check field names (see the module docstring)."""
    files = []
    for m in match_inputs(patterns):
        fmt, compressed = detect_format(m.path)
        if input_format != "auto":
            fmt = input_format
        files.append(InputFile(m.path, m.size_in_bytes, fmt, compressed, requested))
    resolved: list[InputFile] = []
    for fmt in sorted({f.format for f in files}):
        group = [f for f in files if f.format == fmt]
        if fmt == "text":
            _check_text_options(group[0].path, requested)
            resolved += [replace(f, fields=FieldSpec()) for f in group]
            continue
        spec: FieldSpec | None = None
        checked = 0
        for f in group:
            if checked >= SCHEMA_CHECK_MAX_FILES:
                break
            names = field_names(f)
            if names is None:
                continue
            spec = spec or _resolve_fields(names, requested)
            _check_fields(replace(f, fields=spec), names, requested.title_field is not None)
            checked += 1
        resolved += [replace(f, fields=spec or requested) for f in group]
    return ResolvedInput(tuple(sorted(resolved, key=lambda f: f.path)))
