"""The same hostile corpus through both outputs (Parquet files, PostgreSQL): ids that collide
with window ids, and kept fields named like the columns beam-e5 writes, renamed.

The corpus: ``a`` (long: cut into windows ``a#0``, ``a#1``, ...) beside real documents ``a#1``
(the id of a's window 1), ``a#99`` (a#-shaped, but a has fewer windows) and ``b``; every
record has a ``doc_id`` and a ``chunk`` field, kept as ``source_doc_id``/``source_chunk``.
"""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pyarrow.parquet as pq
import pytest

from beam_e5.cli import main

pytestmark = pytest.mark.slow
LONG = " ".join(f"sentence {i} of the long document about pipelines." for i in range(60))
RECORDS = [
    {"id": "a", "text": LONG, "doc_id": "SRC-a", "chunk": "part-1"},
    {"id": "a#1", "text": "a short note whose id looks like a window id", "doc_id": "SRC-a1",
     "chunk": "x"},
    {"id": "a#99", "text": "another note, a#-shaped but no window has that number",
     "doc_id": "SRC-a99", "chunk": "y"},
    {"id": "b", "text": "plain short document", "doc_id": "SRC-b", "chunk": None},
]
KEEP = ["--keep-fields", "doc_id:source_doc_id,chunk:source_chunk"]


def _errors(report: Path) -> list[dict]:
    return [json.loads(line) for f in sorted(report.glob("errors-*.jsonl"))
            for line in f.read_text().splitlines() if line.strip()]


def _run(tmp_path: Path, model: str, output: list[str], capsys) -> tuple[int, str]:
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    rc = main(["embed", "--input", str(corpus), "--model", model, "--max-length", "32",
               *KEEP, *output])
    return rc, capsys.readouterr().err


def _parquet_rows(out: Path) -> list[dict]:
    return [r for f in sorted(out.glob("vectors-*.parquet"))
            for r in pq.read_table(f).drop_columns(["embedding"]).to_pylist()]


def _pg_rows(uri: str) -> list[dict]:
    with psycopg.connect(uri) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        return cur.execute("SELECT * FROM docs").fetchall()


@pytest.mark.parametrize("store", ["parquet", "postgresql"])
def test_a_window_id_collision_costs_one_document_and_renamed_fields_are_kept(
        store, tmp_path, tiny_models, capsys, request):
    model = tiny_models("bert", "e5-small-v2")
    report = tmp_path / "out"
    if store == "parquet":
        rc, err = _run(tmp_path, model, ["--output", str(report)], capsys)
    else:
        uri = request.getfixturevalue("pg_database")
        rc, err = _run(tmp_path, model, ["--output", uri + "&table=docs",
                                         "--report-dir", str(report)], capsys)
    assert rc == 0, err
    rows = _parquet_rows(report) if store == "parquet" else _pg_rows(uri)
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids))  # never two rows of one id
    windows = next(r["chunks"] for r in rows if r["id"] == "a")
    assert windows >= 3
    assert set(ids) == {"a", "a#99", "b"} | {f"a#{n}" for n in range(windows)}
    assert {r["doc_id"] for r in rows if r["id"] == "a#1"} == {"a"}  # a's window, not the note
    kept = {r["id"]: (r["source_doc_id"], r["source_chunk"]) for r in rows if r["chunk"] != 1}
    assert kept["a"] == ("SRC-a", "part-1") and kept["a#99"] == ("SRC-a99", "y")
    assert kept["b"] == ("SRC-b", None)
    [error] = _errors(report)
    assert error["id"] == "a#1" and error["source"].endswith("c.jsonl:2")
    assert "is also the id of window 1 of the document 'a'" in error["reason"]
    counts = json.loads((report / "manifest.json").read_text())["counts"]
    assert (counts["read"], counts["written"], counts["invalid"]) == (4, 3, 1)
    assert counts["chunk_rows"] == windows
