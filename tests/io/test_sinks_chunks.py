"""Chunk columns in vectors files: written, read back, and absent from older files."""

import numpy as np

from beam_e5.io.sinks import table_to_records, vectors_schema, vectors_to_table


def test_chunk_columns_round_trip_and_older_files_read_as_whole_documents():
    schema = vectors_schema(2, "float32", ["lang"], {"beam_e5.model": "m"})
    vec = np.array([0.6, 0.8], np.float32)
    records = [
        {"id": "a", "embedding": vec, "text_sha256": "x", "tokens": 5, "fields": {"lang": "en"},
         "doc_id": "a", "chunk": 0, "chunks": 1, "char_start": 0, "char_end": 9, "tokens_cut": 3},
        {"id": "b#0", "embedding": vec, "text_sha256": "y", "tokens": 7, "fields": {},
         "doc_id": "b", "chunk": 0, "chunks": 2, "char_start": 0, "char_end": 40, "tokens_cut": 0},
        {"id": "b", "embedding": vec, "text_sha256": "y", "tokens": 12, "fields": {},
         "doc_id": "b", "chunk": None, "chunks": 2, "char_start": None, "char_end": None,
         "tokens_cut": 0},
    ]
    table = vectors_to_table(records, schema)
    assert table.schema.names[:4] == ["id", "embedding", "text_sha256", "tokens"]
    assert table.column("chunk").to_pylist() == [0, 0, None]
    back = list(table_to_records(table))
    for want, got in zip(records, back):
        for k in ("id", "doc_id", "chunk", "chunks", "char_start", "char_end", "tokens_cut"):
            assert got[k] == want[k], k
    assert back[0]["fields"] == {"lang": "en"}
    # a file written before chunking: no chunk columns; every row is a whole document
    old = table.select(["id", "embedding", "text_sha256", "tokens", "lang"])
    legacy = list(table_to_records(old))
    assert [(r["doc_id"], r["chunk"], r["chunks"], r["tokens_cut"]) for r in legacy] == [
        ("a", 0, 1, 0), ("b#0", 0, 1, 0), ("b", 0, 1, 0)]
