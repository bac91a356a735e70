"""Tests for beam_e5.transforms.exact_dedupe."""

from __future__ import annotations

import apache_beam as beam

from beam_e5.dedupe.exact import resolve_id_group, resolve_text_group
from beam_e5.dedupe.text_key import text_key
from beam_e5.records import Document
from beam_e5.transforms.exact_dedupe import ExactDedupe


def doc(doc_id: str, text: str, source: str | None = None) -> Document:
    return {
        "id": doc_id,
        "text": text,
        "text_sha256": text_key(text),
        "source": source or f"corpus.jsonl:{doc_id}",
        "fields": {},
    }


def dedupe(run_beam, docs: list[Document]):
    def build(p):
        out = p | beam.Create(docs) | ExactDedupe()
        return {"unique": out.unique, "duplicates": out.duplicates, "errors": out["errors"]}

    run = run_beam(build)
    unique = sorted(run.outputs["unique"], key=lambda d: d["id"])
    dups = sorted(run.outputs["duplicates"], key=lambda d: (d["duplicate_of"], d["id"]))
    errors = sorted(run.outputs["errors"], key=lambda e: e["source"])
    assert len(unique) + len(dups) + len(errors) == len(docs)
    assert run.counters.get("exact_duplicates", 0) == len(dups)
    assert run.counters.get("id_conflicts", 0) == len(errors)
    return unique, dups, errors


def test_groups_keep_the_smallest_id(run_beam) -> None:
    docs = [
        doc("b", "The same text."),
        doc("a10", "the   SAME text."),
        doc("a2", "The same\ttext."),
        doc("z", "Something else."),
        doc("y", "ＳＯＭＥＴＨＩＮＧ ELSE."),
        doc("solo", "Only one of these."),
    ]
    unique, dups, errors = dedupe(run_beam, docs)
    assert errors == []
    assert [(d["id"], d["text"]) for d in unique] == [
        ("a10", "the   SAME text."),  # "a10" < "a2" < "b" in string order
        ("solo", "Only one of these."),
        ("y", "ＳＯＭＥＴＨＩＮＧ ELSE."),
    ]
    assert dups == [
        {"id": "a2", "duplicate_of": "a10", "similarity": 1.0, "kind": "exact"},
        {"id": "b", "duplicate_of": "a10", "similarity": 1.0, "kind": "exact"},
        {"id": "z", "duplicate_of": "y", "similarity": 1.0, "kind": "exact"},
    ]


def test_same_id_different_text_rejects_all(run_beam) -> None:
    docs = [
        doc("x", "first version", "a.jsonl:1"),
        doc("x", "second version", "a.jsonl:2"),
        doc("x", "first version", "a.jsonl:3"),
        doc("case", "Hello", "b.jsonl:1"),
        doc("case", "HELLO", "b.jsonl:2"),  # same key, different exact text: a conflict
        doc("fine", "first version", "c.jsonl:1"),
    ]
    unique, dups, errors = dedupe(run_beam, docs)
    assert [d["id"] for d in unique] == ["fine"]
    assert dups == []
    assert [(e["source"], e["id"]) for e in errors] == [
        ("a.jsonl:1", "x"),
        ("a.jsonl:2", "x"),
        ("a.jsonl:3", "x"),
        ("b.jsonl:1", "case"),
        ("b.jsonl:2", "case"),
    ]
    assert errors[0]["reason"] == "id 'x' appears 3 times with different text"
    assert "second version" in errors[1]["record"]


def test_same_id_same_text_keeps_one(run_beam) -> None:
    docs = [doc("x", "same", "b.jsonl:9"), doc("x", "same", "a.jsonl:1"), doc("w", "SAME")]
    unique, dups, errors = dedupe(run_beam, docs)
    assert errors == []
    # The same-id group keeps its smallest source; then "w" < "x" wins the text group.
    assert [(d["id"], d["source"]) for d in unique] == [("w", "corpus.jsonl:w")]
    assert dups == [
        {"id": "x", "duplicate_of": "w", "similarity": 1.0, "kind": "exact"},
        {"id": "x", "duplicate_of": "x", "similarity": 1.0, "kind": "exact"},
    ]


def test_group_functions_are_order_independent() -> None:
    group = [doc("c", "t"), doc("a", "t"), doc("b", "t")]
    assert list(resolve_text_group(group)) == list(resolve_text_group(reversed(group)))
    same_id = [doc("x", "t", "s2"), doc("x", "t", "s1")]
    assert list(resolve_id_group(same_id)) == list(resolve_id_group(reversed(same_id)))
    assert next(resolve_id_group(same_id))[1]["source"] == "s1"
