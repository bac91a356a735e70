"""The count-balance rule (beam_e5.jobs.counts), with hand-built counts."""

from __future__ import annotations

import pytest

from beam_e5.jobs.counts import check_balance, manifest_counts

RAW = {"documents": 95, "reader_errors": 5, "id_conflicts": 2, "embed_errors": 1,
       "exact_duplicates": 10, "semantic_duplicates": 4, "embedded": 82, "written": 78,
       "chunk_rows": 30, "chunked_documents": 6, "truncated_documents": 0, "tokens_cut": 0}


def test_manifest_counts_from_the_stream_counts():
    counts = manifest_counts(RAW)
    assert counts == {"read": 100, "invalid": 8, "exact_duplicates": 10,
                      "semantic_duplicates": 4, "embedded": 82, "written": 78,
                      "chunk_rows": 30, "chunked_documents": 6, "truncated_documents": 0,
                      "tokens_cut": 0}


def test_rows_carried_inside_the_store_count_as_chunk_rows():
    raw = {**RAW, "carried": 40, "new": 2, "reembedded": 3, "deleted": 7,
           "carried_chunk_rows": 12}
    counts = manifest_counts(raw)
    assert counts["chunk_rows"] == 42
    assert (counts["carried"], counts["new"], counts["reembedded"], counts["deleted"]) == \
        (40, 2, 3, 7)


def test_missing_optional_streams_count_zero():
    raw = {"documents": 3, "reader_errors": 0, "embed_errors": 0, "embedded": 3, "written": 3}
    assert manifest_counts(raw) == {"read": 3, "invalid": 0, "exact_duplicates": 0,
                                    "semantic_duplicates": 0, "embedded": 3, "written": 3}


@pytest.mark.parametrize("field, delta", [("written", 1), ("documents", -1),
                                          ("semantic_duplicates", 2)])
def test_counts_that_do_not_balance_are_a_bug(field, delta):
    with pytest.raises(RuntimeError, match="counts do not balance: read="):
        manifest_counts({**RAW, field: RAW[field] + delta})


def test_check_balance_without_exact_duplicates():
    counts = {"read": 10, "written": 7, "semantic_duplicates": 2, "invalid": 1}
    assert check_balance(counts) is counts
    with pytest.raises(RuntimeError, match="this is a bug"):
        check_balance({**counts, "invalid": 0})
