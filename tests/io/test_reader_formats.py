"""Tests for beam_e5.io.reader_formats: line splitting, the per-format parsers (JSONL, plain
text, TSV, CSV, Parquet rows) and the record checks, called directly on small inputs and on
small files in tmp_path (compressed ones included)."""

from __future__ import annotations

import bz2
import datetime
import decimal
import gzip
import io
import json
import lzma
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beam_e5.dedupe.text_key import text_key
from beam_e5.io import reader_formats as rf
from beam_e5.io.reader_formats import FieldSpec
from beam_e5.io.readers import ReaderConfig, plan_splits, read_split, validate_reader_config
from beam_e5.records import FILE_SCOPE, MAX_RAW_RECORD_CHARS

FIELDS = FieldSpec()


def doc(doc_id: str, text: str, source: str, fields: dict | None = None) -> dict[str, Any]:
    return {"id": doc_id, "text": text, "text_sha256": text_key(text), "source": source,
            "fields": fields or {}}


def err(source: str, reason: str, record: str, doc_id: str | None = None) -> dict[str, Any]:
    return {"source": source, "id": doc_id, "reason": reason, "record": record}


def sourced(data: bytes, path: str = "f") -> Iterator[tuple[str, bytes]]:
    """``(path:LINE, line)`` as readers.py feeds the line parsers."""
    for n, (offset, line) in enumerate(rf.iter_lines(io.BytesIO(data)), start=1):
        yield f"{path}:{n}", rf.strip_bom(offset, line)


def csv_lines(data: bytes) -> Iterator[bytes]:
    return (line for _, line in rf.iter_lines(io.BytesIO(data), keep_ends=True))


def split(parsed) -> tuple[list[dict], list[dict]]:
    out = list(parsed)
    return [p for k, p in out if k == "doc"], [p for k, p in out if k == "error"]


# ------------------------------------------------------------------------- iter_lines


def test_iter_lines_offsets_and_line_ends() -> None:
    data = b"one\r\ntwo\n\nthree\r\r\nlast"
    assert list(rf.iter_lines(io.BytesIO(data))) == [
        (0, b"one"), (5, b"two"), (9, b""), (10, b"three\r"), (18, b"last")]
    assert list(rf.iter_lines(io.BytesIO(data), keep_ends=True)) == [
        (0, b"one\r\n"), (5, b"two\n"), (9, b"\n"), (10, b"three\r\r\n"), (18, b"last")]


def test_iter_lines_of_empty_and_newline_only_files() -> None:
    assert list(rf.iter_lines(io.BytesIO(b""))) == []
    assert list(rf.iter_lines(io.BytesIO(b"\n"))) == [(0, b"")]
    assert list(rf.iter_lines(io.BytesIO(b"a\n"))) == [(0, b"a")]  # no empty last line


@pytest.mark.parametrize(("start", "end", "expected"), [
    (0, 1, [(0, b"aaa")]),  # a line belongs to the range holding its first byte
    (1, 4, []),  # starts mid-line: that line is the previous range's
    (1, 5, [(4, b"bb")]),
    (4, 5, [(4, b"bb")]),  # starts exactly on a line start
    (3, 4, []),  # only the newline of line 1
    (7, None, [(7, b"c")]),
    (8, None, []),  # past the last line start
    (9, None, []),  # at the end of the file
])
def test_iter_lines_byte_ranges(start: int, end: int | None, expected: list) -> None:
    assert list(rf.iter_lines(io.BytesIO(b"aaa\nbb\nc\n"), start, end)) == expected


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 1 << 20])
@pytest.mark.parametrize("step", [1, 2, 5, 11, 1000])
def test_byte_ranges_cover_every_line_once_whatever_the_read_size(
        monkeypatch: pytest.MonkeyPatch, chunk: int, step: int) -> None:
    monkeypatch.setattr(rf, "READ_CHUNK_BYTES", chunk)
    data = b"first\nsecond line\n\n\nx\nlong " + b"y" * 30 + b"\r\nno newline at the end"
    whole = list(rf.iter_lines(io.BytesIO(data)))
    assert [line for _, line in whole] == [b"first", b"second line", b"", b"", b"x",
                                           b"long " + b"y" * 30, b"no newline at the end"]
    pieces = [item for s in range(0, len(data), step)
              for item in rf.iter_lines(io.BytesIO(data), s, min(s + step, len(data)))]
    assert pieces == whole
    assert all(data[o:].split(b"\n", 1)[0].rstrip(b"\r") == line for o, line in whole)


@pytest.mark.parametrize(("opener", "suffix"), [(gzip.open, ".gz"), (bz2.open, ".bz2"),
                                                (lzma.open, ".xz")])
def test_iter_lines_reads_a_compressed_stream(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              opener, suffix: str) -> None:
    monkeypatch.setattr(rf, "READ_CHUNK_BYTES", 4)  # lines cross the decompressed reads
    path = tmp_path / f"c.txt{suffix}"
    with opener(path, "wb") as f:
        f.write(b"alpha\r\nbeta gamma\n\ndelta")
    with opener(path, "rb") as f:
        assert list(rf.iter_lines(f)) == [(0, b"alpha"), (7, b"beta gamma"), (18, b""),
                                          (19, b"delta")]


# -------------------------------------------------------------- small helpers


def test_strip_bom_only_at_the_start_of_the_file() -> None:
    assert rf.strip_bom(0, b"\xef\xbb\xbfid") == b"id"
    assert rf.strip_bom(0, b"\xef\xbb\xbf") == b""
    assert rf.strip_bom(10, b"\xef\xbb\xbfid") == b"\xef\xbb\xbfid"
    assert rf.strip_bom(0, b"id") == b"id"


def test_field_spec_columns_are_distinct_and_ordered() -> None:
    assert FieldSpec().columns() == ["id", "text"]
    assert FieldSpec("_id", "body", "title", ("lang", "title", "_id", "src")).columns() == [
        "_id", "body", "title", "lang", "src"]


def test_cut_and_printable() -> None:
    assert rf.cut("x" * (MAX_RAW_RECORD_CHARS + 5)) == "x" * MAX_RAW_RECORD_CHARS
    assert rf.cut("short") == "short"
    assert rf.printable("fine é") == "fine é"
    assert rf.printable("bad \ud800 end") == "bad \\ud800 end"


def test_error_and_file_error_records() -> None:
    assert rf.error("f:3", "why", "raw") == ("error", err("f:3", "why", "raw"))
    assert rf.error("f:3", "why", "raw", "id\udfff") == (
        "error", err("f:3", "why", "raw", "id\\udfff"))
    _, record = rf.error("f:1", "long", "r" * (MAX_RAW_RECORD_CHARS + 1))
    assert len(record["record"]) == MAX_RAW_RECORD_CHARS
    assert rf.file_error("f.csv", "cut short") == (
        "error", {**err("f.csv", "cut short", ""), "scope": FILE_SCOPE})


@pytest.mark.parametrize(("value", "expected"), [
    ("ok", False), ("\ud800", True), (["a", ["b", "\udc00"]], True), (("a", "b"), False),
    ({"k": "v"}, False), ({"\ud800": "v"}, True), ({"k": {"n": "\udfff"}}, True),
    (42, False), (None, False), (b"\xff", False),
])
def test_lone_surrogate(value: Any, expected: bool) -> None:
    assert rf.lone_surrogate(value) is expected


def test_decode_line() -> None:
    assert rf.decode_line("héllo".encode()) == ("héllo", "")
    assert rf.decode_line(b"ok \xff here") == (
        None, "line is not valid UTF-8 (invalid start byte at byte 3 of the line)")
    assert rf.decode_line(b"cut \xc3") == (
        None, "line is not valid UTF-8 (unexpected end of data at byte 4 of the line)")


def test_jsonable() -> None:
    value = {
        "date": datetime.date(2024, 2, 29),
        "when": datetime.datetime(2024, 2, 29, 13, 5, 1),
        "time": datetime.time(7, 30),
        "bytes": b"caf\xc3\xa9 \xff",
        "dec": decimal.Decimal("1.50"),
        "nested": [("a", 1), {2: None}],
        "other": frozenset(),
        "plain": [True, 1, 1.5, "s", None],
    }
    assert rf.jsonable(value) == {
        "date": "2024-02-29", "when": "2024-02-29T13:05:01", "time": "07:30:00",
        "bytes": "café \\xff", "dec": "1.50", "nested": [["a", 1], {"2": None}],
        "other": "frozenset()", "plain": [True, 1, 1.5, "s", None]}


# ------------------------------------------------------------------ build_document


def build(rec: dict, fields: FieldSpec = FIELDS) -> tuple[str, dict]:
    return rf.build_document(rec, fields, "src:1", "RAW")


@pytest.mark.parametrize(("rec", "reason", "doc_id"), [
    ({"text": "t"}, "missing or null id field 'id'", None),
    ({"id": None, "text": "t"}, "missing or null id field 'id'", None),
    ({"id": "", "text": "t"}, "missing or null id field 'id'", None),
    ({"id": True, "text": "t"}, "id field 'id' must be a string or an integer, got bool", None),
    ({"id": 1.0, "text": "t"}, "id field 'id' must be a string or an integer, got float", None),
    ({"id": ["a"], "text": "t"}, "id field 'id' must be a string or an integer, got list", None),
    ({"id": " \t", "text": "t"}, "id field 'id' is whitespace-only", None),
    ({"id": "a"}, "missing text field 'text'", "a"),
    ({"id": "a", "text": None}, "text field 'text' is null", "a"),
    ({"id": "a", "text": 3}, "text field 'text' must be a string, got int", "a"),
    ({"id": "a", "text": {"x": 1}}, "text field 'text' must be a string, got dict", "a"),
    ({"id": "a", "text": "\u00a0\n "}, "text field 'text' is empty or whitespace-only", "a"),
])
def test_build_document_rejects_with_a_reason(rec: dict, reason: str, doc_id: str | None) -> None:
    assert build(rec) == ("error", err("src:1", reason, "RAW", doc_id))


def test_build_document_lone_surrogates_name_the_field() -> None:
    fields = FieldSpec(title_field="title", keep_fields=("meta",))
    kind, e = build({"id": "a\ud800", "text": "t"}, fields)
    assert (kind, e["id"]) == ("error", "a\\ud800")
    assert e["reason"].startswith("id field 'id' holds a lone surrogate")
    kind, e = build({"id": "a", "text": "ok", "title": "bad \udbff"}, fields)
    assert e["reason"].startswith("text field 'text' holds a lone surrogate")
    kind, e = build({"id": "a", "text": "ok", "meta": {"k": ["\udc00"]}}, fields)
    assert e["reason"].startswith("kept field 'meta' holds a lone surrogate")
    assert e["reason"].endswith("fix the record at its source")


def test_build_document_ids_and_kept_fields() -> None:
    fields = FieldSpec(keep_fields=("lang", "when", "missing"))
    assert build({"id": 0, "text": "zero", "lang": "en", "when": datetime.date(2020, 1, 2)},
                 fields) == ("doc", doc("0", "zero", "src:1", {"lang": "en", "when": "2020-01-02",
                                                                "missing": None}))
    assert build({"id": -12345678901234567890, "text": "big"})[1]["id"] == "-12345678901234567890"
    assert build({"id": " padded ", "text": "  kept as is "}) == (
        "doc", doc(" padded ", "  kept as is ", "src:1"))


@pytest.mark.parametrize(("title", "text"), [
    ("Paris", "Paris is big."), ("", "is big."), ("   ", "is big."), (None, "is big.")])
def test_build_document_title_prefix(title: str | None, text: str) -> None:
    fields = FieldSpec(title_field="title")
    assert build({"id": "p", "title": title, "text": "is big."}, fields) == (
        "doc", doc("p", text, "src:1"))


def test_build_document_title_checks() -> None:
    fields = FieldSpec(title_field="title")
    assert build({"id": "p", "title": 5, "text": "t"}, fields) == (
        "error", err("src:1", "title field 'title' must be a string, got int", "RAW", "p"))
    # a title does not rescue an empty text
    assert build({"id": "p", "title": "Title", "text": " "}, fields)[1]["reason"] == (
        "text field 'text' is empty or whitespace-only")
    assert build({"id": "p", "text": "no title key"}, fields) == (
        "doc", doc("p", "no title key", "src:1"))


# ------------------------------------------------------------------------------ JSONL


def test_parse_jsonl_good_blank_and_bad_lines() -> None:
    data = (b'\xef\xbb\xbf{"id": 1, "text": "first"}\n'
            b"  \t\r\n"
            b'{"id": "b", "text": "caf\\u00e9", "extra": [1]}\r\n'
            b"not json\n"
            b"[1, 2]\n"
            b'"a string"\n'
            b"null\n"
            b'{"id": "x", "text": "bad \xff"}\n'
            b'{"id": "y"}\n'
            b'{"text": "t", "id": "last", "id": "dup-key-last-wins"}')
    docs, errors = split(rf.parse_jsonl(sourced(data), FIELDS))
    assert docs == [doc("1", "first", "f:1"), doc("b", "café", "f:3"),
                    doc("dup-key-last-wins", "t", "f:10")]
    assert errors == [
        err("f:4", "invalid JSON: JSONDecodeError: Expecting value: line 1 column 1 (char 0)",
            "not json"),
        err("f:5", "JSON value is a list, not an object", "[1, 2]"),
        err("f:6", "JSON value is a str, not an object", '"a string"'),
        err("f:7", "JSON value is a NoneType, not an object", "null"),
        err("f:8", "line is not valid UTF-8 (invalid start byte at byte 25 of the line)",
            '{"id": "x", "text": "bad \\xff"}'),
        err("f:9", "missing text field 'text'", '{"id": "y"}', "y"),
    ]


def test_parse_jsonl_error_record_is_cut() -> None:
    line = b'{"id": 1, "text": "' + b"x" * (MAX_RAW_RECORD_CHARS * 2)  # never closed
    [(kind, e)] = list(rf.parse_jsonl(iter([("f:1", line)]), FIELDS))
    assert kind == "error" and e["reason"].startswith(
        "invalid JSON: JSONDecodeError: Unterminated string")
    assert e["record"] == line.decode()[:MAX_RAW_RECORD_CHARS]


def test_parse_jsonl_beir_fields() -> None:
    data = b'{"_id": "d1", "title": "T", "text": "body", "metadata": {"k": 1}}\n'
    fields = FieldSpec("_id", "text", "title", ("metadata",))
    assert list(rf.parse_jsonl(sourced(data), fields)) == [
        ("doc", doc("d1", "T body", "f:1", {"metadata": {"k": 1}}))]


# ------------------------------------------------------------------------ plain text


def test_parse_text() -> None:
    data = (b"\xef\xbb\xbffirst line\n"
            b"\n"
            b"\xc2\xa0\xe2\x80\x83\n"  # no-break space, em space: blank too
            b"  indented, kept as is \r\n"
            b"bad \xc3\x28 bytes\n"
            b'{"id": "json is just text here"}')
    docs, errors = split(rf.parse_text(sourced(data)))
    assert docs == [
        doc("f:1", "first line", "f:1"),
        doc("f:4", "  indented, kept as is ", "f:4"),
        doc("f:6", '{"id": "json is just text here"}', "f:6"),
    ]
    assert errors == [err("f:5", "line is not valid UTF-8 (invalid continuation byte at byte 4 "
                                 "of the line)", "bad \\xc3( bytes", "f:5")]


# ------------------------------------------------------------------------------- TSV


def test_parse_tsv_has_no_quoting() -> None:
    header = ["id", "text", "lang"]
    data = (b'1\t"quoted, kept"\ten\n'
            b"2\ta \\t literal backslash-t\t\n"
            b"\n"
            b"3\tonly two\n"
            b"4\ttoo\tmany\tfields\n"
            b"5\t \tfr\n"
            b"6\tbad \xff\tde\r\n"
            b"\t7 has no id\tit")
    docs, errors = split(rf.parse_tsv(sourced(data), header, FieldSpec(keep_fields=("lang",))))
    assert docs == [doc("1", '"quoted, kept"', "f:1", {"lang": "en"}),
                    doc("2", "a \\t literal backslash-t", "f:2", {"lang": ""})]
    assert errors == [
        err("f:4", "row has 2 tab-separated fields, the header has 3", "3\tonly two"),
        err("f:5", "row has 4 tab-separated fields, the header has 3", "4\ttoo\tmany\tfields"),
        err("f:6", "text field 'text' is empty or whitespace-only", "5\t \tfr", "5"),
        err("f:7", "line is not valid UTF-8 (invalid start byte at byte 6 of the line)",
            "6\tbad \\xff\tde"),
        err("f:8", "missing or null id field 'id'", "\t7 has no id\tit"),
    ]


# ------------------------------------------------------------------------------- CSV


def test_parse_csv_quoting_and_line_numbers() -> None:
    data = (b"\n"
            b"id,text,lang\r\n"
            b'1,"comma, inside",en\r\n'
            b'2,"two\nphysical ""lines""",de\n'
            b"\n"
            b" , \n"  # a row of blanks is not a record
            b'"3",unquoted "inner" quotes,fr\n'
            b'4,"ends without newline",it')
    docs, errors = split(rf.parse_csv(csv_lines(data), "c.csv", FieldSpec(keep_fields=("lang",))))
    assert errors == []
    assert docs == [
        doc("1", "comma, inside", "c.csv:3", {"lang": "en"}),
        doc("2", 'two\nphysical "lines"', "c.csv:4", {"lang": "de"}),
        doc("3", 'unquoted "inner" quotes', "c.csv:8", {"lang": "fr"}),
        doc("4", "ends without newline", "c.csv:9", {"lang": "it"}),
    ]


def test_parse_csv_bad_rows() -> None:
    data = (b"id,text\n"
            b"1,ok\n"
            b"2\n"
            b"3,a,extra\n"
            b',"no id"\n'
            b'4,""\n'
            b"5,bad \xff byte\n"
            b"6,fine\n")
    docs, errors = split(rf.parse_csv(csv_lines(data), "c.csv", FIELDS))
    assert docs == [doc("1", "ok", "c.csv:2"), doc("6", "fine", "c.csv:8")]
    assert errors == [
        err("c.csv:3", "row has 1 fields, the header has 2", "2"),
        err("c.csv:4", "row has 3 fields, the header has 2", "3,a,extra"),
        err("c.csv:5", "missing or null id field 'id'", ",no id"),
        err("c.csv:6", "text field 'text' is empty or whitespace-only", "4,", "4"),
        err("c.csv:7", "record is not valid UTF-8", "5,bad \\xff byte"),
    ]


def test_parse_csv_text_after_a_closing_quote_is_a_file_error_and_reading_goes_on() -> None:
    data = b'id,text\n1,"closed"junk\n2,after\n'
    docs, errors = split(rf.parse_csv(csv_lines(data), "c.csv", FIELDS))
    assert docs == [doc("2", "after", "c.csv:3")]
    assert errors == [{**err("c.csv:2", "invalid CSV at lines 2-2: ',' expected after '\"' (an "
                                        "unterminated or stray quote); these lines were not read "
                                        "as records: fix the quoting and rerun",
                             '1,"closed"junk\n'), "scope": FILE_SCOPE}]


def test_parse_csv_unterminated_quote_swallows_to_the_end_as_one_file_error() -> None:
    data = b'id,text\n1,ok\n2,"never closed\n3,x\n4,y\n'
    docs, errors = split(rf.parse_csv(csv_lines(data), "c.csv", FIELDS))
    assert docs == [doc("1", "ok", "c.csv:2")]
    [e] = errors
    assert (e["source"], e["scope"], e["record"]) == ("c.csv:3", FILE_SCOPE,
                                                      '2,"never closed\n3,x\n4,y\n')
    assert e["reason"].startswith("invalid CSV at lines 3-5: unexpected end of data")


def test_parse_csv_other_delimiter_header_only_and_empty() -> None:
    data = b'id;text\n1;"a;b"\n2;c,d\n'
    assert [d["text"] for d in split(rf.parse_csv(csv_lines(data), "s", FIELDS, ";"))[0]] == [
        "a;b", "c,d"]
    assert list(rf.parse_csv(csv_lines(b"id,text\n"), "h", FIELDS)) == []
    assert list(rf.parse_csv(csv_lines(b""), "e", FIELDS)) == []
    assert list(rf.parse_csv(csv_lines(b"\n\n \n"), "b", FIELDS)) == []


def test_parse_csv_header_bom_is_dropped() -> None:
    data = b"\xef\xbb\xbfid,text\n1,hello\n"
    assert list(rf.parse_csv(csv_lines(data), "c.csv", FIELDS)) == [
        ("doc", doc("1", "hello", "c.csv:2"))]


@pytest.mark.parametrize(("data", "line"), [
    (b"\xef\xbb\xbfid,text\n1,hello\n", 2),
    (b'\xef\xbb\xbf"id","text"\n"1","hello"\n', 2),  # pandas QUOTE_ALL + utf-8-sig, R
    (b"\xef\xbb\xbf\nid,text\n1,hello\n", 3),  # a first line that is only a BOM
], ids=["plain-header", "quoted-header", "blank-line"])
def test_a_bom_at_the_start_of_a_csv_file_is_ignored(tmp_path: Path, data: bytes,
                                                     line: int) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes(data)
    [f] = validate_reader_config(ReaderConfig(str(path))).files  # passes in every case
    out = [item for s in plan_splits(f) for item in read_split(s)]
    assert out == [("doc", doc("1", "hello", f"{path}:{line}"))]


# --------------------------------------------------------------------------- Parquet


def test_parse_rows_of_a_parquet_file(tmp_path: Path) -> None:
    path = tmp_path / "c.parquet"
    table = pa.table({
        "id": pa.array([10, 11, 12, 13, 14], pa.int64()),
        "text": pa.array(["ten", None, "twelve", "  ", "fourteen"]),
        "day": pa.array([datetime.date(2024, 1, d) for d in range(1, 6)], pa.date32()),
        "price": pa.array([decimal.Decimal("1.10")] * 5, pa.decimal128(5, 2)),
        "tags": pa.array([["a"], [], None, ["b", "c"], ["d"]], pa.list_(pa.string())),
    })
    pq.write_table(table, path, row_group_size=2)
    fields = FieldSpec(keep_fields=("day", "price", "tags"))
    rows = pq.ParquetFile(path).read_row_group(1, columns=fields.columns()).to_pylist()
    docs, errors = split(rf.parse_rows(rows, str(path), 2, fields))
    assert docs == [doc("12", "twelve", f"{path}:row=2",
                        {"day": "2024-01-03", "price": "1.10", "tags": None})]
    assert errors == [err(f"{path}:row=3", "text field 'text' is empty or whitespace-only",
                          '{"id": 13, "text": "  ", "day": "2024-01-04", "price": "1.10", '
                          '"tags": ["b", "c"]}', "13")]


def test_parse_rows_rejects_non_string_parquet_columns(tmp_path: Path) -> None:
    path = tmp_path / "c.parquet"
    pq.write_table(pa.table({"id": pa.array([1.5, 2.0]), "text": pa.array([b"bytes", b"x"]),
                             "name": ["n1", "n2"]}), path)
    rows = pq.read_table(path).to_pylist()
    assert list(rf.parse_rows(rows, "p", 0, FIELDS)) == [
        ("error", err("p:row=0", "id field 'id' must be a string or an integer, got float",
                      '{"id": 1.5, "text": "bytes", "name": "n1"}')),
        ("error", err("p:row=1", "id field 'id' must be a string or an integer, got float",
                      '{"id": 2.0, "text": "x", "name": "n2"}')),
    ]
    named = FieldSpec("name", "text")
    assert list(rf.parse_rows(rows[:1], "p", 7, named)) == [
        ("doc", doc("n1", "bytes", "p:row=7"))]  # binary holding UTF-8 is text


def test_binary_parquet_text_columns_are_read_as_utf8_text(tmp_path: Path) -> None:
    """Writers that type text as binary (Spark without the UTF8 annotation, some Arrow code):
    valid UTF-8 is read as text, a value that is not UTF-8 rejects its record alone."""
    path = tmp_path / "b.parquet"
    pq.write_table(pa.table({"id": pa.array([b"a", b"b", b"\xff", b"d"], pa.binary()),
                             "text": pa.array(["caf\u00e9".encode(), b"\xc3(", b"x", b"ok"],
                                              pa.large_binary()),
                             "title": pa.array([b"T", None, None, b"\xe2\x82"], pa.binary())}),
                   path)
    [f] = validate_reader_config(ReaderConfig(str(path), title_field="title")).files
    docs, errors = split(item for s in plan_splits(f) for item in read_split(s))
    assert [(d["id"], d["text"]) for d in docs] == [("a", "T caf\u00e9")]
    assert [(e["source"], e["reason"].split(" (")[0]) for e in errors] == [
        (f"{path}:row=1", "text field 'text' is binary and not valid UTF-8"),
        (f"{path}:row=2", "id field 'id' is binary and not valid UTF-8"),
        (f"{path}:row=3", "title field 'title' is binary and not valid UTF-8")]


def test_parse_rows_keeps_unicode_in_the_raw_record() -> None:
    [(kind, e)] = list(rf.parse_rows([{"id": "é", "text": None}], "p", 0, FIELDS))
    assert (kind, e["record"]) == ("error", '{"id": "é", "text": null}')


# ----------------------------------------------------------- compressed files, read whole


def _zstd(data: bytes) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor().compress(data)


COMPRESSORS = [(".gz", gzip.compress), (".bz2", bz2.compress), (".xz", lzma.compress),
               (".zst", _zstd)]
PLAIN = {
    "jsonl": b'{"id": "a", "text": "alpha"}\nnot json\n\n{"id": "b", "text": "beta"}\n',
    "csv": b'id,text\na,"alpha"\nb,"be\nta"\nc\n',
    "tsv": b"id\ttext\na\talpha\nb\tbeta\tgamma\n",
    "txt": b"alpha\n\nbeta\n",
}


@pytest.mark.parametrize(("suffix", "compress"), COMPRESSORS, ids=[c[0] for c in COMPRESSORS])
@pytest.mark.parametrize("fmt", list(PLAIN))
def test_compressed_files_parse_like_plain_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               fmt: str, suffix: str, compress) -> None:
    monkeypatch.setattr(rf, "READ_CHUNK_BYTES", 5)
    plain, packed = tmp_path / f"c.{fmt}", tmp_path / f"c.{fmt}{suffix}"
    plain.write_bytes(PLAIN[fmt])
    packed.write_bytes(compress(PLAIN[fmt]))

    def read(path: Path) -> list:
        [f] = validate_reader_config(ReaderConfig(str(path))).files
        assert f.compressed is (path == packed)
        out = [item for s in plan_splits(f) for item in read_split(s)]
        return json.loads(json.dumps(out).replace(str(path), "PATH"))

    expected = {
        "jsonl": [["doc", doc("a", "alpha", "PATH:1")],
                  ["error", err("PATH:2", "invalid JSON: JSONDecodeError: Expecting value: "
                                          "line 1 column 1 (char 0)", "not json")],
                  ["doc", doc("b", "beta", "PATH:4")]],
        "csv": [["doc", doc("a", "alpha", "PATH:2")], ["doc", doc("b", "be\nta", "PATH:3")],
                ["error", err("PATH:5", "row has 1 fields, the header has 2", "c")]],
        "tsv": [["doc", doc("a", "alpha", "PATH:2")],
                ["error", err("PATH:3", "row has 3 tab-separated fields, the header has 2",
                              "b\tbeta\tgamma")]],
        "txt": [["doc", doc("PATH:1", "alpha", "PATH:1")],
                ["doc", doc("PATH:3", "beta", "PATH:3")]],
    }[fmt]
    assert read(plain) == expected
    assert read(packed) == expected
