"""Each hostile record through BOTH outputs (Parquet and PostgreSQL), by the CLI.

The rule is the same for every output: a record the store cannot hold goes to
``errors-*.jsonl`` with the reason, the rest are published, the counts balance, exit 0.
The one difference is what each store can hold: a Parquet string holds a NUL character
(``\\u0000``) and any character, so Parquet publishes every record here; PostgreSQL's text
holds no NUL (refused by the output's record rule, before embedding) and a LATIN1 database
no character outside Latin-1 (refused by the server at COPY, found by halving the batch),
so those records are in PostgreSQL's errors and nowhere in its table, with every row of
their documents (a long one's windows too).
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from beam_e5.cli import main
from beam_e5.io.pg.connection import connect

LONG = " ".join(f"sentence {i} of a long manual about logs and rotation." for i in range(60))
GOOD = [{"id": f"good{i}", "text": f"plain document {i} about topic {i % 3}", "src": f"s{i}"}
        for i in range(8)] + [{"id": "goodlong", "text": LONG, "src": "long"}]
# per database encoding: (hostile records, what the PostgreSQL reason says)
HOSTILE = {
    "UTF8": ([{"id": "nul\u0000id", "text": "an id with a NUL", "src": "x"},
              {"id": "nultext", "text": "a text with a \u0000 NUL in it", "src": "x"},
              {"id": "nulfield", "text": "a kept field with a NUL", "src": "a\u0000b"},
              {"id": "nullong", "text": LONG + " more", "src": "\u0000"}],
             "NUL character"),
    "LATIN1": ([{"id": "id中", "text": "an id outside Latin-1", "src": "x"},
                {"id": "cjkfield", "text": "a kept field outside Latin-1", "src": "中文"},
                {"id": "cjklong", "text": LONG + " 中文", "src": "x"}],
               "refused this row at COPY"),
}


def _write(path: Path, docs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs),
                    encoding="utf-8")
    return path


def _errors(report: Path) -> dict[str, str]:
    lines = [json.loads(line) for p in report.glob("errors-*.jsonl")
             for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    return {e["id"]: e["reason"] for e in lines}


def _counts(report: Path) -> dict[str, int]:
    c = json.loads((report / "manifest.json").read_text())["counts"]
    assert c["read"] == c["written"] + c["exact_duplicates"] + c["semantic_duplicates"] + \
        c["invalid"]
    return c


@pytest.mark.parametrize("encoding", ["UTF8", "LATIN1"])
def test_each_hostile_record_through_both_outputs(encoding, request, tmp_path, tiny_models):
    hostile, reason = HOSTILE[encoding]
    db = request.getfixturevalue("pg_database" if encoding == "UTF8" else "pg_latin1_database")
    corpus = _write(tmp_path / "in.jsonl", GOOD + hostile)
    common = ["embed", "--input", str(corpus), "--model", tiny_models("bert", "e5-small-v2"),
              "--max-length", "32", "--keep-fields", "src"]
    bad_ids = {d["id"] for d in hostile}

    assert main(common + ["--output", str(tmp_path / "pq")]) == 0
    pq_counts = _counts(tmp_path / "pq")
    assert (pq_counts["written"], pq_counts["invalid"]) == (len(GOOD) + len(hostile), 0)
    pq_rows = pq.read_table(sorted((tmp_path / "pq").glob("vectors-*.parquet"))).to_pylist()
    assert {r["doc_id"] for r in pq_rows} == {d["id"] for d in GOOD} | bad_ids  # NULs kept

    report = tmp_path / "pg-report"
    assert main(common + ["--output", db + "&table=docs", "--report-dir", str(report),
                          "--store-text"]) == 0
    pg_counts = _counts(report)
    assert (pg_counts["written"], pg_counts["invalid"]) == (len(GOOD), len(hostile))
    errors = _errors(report)
    assert set(errors) == bad_ids and all(reason in r for r in errors.values()), errors
    with connect(db) as conn:
        pg_ids = {r[0] for r in conn.execute("SELECT id FROM docs")}
    assert pg_ids == {r["id"] for r in pq_rows if r["doc_id"] not in bad_ids}
    assert pg_counts["chunk_rows"] == pq_counts["chunk_rows"] - sum(
        1 for r in pq_rows if r["doc_id"] in bad_ids and r["chunk"] is not None
        and r["chunks"] > 1)


def test_a_carried_row_the_server_refuses_costs_its_document(pg_latin1_database, tmp_path,
                                                             tiny_models):
    """reembed: a document whose text is unchanged is carried inside the database, but its
    row is rebuilt from this run's kept fields; one the server refuses (a kept field now
    outside Latin-1) leaves that document out, in errors, and the counts balance."""
    out = pg_latin1_database + "&table=docs"
    common = ["--model", tiny_models("bert", "e5-small-v2"), "--max-length", "32",
              "--keep-fields", "src", "--output", out]
    v1 = _write(tmp_path / "v1.jsonl", GOOD)
    assert main(["embed", "--input", str(v1), "--report-dir", str(tmp_path / "r1")]
                + common) == 0
    changed = [dict(d, src="中文") if d["id"] in ("good3", "goodlong") else d for d in GOOD]
    v2 = _write(tmp_path / "v2.jsonl", changed)
    assert main(["reembed", "--input", str(v2), "--previous", out,
                 "--report-dir", str(tmp_path / "r2")] + common) == 0
    counts = _counts(tmp_path / "r2")
    assert counts["carried"] == len(GOOD) and counts["invalid"] == 2
    assert counts["written"] == len(GOOD) - 2 and counts["refused_at_write"] == 2
    assert set(_errors(tmp_path / "r2")) == {"good3", "goodlong"}
    with connect(pg_latin1_database) as conn:
        doc_ids = {r[0] for r in conn.execute("SELECT doc_id FROM docs")}
        rows = conn.execute("SELECT count(*) FROM docs").fetchone()[0]
    assert doc_ids == {d["id"] for d in GOOD} - {"good3", "goodlong"}
    assert rows == counts["written"] + counts["chunk_rows"]
