"""Pre-pipeline checks for :mod:`beam_e5.io.readers`: match files, pick formats, check fields.

Runs on the launching machine through ``apache_beam.io.filesystems.FileSystems`` (local
paths and ``gs://`` alike) and raises :class:`~beam_e5.errors.ConfigError` with a message
that says what to change. Field names are checked against the Parquet schema, the CSV or
TSV header, or the fields of the JSON objects among the first ``JSONL_PROBE_LINES``
non-blank lines (a field that only later records have is still found), for the first
``SCHEMA_CHECK_MAX_FILES`` non-empty files of each format (the rest are assumed to share
the layout; a record lacking its id or text is rejected at read time, a kept field it lacks
is written as null).
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
from beam_e5.io.compressed import open_input
from beam_e5.io.reader_formats import FieldSpec

FORMATS = ("auto", "jsonl", "parquet", "csv", "tsv", "text")
SCHEMA_CHECK_MAX_FILES = 16
JSONL_PROBE_LINES = 100
JSONL_PROBE_BYTES = 16 * 1024 * 1024
_EXTENSIONS = {
    ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl",
    ".parquet": "parquet", ".csv": "csv", ".tsv": "tsv",
}  # fmt: skip
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tgz", ".tar.gz", ".tar.bz2", ".tar.xz", ".7z", ".rar")
SNIFF_BYTES = 64 * 1024
_UTF16_32_BOMS = (b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")
_WHAT = {"parquet": "Parquet schema", "csv": "CSV header", "tsv": "TSV header",
         "jsonl": f"sample (its first {JSONL_PROBE_LINES} JSON records)"}


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


def check_not_archive(path: str) -> None:
    """Refuse archives: their members would be read as one text file of binary garbage."""
    name = posixpath.basename(path).lower()
    suffix = next((sfx for sfx in ARCHIVE_SUFFIXES if name.endswith(sfx)), None)
    if suffix is not None:
        raise ConfigError(
            f"{path} is a {suffix} archive, which beam-e5 does not unpack; extract it and point "
            "--input at the files inside (gzip, bzip2, xz or zstd compression of single files "
            "is read directly: corpus.jsonl.gz)")


def _head(path: str) -> bytes:
    """The first ``SNIFF_BYTES`` (decompressed) bytes of a file; ConfigError if unreadable."""
    try:
        with open_input(path, warn=False) as fh:
            return fh.read(SNIFF_BYTES)
    except Exception as e:
        raise ConfigError(
            f"cannot read {path}: {type(e).__name__}: {e}. Is it really "
            f"{'compressed as its name says' if detect_format(path)[1] else 'a readable file'}? "
            "Re-export the file, or fix its extension") from e


def diagnose_encoding(path: str, head: bytes) -> None:
    """Refuse a file whose first bytes show it is not UTF-8 text (UTF-16, Latin-1, a zip)."""
    fix = "re-encode it as UTF-8 (e.g. iconv -f {enc} -t UTF-8 IN > OUT) and rerun"
    if head.startswith(b"PK\x03\x04"):
        raise ConfigError(f"{path} is a zip archive; extract it and point --input at its files")
    if head.startswith(_UTF16_32_BOMS) or (head[:2000].count(b"\x00") > len(head[:2000]) // 4 > 0):
        raise ConfigError(f"{path} looks like UTF-16 or UTF-32 text (byte-order mark or NUL "
                          f"bytes); {fix.format(enc='UTF-16')}")
    lines = [line for line in head.split(b"\n")[:-1] if line.strip()] or (
        [head] if head.strip() and len(head) < SNIFF_BYTES else [])
    bad = []
    for line in lines:
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as e:
            bad.append(line[e.start:e.start + 1])
    if lines and len(bad) * 2 > len(lines):
        raise ConfigError(
            f"{path} is not UTF-8: {len(bad)} of its first {len(lines)} lines hold bytes such "
            f"as {bad[0]!r} that are not UTF-8; it looks like Latin-1 or Windows-1252: "
            f"{fix.format(enc='WINDOWS-1252')}")


def match_inputs(patterns: list[str]) -> list[FileMetadata]:
    """All files matching the patterns, de-duplicated and sorted by path."""
    found: dict[str, FileMetadata] = {}
    for pattern in patterns:
        try:
            metadata = FileSystems.match([pattern])[0].metadata_list
        except Exception as e:
            raise ConfigError(f"cannot list --input {pattern!r}: {e}. Check the path and your "
                              "access to it") from e
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
    """The fields of the JSON objects among the first ``JSONL_PROBE_LINES`` non-blank lines
    (at most ``JSONL_PROBE_BYTES``), in order of first appearance: a field that only later
    records have is still known. None for a file without a record."""
    probed = read = 0
    names: dict[str, None] = {}
    with open_input(path, warn=False) as fh:
        for offset, line in rf.iter_lines(fh):
            line = rf.strip_bom(offset, line)
            read += len(line) + 1
            if not line.strip():
                continue
            probed += 1
            try:
                rec = json.loads(line.decode("utf-8"))
            except (ValueError, RecursionError):  # a bad line is its record's error
                rec = None
            if isinstance(rec, dict):
                names.update(dict.fromkeys(rec))
            if probed >= JSONL_PROBE_LINES or read >= JSONL_PROBE_BYTES:
                break
    if names or probed == 0:
        return list(names) if names else None
    raise ConfigError(
        f"none of the first {probed} non-blank lines of {path} is a JSON object: is it JSONL? "
        "Fix the file or set --input-format to its real format"
    )


def _header_names(path: str, fmt: str) -> list[str] | None:
    with open_input(path, warn=False) as fh:
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
        raise ConfigError(f"{path}: Parquet files carry their own compression; decompress the "
                          "file first")
    try:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
            return list(pq.read_schema(fh).names)
    except Exception as e:
        raise ConfigError(
            f"cannot read the Parquet schema of {path} ({type(e).__name__}: {e}). Is it a "
            "Parquet file? Remove it from --input or set --input-format to its real format"
        ) from e


def field_names(f: InputFile) -> list[str] | None:
    """The field names of a structured file, or None when it holds no record."""
    if f.format == "parquet":
        return _parquet_names(f.path, f.compressed)
    try:
        if f.format == "jsonl":
            return _jsonl_names(f.path)
        return _header_names(f.path, f.format)
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(f"cannot read {f.path}: {type(e).__name__}: {e}. Re-export the file "
                          "or remove it from --input") from e


def sniff(f: InputFile) -> None:
    """Read the head of a text-based file: refuse corrupt compression and non-UTF-8 text."""
    if f.format != "parquet":
        diagnose_encoding(f.path, _head(f.path))


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
        checks.append(("--title-field" if explicit_title else "title field (auto-detected)",
                       spec.title_field))
    checks += [("--keep-fields", k) for k in spec.keep_fields]
    for flag, value in checks:
        if value not in names:
            hint = ""
            if flag == "--keep-fields" and any(n.startswith(value + ":") for n in names):
                hint = (" (FIELD:COLUMN renames; a field whose own name holds ':' is kept as "
                        "'its:name:column')")
            raise ConfigError(
                f"{flag} {value!r} is not a field of {f.path}: its {_WHAT[f.format]} has "
                f"{', '.join(map(repr, names)) or 'no fields'}. Use one of those names{hint}"
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
        check_not_archive(m.path)
        fmt, compressed = detect_format(m.path)
        if input_format != "auto":
            fmt = input_format
        files.append(InputFile(m.path, m.size_in_bytes, fmt, compressed, requested))
    resolved: list[InputFile] = []
    for fmt in sorted({f.format for f in files}):
        group = [f for f in files if f.format == fmt]
        for f in group[:SCHEMA_CHECK_MAX_FILES]:
            sniff(f)
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
