"""Tests for beam_e5.io.readers: every format, every bad-record case, and pre-pipeline checks."""

from __future__ import annotations

import gzip
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beam_e5.dedupe.text_key import text_key
from beam_e5.errors import ConfigError
from beam_e5.io.readers import (
    ReadCorpus,
    ReaderConfig,
    plan_splits,
    read_split,
    validate_reader_config,
)
from beam_e5.records import OUTPUT_COLUMNS


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def jsonl(path: Path, records: list[Any]) -> Path:
    return write_lines(path, [r if isinstance(r, str) else json.dumps(r) for r in records])


def read_corpus(run_beam, cfg: ReaderConfig, **kw: Any) -> tuple[list[dict], list[dict]]:
    """Run ReadCorpus; check that counters balance; return sorted (documents, errors)."""

    def build(p):
        out = p | ReadCorpus(cfg, **kw)
        return {"documents": out.documents, "errors": out["errors"]}

    run = run_beam(build)
    docs, errors = run.outputs["documents"], run.outputs["errors"]
    assert run.counters.get("records_read", 0) == len(docs) + len(errors)
    assert run.counters.get("records_invalid", 0) == len(errors)
    return sorted(docs, key=lambda d: d["source"]), sorted(errors, key=lambda e: e["source"])


# ----------------------------------------------------------------------------- formats


def test_jsonl(tmp_path: Path, run_beam) -> None:
    path = jsonl(tmp_path / "c.jsonl",
                 [{"id": 7, "text": "seven"}, "", {"id": "b", "text": "bee", "x": 1}])
    docs, errors = read_corpus(run_beam, ReaderConfig(str(path)))
    assert errors == []
    assert docs == [
        {"id": "7", "text": "seven", "text_sha256": text_key("seven"), "source": f"{path}:1",
         "fields": {}},
        {"id": "b", "text": "bee", "text_sha256": text_key("bee"), "source": f"{path}:3",
         "fields": {}},
    ]


def test_beir_corpus_jsonl(tmp_path: Path, run_beam) -> None:
    path = jsonl(
        tmp_path / "corpus.jsonl",
        [
            {"_id": "d1", "title": "Paris", "text": "is the capital of France.", "metadata": {}},
            {"_id": "d2", "title": "", "text": "No title here."},
            {"_id": "d3", "title": None, "text": "Null title."},
        ],
    )
    resolved = validate_reader_config(ReaderConfig(str(path)))
    assert resolved.files[0].fields.id_field == "_id"
    assert resolved.files[0].fields.title_field == "title"
    docs, errors = read_corpus(run_beam, ReaderConfig(str(path)))
    assert errors == []
    assert [(d["id"], d["text"]) for d in docs] == [
        ("d1", "Paris is the capital of France."),
        ("d2", "No title here."),
        ("d3", "Null title."),
    ]


def test_gzipped_jsonl(tmp_path: Path, run_beam) -> None:
    path = tmp_path / "c.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"id": 1, "text": "one"}\n{"id": 2, "text": "two"}\n'))
    docs, _ = read_corpus(run_beam, ReaderConfig(str(path)))
    assert [(d["id"], d["source"]) for d in docs] == [("1", f"{path}:1"), ("2", f"{path}:2")]


def test_parquet_row_groups_are_separate_splits(tmp_path: Path, run_beam) -> None:
    path = tmp_path / "c.parquet"
    table = pa.table({"id": list(range(10)), "text": [f"doc {i}" for i in range(10)],
                      "lang": ["en"] * 10})
    pq.write_table(table, path, row_group_size=3)
    resolved = validate_reader_config(ReaderConfig(str(path), keep_fields=("lang",)))
    splits = plan_splits(resolved.files[0])
    assert [(s.row_group, s.row_offset) for s in splits] == [(0, 0), (1, 3), (2, 6), (3, 9)]
    assert [d["source"] for _, d in read_split(splits[1])] == [f"{path}:row={i}" for i in (3, 4, 5)]
    docs, errors = read_corpus(run_beam, ReaderConfig(str(path), keep_fields=("lang",)))
    assert errors == []
    assert sorted((int(d["id"]), d["text"], d["source"], d["fields"]["lang"]) for d in docs) == [
        (i, f"doc {i}", f"{path}:row={i}", "en") for i in range(10)
    ]


def test_csv_with_quoted_newlines(tmp_path: Path, run_beam) -> None:
    path = tmp_path / "c.csv"
    path.write_bytes(b'id,text,lang\r\n1,"first, with comma",en\r\n'
                     b'2,"multi\nline ""quoted""",de\r\n\r\n3,third,fr\r\n')
    docs, errors = read_corpus(run_beam, ReaderConfig(str(path), keep_fields=("lang",)))
    assert errors == []
    assert [(d["id"], d["text"], d["source"], d["fields"]) for d in docs] == [
        ("1", "first, with comma", f"{path}:2", {"lang": "en"}),
        ("2", 'multi\nline "quoted"', f"{path}:3", {"lang": "de"}),
        ("3", "third", f"{path}:6", {"lang": "fr"}),
    ]


def test_tsv(tmp_path: Path, run_beam) -> None:
    path = write_lines(tmp_path / "c.tsv", ["doc\tbody", "a\tsome \"quoted\" text", "b\tsecond"])
    docs, errors = read_corpus(run_beam, ReaderConfig(str(path), id_field="doc", text_field="body"))
    assert errors == []
    assert [(d["id"], d["text"], d["source"]) for d in docs] == [
        ("a", 'some "quoted" text', f"{path}:2"),
        ("b", "second", f"{path}:3"),
    ]


def test_plain_text_blank_lines_are_separators(tmp_path: Path, run_beam) -> None:
    path = write_lines(tmp_path / "c.txt", ["first line", "", "   ", "second line", "\u00a0"])
    docs, errors = read_corpus(run_beam, ReaderConfig(str(path)))
    assert errors == []
    assert [(d["id"], d["text"], d["source"], d["fields"]) for d in docs] == [
        (f"{path}:1", "first line", f"{path}:1", {}),
        (f"{path}:4", "second line", f"{path}:4", {}),
    ]


def test_keep_fields_jsonl(tmp_path: Path, run_beam) -> None:
    rows = [{"id": 1, "text": "a", "lang": "en", "meta": {"n": [1, 2]}},
            {"id": 2, "text": "b", "lang": "fr"}]
    path = jsonl(tmp_path / "c.jsonl", rows)
    docs, _ = read_corpus(run_beam, ReaderConfig(str(path), keep_fields=("lang", "meta")))
    assert [d["fields"] for d in docs] == [{"lang": "en", "meta": {"n": [1, 2]}},
                                           {"lang": "fr", "meta": None}]


def test_big_files_are_read_in_byte_ranges(tmp_path: Path, run_beam) -> None:
    records = [{"id": i, "text": f"record number {i} " + "x" * (i % 17)} for i in range(60)]
    path = jsonl(tmp_path / "big.jsonl", records)
    resolved = validate_reader_config(ReaderConfig(str(path)))
    splits = plan_splits(resolved.files[0], split_bytes=100)
    assert len(splits) > 10 and not splits[0].numbered
    docs, errors = read_corpus(run_beam, ReaderConfig(str(path)), split_bytes=100)
    assert errors == []
    raw = path.read_bytes()
    assert sorted(int(d["id"]) for d in docs) == list(range(60))
    for d in docs:
        offset = int(d["source"].rsplit(":byte=", 1)[1])
        assert json.loads(raw[offset:].split(b"\n", 1)[0])["id"] == int(d["id"])


@pytest.mark.parametrize("split_bytes", [1, 7, 33, 10_000])
def test_byte_ranges_cover_every_line_once(tmp_path: Path, split_bytes: int) -> None:
    lines = ["a", "", "bb", "ccc", "dddddddddddddd", "e", "", "", "ffff"]
    path = tmp_path / "t.txt"
    path.write_bytes(("\r\n".join(lines)).encode())  # CRLF, no final newline
    resolved = validate_reader_config(ReaderConfig(str(path)))
    texts = [d["text"] for s in plan_splits(resolved.files[0], split_bytes)
             for _, d in read_split(s)]
    assert texts == [line for line in lines if line]


# ------------------------------------------------------------------------- bad records

BAD_JSONL = [
    ("invalid-json", '{"id": 1, "text": "unterminated', "invalid JSON"),
    ("not-an-object", '["id", "text"]', "not an object"),
    ("missing-text", '{"id": 1}', "missing text field 'text'"),
    ("null-text", '{"id": 1, "text": null}', "text field 'text' is null"),
    ("number-text", '{"id": 1, "text": 42}', "must be a string, got int"),
    ("list-text", '{"id": 1, "text": ["a", "b"]}', "must be a string, got list"),
    ("empty-text", '{"id": 1, "text": ""}', "empty or whitespace-only"),
    ("whitespace-text", '{"id": 1, "text": " \\t\\n "}', "empty or whitespace-only"),
    ("missing-id", '{"text": "no id"}', "missing or null id field 'id'"),
    ("null-id", '{"id": null, "text": "null id"}', "missing or null id field 'id'"),
    ("float-id", '{"id": 1.5, "text": "float id"}', "must be a string or an integer, got float"),
]


@pytest.mark.parametrize(("case", "line", "reason"), BAD_JSONL, ids=[c[0] for c in BAD_JSONL])
def test_bad_jsonl_record_goes_to_errors(tmp_path: Path, run_beam, case: str, line: str,
                                         reason: str) -> None:
    path = write_lines(tmp_path / "c.jsonl",
                       ['{"id": "ok", "text": "fine"}', line, '{"id": "ok2", "text": "fine"}'])
    docs, errors = read_corpus(run_beam, ReaderConfig(str(path)))
    assert [d["id"] for d in docs] == ["ok", "ok2"]
    assert len(errors) == 1
    assert reason in errors[0]["reason"]
    assert errors[0]["source"] == f"{path}:2"
    assert errors[0]["record"] == line


def test_undecodable_bytes_reject_only_their_line(tmp_path: Path, run_beam) -> None:
    path = tmp_path / "c.jsonl"
    path.write_bytes(b'{"id": 1, "text": "ok"}\n{"id": 2, "text": "bad \xff\xfe"}\n'
                     b'{"id": 3, "text": "ok"}\n')
    docs, errors = read_corpus(run_beam, ReaderConfig(str(path)))
    assert [d["id"] for d in docs] == ["1", "3"]
    assert len(errors) == 1 and "not valid UTF-8" in errors[0]["reason"]
    assert errors[0]["source"] == f"{path}:2" and "\\xff" in errors[0]["record"]


def test_undecodable_bytes_in_text_and_csv(tmp_path: Path, run_beam) -> None:
    txt = tmp_path / "c.txt"
    txt.write_bytes(b"good line\nbad \xc3\x28 line\nanother\n")
    csv_path = tmp_path / "c.csv"
    csv_path.write_bytes(b'id,text\n1,good\n2,"bad \xff"\n3,good too\n')
    docs, errors = read_corpus(run_beam, ReaderConfig(f"{txt},{csv_path}"))
    assert [d["source"] for d in docs] == [f"{csv_path}:2", f"{csv_path}:4", f"{txt}:1", f"{txt}:3"]
    assert [(e["source"], "UTF-8" in e["reason"]) for e in errors] == [
        (f"{csv_path}:3", True), (f"{txt}:2", True)]


def test_bad_csv_and_tsv_rows(tmp_path: Path, run_beam) -> None:
    csv_path = tmp_path / "c.csv"
    csv_path.write_text("id,text\n1,ok\n2\n,no id\n3,  \n4,a,extra\n")
    tsv_path = write_lines(tmp_path / "c.tsv", ["id\ttext", "1\tok", "2\ttoo\tmany"])
    docs, errors = read_corpus(run_beam, ReaderConfig(f"{csv_path},{tsv_path}"))
    assert [d["source"] for d in docs] == [f"{csv_path}:2", f"{tsv_path}:2"]
    reasons = {e["source"]: e["reason"] for e in errors}
    assert "row has 1 fields" in reasons[f"{csv_path}:3"]
    assert "missing or null id" in reasons[f"{csv_path}:4"]
    assert "whitespace-only" in reasons[f"{csv_path}:5"]
    assert "row has 3 fields" in reasons[f"{csv_path}:6"]
    assert "3 tab-separated fields" in reasons[f"{tsv_path}:3"]


def test_bad_parquet_rows(tmp_path: Path, run_beam) -> None:
    path = tmp_path / "c.parquet"
    pq.write_table(pa.table({"id": ["a", None, "c"], "text": ["ok", "no id", None]}), path)
    docs, errors = read_corpus(run_beam, ReaderConfig(str(path)))
    assert [d["id"] for d in docs] == ["a"]
    assert [(e["source"], e["reason"]) for e in errors] == [
        (f"{path}:row=1", "missing or null id field 'id'"),
        (f"{path}:row=2", "text field 'text' is null"),
    ]
    assert json.loads(errors[0]["record"]) == {"id": None, "text": "no id"}


# ---------------------------------------------------------------- pre-pipeline checks


def test_no_file_matches(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no file matches --input"):
        validate_reader_config(ReaderConfig(str(tmp_path / "nothing-*.jsonl")))
    (tmp_path / "a.jsonl").write_text('{"id": 1, "text": "x"}\n')
    with pytest.raises(ConfigError, match="no file matches"):
        validate_reader_config(ReaderConfig(f"{tmp_path / 'a.jsonl'},{tmp_path / 'missing.csv'}"))


def test_directory_input_says_to_use_a_glob(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"/\*"):
        validate_reader_config(ReaderConfig(str(tmp_path)))


def _make_inputs(tmp_path: Path) -> dict[str, Path]:
    paths = {
        "jsonl": jsonl(tmp_path / "c.jsonl",
                       ["", "not json", {"id": 1, "text": "a", "lang": "en"}]),
        "csv": write_lines(tmp_path / "c.csv", ["id,text,lang", "1,a,en"]),
        "tsv": write_lines(tmp_path / "c.tsv", ["id\ttext\tlang", "1\ta\ten"]),
        "parquet": tmp_path / "c.parquet",
    }
    pq.write_table(pa.table({"id": [1], "text": ["a"], "lang": ["en"]}), paths["parquet"])
    return paths


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "tsv", "parquet"])
@pytest.mark.parametrize(
    ("option", "flag"),
    [
        ({"id_field": "doc_id"}, "--id-field 'doc_id'"),
        ({"text_field": "body"}, "--text-field 'body'"),
        ({"title_field": "heading"}, "--title-field 'heading'"),
        ({"keep_fields": ("lang", "country")}, "--keep-fields 'country'"),
    ],
)
def test_unknown_field_names(tmp_path: Path, fmt: str, option: dict, flag: str) -> None:
    path = _make_inputs(tmp_path)[fmt]
    validate_reader_config(ReaderConfig(str(path), keep_fields=("lang",)))  # the good case
    with pytest.raises(ConfigError) as info:
        validate_reader_config(ReaderConfig(str(path), **option))
    message = str(info.value)
    assert flag in message and str(path) in message and "'lang'" in message


def test_unreadable_parquet_schema(tmp_path: Path) -> None:
    path = tmp_path / "garbage.parquet"
    path.write_bytes(b"this is not a parquet file at all" * 10)
    with pytest.raises(ConfigError, match="cannot read the Parquet schema"):
        validate_reader_config(ReaderConfig(str(path)))


def test_jsonl_without_any_object_is_rejected(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "c.jsonl", ["not json", "[1, 2]"])
    with pytest.raises(ConfigError, match="is it JSONL"):
        validate_reader_config(ReaderConfig(str(path)))


@pytest.mark.parametrize(
    "option", [{"id_field": "doc"}, {"text_field": "body"}, {"title_field": "t"},
               {"keep_fields": ("x",)}]
)
def test_field_options_on_plain_text(tmp_path: Path, option: dict) -> None:
    path = write_lines(tmp_path / "c.txt", ["hello"])
    with pytest.raises(ConfigError, match="does not apply to plain-text input"):
        validate_reader_config(ReaderConfig(str(path), **option))


def test_formats_by_extension_and_explicit(tmp_path: Path) -> None:
    names = ["a.jsonl", "b.json.gz", "c.ndjson", "d.csv", "e.tsv", "f.txt", "g.md"]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    resolved = validate_reader_config(ReaderConfig(str(tmp_path / "*")))
    assert [(Path(f.path).name, f.format, f.compressed) for f in resolved.files] == [
        ("a.jsonl", "jsonl", False),
        ("b.json.gz", "jsonl", True),
        ("c.ndjson", "jsonl", False),
        ("d.csv", "csv", False),
        ("e.tsv", "tsv", False),
        ("f.txt", "text", False),
        ("g.md", "text", False),
    ]
    forced = validate_reader_config(ReaderConfig(str(tmp_path / "g.md"), input_format="jsonl"))
    assert forced.files[0].format == "jsonl"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"input": ""},
        {"input": " , "},
        {"input": "x", "input_format": "xml"},
        {"input": "x", "id_field": ""},
        {"input": "x", "text_field": " "},
        {"input": "x", "title_field": ""},
        {"input": "x", "keep_fields": ("a", "")},
    ],
)
def test_reader_config_rejects_bad_values(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        ReaderConfig(**kwargs)


def test_reader_config_normalises_keep_fields() -> None:
    assert ReaderConfig("x", keep_fields="a, b,a").keep_fields == ("a", "b")
    assert ReaderConfig("x", keep_fields=["b", "a"]).keep_fields == ("b", "a")


def test_unreadable_parquet_found_at_read_time_is_one_error(tmp_path: Path) -> None:
    good = tmp_path / "a.parquet"
    pq.write_table(pa.table({"id": [1], "text": ["a"]}), good)
    resolved = validate_reader_config(ReaderConfig(str(good)))
    bad = tmp_path / "b.parquet"
    bad.write_bytes(b"garbage" * 10)  # e.g. a file past the validation cap
    [split] = plan_splits(replace(resolved.files[0], path=str(bad)))
    [(kind, err)] = list(read_split(split))
    assert (kind == "error" and err["source"] == str(bad)
            and "cannot read Parquet file" in err["reason"])


def test_utf8_bom_is_ignored(tmp_path: Path, run_beam) -> None:
    path = tmp_path / "c.csv"
    path.write_bytes(b"\xef\xbb\xbfid,text\n1,hello\n")
    jpath = tmp_path / "c.jsonl"
    jpath.write_bytes(b'\xef\xbb\xbf{"id": 2, "text": "bom"}\n')
    docs, errors = read_corpus(run_beam, ReaderConfig(f"{path},{jpath}"))
    assert errors == [] and [d["id"] for d in docs] == ["1", "2"]


def test_absurdly_nested_json_is_an_error_not_a_crash(tmp_path: Path, run_beam) -> None:
    deep = '{"id": "deep", "text": ' + "[" * 100_000 + "]" * 100_000 + "}"
    path = write_lines(tmp_path / "c.jsonl", ['{"id": "ok", "text": "fine"}', deep])
    docs, errors = read_corpus(run_beam, ReaderConfig(str(path)))
    assert [d["id"] for d in docs] == ["ok"]
    assert len(errors) == 1 and "RecursionError" in errors[0]["reason"]
    assert errors[0]["source"] == f"{path}:2"


# ------------------------------------------------- files that end early (issue 16)


def _read_file(path: Path) -> tuple[list[dict], list[dict]]:
    [f] = validate_reader_config(ReaderConfig(str(path))).files
    out = [item for split in plan_splits(f) for item in read_split(split)]
    return [p for k, p in out if k == "doc"], [p for k, p in out if k == "error"]


@pytest.mark.parametrize("suffix, compress", [
    (".gz", gzip.compress),
    (".bz2", __import__("bz2").compress),
    (".xz", __import__("lzma").compress),
    (".zst", lambda data: __import__("zstandard").ZstdCompressor().compress(data)),
    (".deflate", __import__("zlib").compress),
])
def test_compressed_file_cut_short_is_a_file_error(tmp_path: Path, suffix, compress) -> None:
    lines = "".join(json.dumps({"id": f"d{i}", "text": f"text number {i} " * 5}) + "\n"
                    for i in range(500)).encode()
    whole = compress(lines)
    path = tmp_path / f"c.jsonl{suffix}"
    path.write_bytes(whole)
    docs, errors = _read_file(path)
    assert len(docs) == 500 and errors == []  # the whole file: no false alarm
    path.write_bytes(whole[: len(whole) * 7 // 10])
    docs, errors = _read_file(path)
    file_errors = [e for e in errors if e.get("scope") == "file"]
    assert len(file_errors) == 1 and file_errors[0]["source"] == str(path)
    assert "cut short or corrupt" in file_errors[0]["reason"]
    assert [d["id"] for d in docs] == [f"d{i}" for i in range(len(docs))]  # the prefix, in order


def test_csv_unterminated_quote_never_merges_rows(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text('id,text\na,fine\nb,"never closed\nc,swallowed\nd,also swallowed\n')
    docs, errors = _read_file(path)
    assert [d["id"] for d in docs] == ["a"]
    [err] = errors
    assert err["scope"] == "file" and err["source"] == f"{path}:3"
    assert "c,swallowed" in err["record"] and "unterminated or stray quote" in err["reason"]


def test_lone_surrogates_are_errors_with_a_reason(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "c.jsonl", [
        '{"id": "ok", "text": "fine", "title": ""}',
        '{"id": "t", "text": "bad \\ud800 text"}',
        '{"id": "x\\udfff", "text": "bad id"}',
        '{"id": "k", "text": "fine", "title": "bad \\udbff title"}'])
    [f] = validate_reader_config(ReaderConfig(str(path), title_field="title")).files
    out = [p for split in plan_splits(f) for p in read_split(split)]
    assert [p["id"] for k, p in out if k == "doc"] == ["ok"]
    errors = [p for k, p in out if k == "error"]
    assert [e["id"] for e in errors] == ["t", "x\\udfff", "k"]
    assert all("lone surrogate" in e["reason"] for e in errors)
    for e in errors:
        json.dumps(e, ensure_ascii=False).encode("utf-8")  # writable as UTF-8


def test_reserved_keep_fields_are_refused() -> None:
    with pytest.raises(ConfigError, match="names a column beam-e5 writes itself"):
        ReaderConfig("x", keep_fields="title,tokens")


@pytest.mark.parametrize("column", list(OUTPUT_COLUMNS[:-1]))
def test_every_column_beam_e5_writes_is_refused_as_a_kept_field_with_a_rename_hint(
        column: str) -> None:
    with pytest.raises(ConfigError) as e:
        ReaderConfig("x", keep_fields=("lang", column))
    assert f"--keep-fields {column!r} names a column beam-e5 writes itself" in str(e.value)
    assert f"--keep-fields {column}:source_{column}" in str(e.value)


def test_keep_fields_rename_a_field_to_a_column() -> None:
    cfg = ReaderConfig("x", keep_fields="doc_id:source_doc_id, lang,dc:title:dc_title")
    assert cfg.kept == (("doc_id", "source_doc_id"), ("lang", "lang"), ("dc:title", "dc_title"))
    assert cfg.kept_columns == ("source_doc_id", "lang", "dc_title")
    with pytest.raises(ConfigError, match="'x:chunk' names a column beam-e5 writes itself"):
        ReaderConfig("x", keep_fields="x:chunk")
    with pytest.raises(ConfigError, match="two fields to the column 'a'"):
        ReaderConfig("x", keep_fields="a,b:a")
    with pytest.raises(ConfigError, match="needs both names"):
        ReaderConfig("x", keep_fields="doc_id:")


def test_a_renamed_kept_field_reaches_the_document_under_its_column(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text('{"id": "a", "text": "t", "doc_id": "D-1", "chunk": 3}\n')
    cfg = ReaderConfig(str(path), keep_fields="doc_id:source_doc_id,chunk:source_chunk")
    [f] = validate_reader_config(cfg).files
    [(kind, d)] = [item for s in plan_splits(f) for item in read_split(s)]
    assert (kind, d["fields"]) == ("doc", {"source_doc_id": "D-1", "source_chunk": 3})
    with pytest.raises(ConfigError, match="'nosuch' is not a field"):
        validate_reader_config(ReaderConfig(str(path), keep_fields="nosuch:x"))


def test_keep_fields_are_checked_against_a_sample_of_json_records(tmp_path: Path) -> None:
    """A field the first record lacks but later ones have is kept (null where it is missing);
    a field no sampled record has is still refused before the run."""
    path = write_lines(tmp_path / "c.jsonl", ['{"id": "a", "text": "one"}',
                                              '{"id": "b", "text": "two", "lang": "en"}'])
    [f] = validate_reader_config(ReaderConfig(str(path), keep_fields=("lang",))).files
    docs = [d for s in plan_splits(f) for kind, d in read_split(s) if kind == "doc"]
    assert [d["fields"] for d in docs] == [{"lang": None}, {"lang": "en"}]
    with pytest.raises(ConfigError, match="'country' is not a field .* first 100 JSON records"):
        validate_reader_config(ReaderConfig(str(path), keep_fields=("country",)))
