"""Tests for beam_e5.transforms.reembed_split: every category of the split against a previous
snapshot (new, re-embedded for changed text, re-embedded for a different model signature,
carried with all its chunk rows, previous duplicates, deleted ids), on a real Beam pipeline."""

from __future__ import annotations

import json
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from beam_e5.dedupe.text_key import text_key
from beam_e5.records import Document
from beam_e5.transforms.reembed_split import (
    CARRIED,
    DELETED,
    NEW,
    REEMBEDDED,
    TO_EMBED,
    deleted_to_json,
    split_by_previous,
)


def doc(doc_id: str, text: str, fields: dict | None = None) -> Document:
    return {"id": doc_id, "text": text, "text_sha256": text_key(text),
            "source": f"v2.jsonl:{doc_id}", "fields": {} if fields is None else fields}


def row(doc_id: str, text: str, *, chunk: int | None = None, chunks: int = 1,
        tokens_cut: int = 0, row_id: str | None = None) -> dict[str, Any]:
    """A vector row of the previous snapshot (as read_previous gives it, embedding as a list)."""
    return {"id": row_id or (doc_id if chunk is None else f"{doc_id}#{chunk}"), "doc_id": doc_id,
            "text_sha256": text_key(text), "source": f"v1.jsonl:{doc_id}",
            "fields": {"old": True}, "embedding": [0.6, 0.8], "tokens": 7, "chunk": chunk,
            "chunks": chunks, "char_start": None, "char_end": None, "tokens_cut": tokens_cut}


def carried(old: dict[str, Any], new: Document, truncated: bool = False) -> dict[str, Any]:
    """What the split makes of a carried previous row: the new document's hash, source and
    fields, the old vector and window columns."""
    return {**old, "text_sha256": new["text_sha256"], "source": new["source"],
            "fields": new["fields"], "doc_id": new["id"], "truncated": truncated}


def check_split(docs: list[Document], present: list[str], previous: list[tuple[str, Any]],
                same_model: bool, *, expect_carried: list[dict], expect_to_embed: list[tuple],
                expect_deleted: list[dict]) -> None:
    """Run split_by_previous on a TestPipeline and assert every output exactly."""
    with BeamTestPipeline() as p:
        out = split_by_previous(
            p | "Docs" >> beam.Create(docs),
            p | "Present" >> beam.Create(present),
            p | "Previous" >> beam.Create(previous),
            same_model)
        assert_that(out[CARRIED], equal_to(expect_carried), label="CheckCarried")
        assert_that(out[TO_EMBED], equal_to(expect_to_embed), label="CheckToEmbed")
        assert_that(out[DELETED], equal_to(expect_deleted), label="CheckDeleted")


def test_every_category_in_one_run() -> None:
    same, changed, fresh, was_dup = (doc("same", "unchanged text"), doc("changed", "new text"),
                                     doc("fresh", "brand new"), doc("was-dup", "now unique"))
    old_same, old_changed = row("same", "unchanged text"), row("changed", "old text")
    check_split(
        [same, changed, fresh, was_dup],
        # "now-dup" was written last time and is an exact duplicate now: present, not unique
        ["same", "changed", "fresh", "was-dup", "now-dup", "now-dup"],
        [("same", old_same), ("changed", old_changed), ("was-dup", None),
         ("now-dup", row("now-dup", "x")), ("gone", row("gone", "y")), ("gone-dup", None)],
        True,
        expect_carried=[carried(old_same, same)],
        expect_to_embed=[(REEMBEDDED, changed), (NEW, fresh), (REEMBEDDED, was_dup)],
        expect_deleted=[{"id": "gone"}, {"id": "gone-dup"}])


def test_unchanged_text_is_carried_with_the_new_documents_source_and_fields() -> None:
    new = doc("a", "same text", fields={"lang": "en"})
    old = row("a", "same text")
    expected = {"id": "a", "doc_id": "a", "text_sha256": text_key("same text"),
                "source": "v2.jsonl:a", "fields": {"lang": "en"}, "embedding": [0.6, 0.8],
                "tokens": 7, "chunk": None, "chunks": 1, "char_start": None, "char_end": None,
                "tokens_cut": 0, "truncated": False}
    assert carried(old, new) == expected  # the helper the other tests use says the same
    check_split([new], ["a"], [("a", old)], True,
                expect_carried=[expected], expect_to_embed=[], expect_deleted=[])


def test_missing_fields_become_an_empty_dict() -> None:
    new = doc("a", "same text")
    new["fields"] = None  # type: ignore[typeddict-item]
    old = row("a", "same text")
    check_split([new], ["a"], [("a", old)], True,
                expect_carried=[{**carried(old, doc("a", "same text")), "fields": {}}],
                expect_to_embed=[], expect_deleted=[])


def test_changed_text_is_reembedded() -> None:
    new = doc("a", "edited text")
    check_split([new], ["a"], [("a", row("a", "original text"))], True,
                expect_carried=[], expect_to_embed=[(REEMBEDDED, new)], expect_deleted=[])


def test_different_model_signature_reembeds_unchanged_documents() -> None:
    a, b = doc("a", "same text"), doc("b", "other text")
    chunked = [row("b", "other text", chunks=2), row("b", "other text", chunk=0, chunks=2),
               row("b", "other text", chunk=1, chunks=2)]
    check_split([a, b], ["a", "b"], [("a", row("a", "same text"))] + [("b", r) for r in chunked],
                False, expect_carried=[], expect_to_embed=[(REEMBEDDED, a), (REEMBEDDED, b)],
                expect_deleted=[])


def test_a_chunked_document_is_carried_with_every_row() -> None:
    new = doc("long", "a long text")
    head = row("long", "a long text", chunks=3, tokens_cut=0)
    windows = [row("long", "a long text", chunk=k, chunks=3) for k in range(3)]
    check_split([new], ["long"], [("long", r) for r in [windows[2], head, windows[0], windows[1]]],
                True, expect_carried=[carried(r, new) for r in [head, *windows]],
                expect_to_embed=[], expect_deleted=[])


def test_truncated_flag_follows_tokens_cut() -> None:
    new = doc("cut", "a text that was cut")
    old = row("cut", "a text that was cut", tokens_cut=12)
    check_split([new], ["cut"], [("cut", old)], True,
                expect_carried=[carried(old, new, truncated=True)], expect_to_embed=[],
                expect_deleted=[])


def test_chunk_rows_without_a_document_row_are_reembedded() -> None:
    """Only the document row says which text the vectors were made from: without it the
    document is embedded again, never carried half."""
    new = doc("k", "text")
    rows = [row("k", "text", chunk=k, chunks=2) for k in range(2)]
    check_split([new], ["k"], [("k", r) for r in rows], True,
                expect_carried=[], expect_to_embed=[(REEMBEDDED, new)], expect_deleted=[])


def test_previous_duplicate_now_unique_is_reembedded_not_new() -> None:
    new = doc("d", "was a duplicate")
    check_split([new], ["d"], [("d", None)], True,
                expect_carried=[], expect_to_embed=[(REEMBEDDED, new)], expect_deleted=[])


def test_empty_previous_makes_everything_new() -> None:
    a, b = doc("a", "one"), doc("b", "two")
    with BeamTestPipeline() as p:
        out = split_by_previous(p | "Docs" >> beam.Create([a, b]),
                                p | "Present" >> beam.Create(["a", "b"]),
                                p | "Previous" >> beam.Create([]).with_output_types(
                                    tuple[str, dict]),
                                True)
        assert_that(out[TO_EMBED], equal_to([(NEW, a), (NEW, b)]), label="CheckToEmbed")
        assert_that(out[CARRIED], equal_to([]), label="CheckCarried")
        assert_that(out[DELETED], equal_to([]), label="CheckDeleted")


@pytest.mark.parametrize(("present", "deleted"), [
    ([], [{"id": "x"}, {"id": "x-dup"}]),  # both gone from the corpus
    (["x", "x-dup"], []),  # both still read, now exact duplicates of other documents
    (["x-dup"], [{"id": "x"}]),
])
def test_deleted_only_when_absent_from_every_valid_record(present: list[str],
                                                          deleted: list[dict]) -> None:
    check_split([doc("other", "kept")], ["other", *present],
                [("x", row("x", "t")), ("x-dup", None), ("other", row("other", "kept"))], True,
                expect_carried=[carried(row("other", "kept"), doc("other", "kept"))],
                expect_to_embed=[], expect_deleted=deleted)


def test_present_id_with_no_document_and_no_previous_gives_nothing() -> None:
    check_split([], ["ghost"], [], True, expect_carried=[], expect_to_embed=[], expect_deleted=[])


def test_deleted_to_json_is_sorted_and_exact() -> None:
    assert deleted_to_json({"id": "b", "a": 1}) == '{"a": 1, "id": "b"}'
    assert json.loads(deleted_to_json({"id": "é"})) == {"id": "é"}
    assert deleted_to_json({"id": "é"}) == '{"id": "\\u00e9"}'
