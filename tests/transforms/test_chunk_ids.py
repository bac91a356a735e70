"""Ids that collide with window ids: the pure rule, then the Beam transform (DirectRunner)."""

from __future__ import annotations

import apache_beam as beam

from beam_e5.transforms.chunk_ids import (
    SeparateIdCollisions,
    chunk_id_parts,
    colliding_documents,
    collision_claims,
)
from beam_e5.transforms.embed_texts import chunk_id


def test_chunk_id_parts_reads_exactly_the_ids_chunk_id_makes() -> None:
    for doc_id, n in (("a", 0), ("a", 12), ("a#1", 3), ("", 1), ("x\ny", 2)):
        assert chunk_id_parts(chunk_id(doc_id, n)) == (doc_id, n)
    for not_a_window in ("a", "a#", "a#01", "a#-1", "a#1x", "a# 1", "#"):
        assert chunk_id_parts(not_a_window) is None


def row(doc_id: str, chunk: int | None = 0, chunks: int = 1, window: int | None = None) -> dict:
    return {"id": doc_id if window is None else chunk_id(doc_id, window), "doc_id": doc_id,
            "chunk": chunk, "chunks": chunks, "source": f"src:{doc_id}", "text_sha256": "k"}


def test_claims_come_from_document_rows_only() -> None:
    assert collision_claims(row("a", None, 3)) == [("a", ("windows", 3))]
    assert collision_claims(row("a", 1, 3, window=1)) == []  # a window row claims nothing
    assert collision_claims(row("a#1")) == [("a", ("id", 1, "a#1"))]
    assert collision_claims(row("a#1", None, 2)) == [("a#1", ("windows", 2)),
                                                     ("a", ("id", 1, "a#1"))]
    assert collision_claims(row("plain")) == []


def test_only_an_id_below_the_window_count_collides() -> None:
    claims = [("windows", 3), ("id", 1, "a#1"), ("id", 3, "a#3"), ("id", 0, "a#0")]
    found = colliding_documents("a", claims)
    assert [doc_id for doc_id, _ in found] == ["a#1", "a#0"]
    assert "window 1 of the document 'a' (cut into 3 windows, ids a#0 to a#2)" in found[0][1]
    assert colliding_documents("a", [("id", 0, "a#0")]) == []  # a is one window: id a
    assert colliding_documents("a", [("windows", 2)]) == []


def test_the_transform_drops_every_row_of_the_colliding_document_also_when_carried(
        run_beam) -> None:
    embedded = [row("a", None, 3)] + [row("a", n, 3, window=n) for n in range(3)] + [
        row("a#1", None, 2), row("a#1", 0, 2, window=0), row("a#1", 1, 2, window=1),
        row("b")]
    carried = [row("b#0"), row("c", None, 2), row("c#5")]  # c#5 is fine: c has 2 windows

    def build(p):
        rows, kept_carried, errors = (p | "Rows" >> beam.Create(embedded)) | SeparateIdCollisions(
            p | "Carried" >> beam.Create(carried + [row("c#1")]))
        return {"rows": rows, "carried": kept_carried, "errors": errors}

    out = run_beam(build).outputs
    assert sorted(r["id"] for r in out["rows"]) == ["a", "a#0", "a#1", "a#2", "b"]
    assert all(r["doc_id"] == "a" for r in out["rows"] if r["id"] == "a#1")
    assert sorted(r["id"] for r in out["carried"]) == ["b#0", "c", "c#5"]
    assert sorted((e["id"], e["source"]) for e in out["errors"]) == [
        ("a#1", "src:a#1"), ("c#1", "src:c#1")]
