"""Rows PostgreSQL cannot hold cost one document each, never the run (real server, no mock)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from beam_e5.io.pg.config import PgSinkConfig
from beam_e5.io.pg.connection import connect
from beam_e5.io.pg.copy import _CopyBatches
from beam_e5.io.pg.refusals import doc_key, pg_cannot_hold
from beam_e5.io.pg.run import PgRun
from beam_e5.io.sinks import vectors_schema

DIM = 8
SCHEMA = vectors_schema(DIM, "float32", ("collection",), {})


@pytest.mark.parametrize("doc, where", [
    ({"id": "a\x00b", "fields": {}}, "the id"),
    ({"id": "a", "fields": {"text": "x\x00y"}}, "the text (--store-text)"),
    ({"id": "a", "fields": {"collection": "\x00"}}, "the kept field 'collection'"),
])
def test_a_nul_anywhere_postgresql_stores_is_named(doc, where):
    reason = pg_cannot_hold(doc)
    assert reason.startswith(where) and "NUL" in reason and "Parquet output keeps it" in reason


def test_what_postgresql_can_hold_passes():
    assert pg_cannot_hold({"id": "a#1 ñ 中", "fields": {"text": "tab\there", "n": {"k": "\x00"},
                                                        "none": None}}) is None


def test_doc_key_is_sha256_of_the_utf8_id():
    assert doc_key("中") == hashlib.sha256("中".encode()).digest()


def _row(i: int, doc: str, **kw) -> dict:
    vec = np.full(DIM, 1 / np.sqrt(DIM), np.float32)
    base = {"id": doc, "doc_id": doc, "chunk": 0, "chunks": 1, "embedding": vec,
            "text_sha256": f"{i:064x}", "tokens": 3, "source": f"in.jsonl:{i}",
            "fields": {"collection": "c"}}
    return {**base, **kw}


def _records() -> list[dict]:
    """20 one-window documents, three bad rows, and a document of three windows whose
    second window alone is bad."""
    nan = np.full(DIM, np.nan, np.float32)
    rows = [_row(i, f"d{i:02d}") for i in range(20)]
    rows[4]["embedding"] = nan  # pgvector: NaN not allowed in vector
    rows[9]["fields"] = {"collection": "a\x00b"}  # past the record rule: COPY refuses it
    rows[15]["id"] = rows[15]["doc_id"] = "d15\x00"
    big = [_row(100 + n, f"big#{n}", doc_id="big", chunk=n, chunks=3) for n in range(3)]
    big.append(_row(103, "big", doc_id="big", chunk=None, chunks=3))
    big[1]["embedding"] = nan
    return rows + big


def test_a_refused_row_costs_its_document_only(pg_database, tmp_path):
    run = PgRun.open(PgSinkConfig(pg_database + "&table=docs", str(tmp_path / "r"),
                                  index="none"), SCHEMA)
    try:
        copier = _CopyBatches(run.dsn, run._write_tables(run.load_table), SCHEMA, False)
        copier.setup()
        records = _records()
        refused = copier.process(records)  # one batch: halved until the bad rows are found
        copier.teardown()
        assert sorted(r["id"] for r in refused) == ["big#1", "d04", "d09", "d15\x00"]
        by_id = {r["id"]: r for r in refused}
        assert "NaN not allowed in vector" in by_id["d04"]["reason"]
        assert "0x00" in by_id["d09"]["reason"] and by_id["d09"]["source"] == "in.jsonl:9"
        assert by_id["big#1"]["doc_id"] == "big" and by_id["big#1"]["chunks"] == 3
        stats = run.publish(17, {"model": "random"}, {})  # 17 good documents, no row of big
    finally:
        run.close()
    assert stats["refused_documents"] == 4 and stats["duplicate_rows_dropped"] == 0
    with connect(pg_database) as conn:
        ids = {r[0] for r in conn.execute("SELECT id FROM docs")}
    assert ids == {f"d{i:02d}" for i in range(20)} - {"d04", "d09", "d15"}
