"""Per-format record parsing for :mod:`beam_e5.io.readers`.

Everything here works on one *split* of one input file and knows nothing about Beam:
it yields ``(kind, payload)`` pairs where ``kind`` is ``"doc"`` (a ``Document``) or
``"error"`` (an ``ErrorRecord``), so it can be tested directly and wrapped by a DoFn.

Splits of line-based files (JSONL, plain text, TSV) are byte ranges ``[start, end)``:
a line belongs to the range that holds its first byte, so every line is read exactly
once whatever the range boundaries. Lines are split on ``\\n`` only (a trailing ``\\r``
is dropped) and decoded one by one with strict UTF-8, so one undecodable line is
rejected on its own. A UTF-8 byte-order mark at the start of a file is ignored.
"""

from __future__ import annotations

import csv
import datetime
import decimal
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

from beam_e5.dedupe.text_key import text_key
from beam_e5.errors import ConfigError
from beam_e5.records import FILE_SCOPE, MAX_RAW_RECORD_CHARS, Document, ErrorRecord

READ_CHUNK_BYTES = 1 << 20
_BOM = b"\xef\xbb\xbf"
Parsed = tuple[str, Any]  # ("doc", Document) or ("error", ErrorRecord)


def split_keep_entry(entry: str) -> tuple[str, str]:
    """``--keep-fields`` entry -> ``(input field, output column)``: ``FIELD:COLUMN`` renames
    (split at the last ``:``, so ``a:b:c`` keeps the field ``a:b`` as ``c``), ``FIELD`` keeps
    the field under its own name."""
    field_name, sep, column = entry.rpartition(":")
    if not sep:
        return entry, entry
    if not field_name.strip() or not column.strip():
        raise ConfigError(f"--keep-fields {entry!r}: FIELD:COLUMN needs both names, e.g. "
                          "doc_id:source_doc_id")
    return field_name, column


@dataclass(frozen=True)
class FieldSpec:
    """The resolved field names used to build documents from structured records."""

    id_field: str = "id"
    text_field: str = "text"
    title_field: str | None = None
    keep_fields: tuple[str, ...] = ()
    # the output column of each kept field, in order (empty: the field names themselves)
    keep_columns: tuple[str, ...] = ()

    def kept(self) -> list[tuple[str, str]]:
        """``(input field, output column)`` of every kept field."""
        return list(zip(self.keep_fields, self.keep_columns or self.keep_fields, strict=True))

    def columns(self) -> list[str]:
        """The distinct fields a record must be read with, in a stable order."""
        wanted = [self.id_field, self.text_field, self.title_field, *self.keep_fields]
        return list(dict.fromkeys(f for f in wanted if f is not None))


def iter_lines(
    f: BinaryIO, start: int = 0, end: int | None = None, keep_ends: bool = False
) -> Iterator[tuple[int, bytes]]:
    """Yield ``(byte_offset, line)`` for each line whose first byte is in [start, end).

    ``f`` must be seekable when ``start > 0``. Without ``keep_ends`` the ``\\n`` and a
    trailing ``\\r`` are removed.
    """
    pos = start
    buf = b""
    if start > 0:
        # The line holding byte start-1 (if it does not end there) belongs to the
        # previous range: skip to just after the next newline.
        f.seek(start - 1)
        pos = start - 1
        while True:
            chunk = f.read(READ_CHUNK_BYTES)
            if not chunk:
                return
            i = chunk.find(b"\n")
            if i >= 0:
                pos += i + 1
                buf = chunk[i + 1 :]
                break
            pos += len(chunk)
    off = 0  # start of the current line in buf
    search = 0
    while True:
        if end is not None and pos >= end:
            return
        i = buf.find(b"\n", search)
        if i < 0:
            chunk = f.read(READ_CHUNK_BYTES)
            if chunk:
                buf = buf[off:] + chunk
                search = len(buf) - len(chunk)
                off = 0
                continue
            if off < len(buf):
                yield pos, _strip_end(buf[off:], keep_ends)
            return
        yield pos, _strip_end(buf[off : i + 1], keep_ends)
        pos += i + 1 - off
        off = search = i + 1


def _strip_end(line: bytes, keep_ends: bool) -> bytes:
    if keep_ends:
        return line
    if line.endswith(b"\n"):
        line = line[:-1]
    return line[:-1] if line.endswith(b"\r") else line


def strip_bom(offset: int, line: bytes) -> bytes:
    """Drop a UTF-8 byte-order mark from the first line of a file."""
    return line[len(_BOM) :] if offset == 0 and line.startswith(_BOM) else line


def cut(raw: str) -> str:
    """Cut a raw record to the size stored in an ``ErrorRecord``."""
    return raw[:MAX_RAW_RECORD_CHARS]


def printable(value: str) -> str:
    """``value`` with lone surrogates (legal in JSON as ``\\ud800``, not encodable as UTF-8)
    written as ``\\udXXX`` escapes, so an error record about them can always be written."""
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        return value.encode("utf-8", "backslashreplace").decode("utf-8")


def error(source: str, reason: str, raw: str, doc_id: str | None = None) -> Parsed:
    """An ``("error", ErrorRecord)`` pair."""
    record: ErrorRecord = {"source": printable(source),
                           "id": None if doc_id is None else printable(doc_id),
                           "reason": printable(reason), "record": printable(cut(raw))}
    return "error", record


def file_error(path: str, reason: str, raw: str = "") -> Parsed:
    """An error about a whole file (cut short, corrupt, broken quoting): marked
    ``scope: "file"`` so the job can tell the run is incomplete (see
    :data:`beam_e5.records.FILE_SCOPE`)."""
    kind, record = error(path, reason, raw)
    record["scope"] = FILE_SCOPE
    return kind, record


def lone_surrogate(value: Any) -> bool:
    """Whether a string (or any string inside a list/dict value) holds a lone surrogate."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, Mapping):
        return any(lone_surrogate(k) or lone_surrogate(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(lone_surrogate(v) for v in value)
    return False


def decode_line(line: bytes) -> tuple[str | None, str]:
    """``(text, "")`` for valid UTF-8, else ``(None, reason)``."""
    try:
        return line.decode("utf-8"), ""
    except UnicodeDecodeError as e:
        return None, f"line is not valid UTF-8 ({e.reason} at byte {e.start} of the line)"


def jsonable(value: Any) -> Any:
    """Make a kept field value JSON-friendly (dates as ISO text, bytes as UTF-8 text)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, decimal.Decimal):
        return str(value)
    return str(value)


_SURROGATE = ("{what} holds a lone surrogate (e.g. a JSON \\ud800 escape without its pair): it "
              "is not valid Unicode text and cannot be hashed, tokenised or written; fix the "
              "record at its source")


def build_document(rec: Mapping[str, Any], fields: FieldSpec, source: str, raw: str) -> Parsed:
    """Validate one structured record and turn it into a ``Document`` (or an error)."""
    raw_id = rec.get(fields.id_field)
    doc_id: str | None = None
    if raw_id is None or raw_id == "":
        return error(source, f"missing or null id field {fields.id_field!r}", raw)
    if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)):
        reason = (f"id field {fields.id_field!r} must be a string or an integer, "
                  f"got {type(raw_id).__name__}")
        return error(source, reason, raw)
    doc_id = str(raw_id)
    if lone_surrogate(doc_id):
        return error(source, _SURROGATE.format(what=f"id field {fields.id_field!r}"), raw, doc_id)
    if not doc_id.strip():
        return error(source, f"id field {fields.id_field!r} is whitespace-only", raw)
    if fields.text_field not in rec:
        return error(source, f"missing text field {fields.text_field!r}", raw, doc_id)
    text = rec[fields.text_field]
    if text is None:
        return error(source, f"text field {fields.text_field!r} is null", raw, doc_id)
    if not isinstance(text, str):
        reason = f"text field {fields.text_field!r} must be a string, got {type(text).__name__}"
        return error(source, reason, raw, doc_id)
    if not text.strip():
        reason = f"text field {fields.text_field!r} is empty or whitespace-only"
        return error(source, reason, raw, doc_id)
    if fields.title_field is not None:
        title = rec.get(fields.title_field)
        if title is not None and not isinstance(title, str):
            reason = (f"title field {fields.title_field!r} must be a string, "
                      f"got {type(title).__name__}")
            return error(source, reason, raw, doc_id)
        if title and title.strip():
            text = f"{title} {text}"
    if lone_surrogate(text):
        return error(source, _SURROGATE.format(what=f"text field {fields.text_field!r}"), raw,
                     doc_id)
    kept = {column: jsonable(rec.get(name)) for name, column in fields.kept()}
    bad = next((k for k, v in kept.items() if lone_surrogate(v)), None)
    if bad is not None:
        return error(source, _SURROGATE.format(what=f"kept field {bad!r}"), raw, doc_id)
    doc: Document = {
        "id": doc_id,
        "text": text,
        "text_sha256": text_key(text),
        "source": source,
        "fields": kept,
    }
    return "doc", doc


def parse_jsonl(lines: Iterator[tuple[str, bytes]], fields: FieldSpec) -> Iterator[Parsed]:
    """Parse ``(source, line)`` pairs of a JSONL file; blank lines are not records."""
    for source, line in lines:
        if not line.strip():
            continue
        text, reason = decode_line(line)
        if text is None:
            yield error(source, reason, line.decode("utf-8", "backslashreplace"))
            continue
        try:
            rec = json.loads(text)
        except (ValueError, RecursionError) as e:  # RecursionError: absurdly deep nesting
            yield error(source, f"invalid JSON: {type(e).__name__}: {e}", text)
            continue
        if not isinstance(rec, dict):
            yield error(source, f"JSON value is a {type(rec).__name__}, not an object", text)
            continue
        yield build_document(rec, fields, source, text)


def parse_text(lines: Iterator[tuple[str, bytes]]) -> Iterator[Parsed]:
    """One document per non-blank line; its id is its source (``path:line``)."""
    for source, line in lines:
        if not line.strip():
            continue  # blank lines separate documents; they are not records
        text, reason = decode_line(line)
        if text is None:
            yield error(source, reason, line.decode("utf-8", "backslashreplace"), source)
            continue
        if not text.strip():  # e.g. a line of no-break spaces: blank as well
            continue
        doc: Document = {
            "id": source,
            "text": text,
            "text_sha256": text_key(text),
            "source": source,
            "fields": {},
        }
        yield "doc", doc


def parse_tsv(
    lines: Iterator[tuple[str, bytes]], header: list[str], fields: FieldSpec
) -> Iterator[Parsed]:
    """Parse TSV data lines (IANA text/tab-separated-values: no quoting)."""
    for source, line in lines:
        if not line.strip():
            continue
        text, reason = decode_line(line)
        if text is None:
            yield error(source, reason, line.decode("utf-8", "backslashreplace"))
            continue
        values = text.split("\t")
        if len(values) != len(header):
            reason = f"row has {len(values)} tab-separated fields, the header has {len(header)}"
            yield error(source, reason, text)
            continue
        yield build_document(dict(zip(header, values, strict=True)), fields, source, text)


def _has_surrogates(values: list[str]) -> bool:
    try:
        for v in values:
            v.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def parse_csv(
    lines: Iterator[bytes], path: str, fields: FieldSpec, delimiter: str = ","
) -> Iterator[Parsed]:
    """Parse a whole CSV file given as raw lines *with* their line endings.

    Lines are decoded with ``surrogateescape`` so that a record holding invalid UTF-8
    is rejected on its own. The first non-blank row is the header; ``source`` is the
    1-based physical line where a record starts.

    Quoting is parsed strictly (``csv.reader(strict=True)``): a quote left open, or text
    after a closing quote, is a ``scope: "file"`` error holding the lines it swallowed, never
    a record whose text runs on over the following rows. Rows after it are still read.
    """
    csv.field_size_limit(2**31 - 1)
    consumed: list[str] = []  # the physical lines of the record being parsed

    def decoded() -> Iterator[str]:
        for line in lines:
            text = line.decode("utf-8", "surrogateescape")
            consumed.append(text)
            yield text

    reader = csv.reader(decoded(), delimiter=delimiter, strict=True)
    header: list[str] | None = None
    while True:
        start_line = reader.line_num + 1
        source = f"{path}:{start_line}"
        consumed.clear()
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raw = ("".join(consumed).encode("utf-8", "surrogateescape")
                   .decode("utf-8", "backslashreplace"))
            last = reader.line_num
            reason = (f"invalid CSV at lines {start_line}-{last}: {e} (an unterminated or stray "
                      "quote); these lines were not read as records: fix the quoting and rerun")
            kind, record = file_error(source, reason, raw)
            yield kind, record
            if reader.line_num < start_line:
                return  # no progress: give up on the rest of the file
            continue
        if not row or not any(v.strip() for v in row):
            continue
        raw = (delimiter.join(row).encode("utf-8", "surrogateescape")
               .decode("utf-8", "backslashreplace"))
        if header is None:
            header = [h.lstrip("\ufeff") for h in row]
            continue
        if _has_surrogates(row):
            yield error(source, "record is not valid UTF-8", raw)
        elif len(row) != len(header):
            yield error(source, f"row has {len(row)} fields, the header has {len(header)}", raw)
        else:
            yield build_document(dict(zip(header, row, strict=True)), fields, source, raw)


def parse_rows(
    rows: list[dict[str, Any]], path: str, row_offset: int, fields: FieldSpec
) -> Iterator[Parsed]:
    """Build documents from Parquet rows; ``source`` is ``path:row=N`` (0-based in file).

    An id, text or title column typed binary is read as UTF-8 text (many writers type text
    as binary); a value that is not valid UTF-8 rejects its record, with the reason."""
    for i, row in enumerate(rows):
        source = f"{path}:row={row_offset + i}"
        raw = json.dumps(jsonable(row), ensure_ascii=False)
        row, reason = binary_as_text(row, fields)
        if reason:
            yield error(source, reason, raw)
        else:
            yield build_document(row, fields, source, raw)


def binary_as_text(row: dict[str, Any], fields: FieldSpec) -> tuple[dict[str, Any], str]:
    """``row`` with its binary id, text and title values decoded as UTF-8, and ``""``; or
    the row as it is and the reason when one is not valid UTF-8."""
    named = (("id", fields.id_field), ("text", fields.text_field), ("title", fields.title_field))
    decoded = dict(row)
    for what, name in named:
        value = row.get(name) if name is not None else None
        if isinstance(value, (bytes, bytearray)):
            try:
                decoded[name] = bytes(value).decode("utf-8")
            except UnicodeDecodeError as e:
                return row, (f"{what} field {name!r} is binary and not valid UTF-8 ({e.reason} at "
                             f"byte {e.start}); re-export the column as UTF-8 text")
    return decoded, ""
