"""The vector-output contract: the same job through every VectorOutput publishes the same rows.

One corpus (real text, exact duplicates, long documents cut into windows) is embedded, then
re-embedded after edits, deletions and additions, once into a Parquet snapshot directory and
once into a real PostgreSQL/pgvector table (pgserver, no mock). What each output publishes
(every row's id, vector bytes, text key, tokens, chunk columns and kept field) and the
manifest counts must be identical.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from beam_e5.io.pg.config import PgSinkConfig
from beam_e5.io.pg.connection import connect
from beam_e5.io.readers import ReaderConfig
from beam_e5.io.rundir import OutputConfig
from beam_e5.io.targets.parquet import ParquetOutput
from beam_e5.io.targets.pgvector import PgvectorOutput
from beam_e5.jobs.embed import EmbedJob, run_embed
from beam_e5.model.config import EncoderConfig
from beam_e5.model.profiles import ProfileOverrides
from tools.localtext import build_local_corpus, write_jsonl

COLUMNS = ("id", "embedding", "text_sha256", "tokens", "doc_id", "chunk", "chunks",
           "char_start", "char_end", "tokens_cut", "collection")


def _corpora(root: Path) -> tuple[Path, Path]:
    docs = build_local_corpus(90, seed=11, max_chars=900, duplicate_fraction=0.1)
    v1, extra = docs[:80], docs[80:]
    write_jsonl(v1, root / "v1.jsonl")
    v2 = [dict(d, text=d["text"] + " (revised)") if i % 10 == 3 else d
          for i, d in enumerate(v1) if i % 17 != 5] + extra
    write_jsonl(v2, root / "v2.jsonl")
    return root / "v1.jsonl", root / "v2.jsonl"


def _job(corpus: Path, model: str, output, previous=None) -> EmbedJob:
    return EmbedJob(reader=ReaderConfig(str(corpus), keep_fields=("collection",)),
                    encoder=EncoderConfig(model, overrides=ProfileOverrides(max_length=32)),
                    output=output, previous=previous)


def _parquet_rows(directory: Path) -> dict[str, tuple]:
    table = pq.read_table(sorted(directory.glob("vectors-*.parquet")))
    return {row["id"]: _row(row) for row in table.to_pylist()}


def _pg_rows(uri: str) -> dict[str, tuple]:
    names = ", ".join(f'"{c}"' for c in COLUMNS)
    with connect(uri) as conn:
        cursor = conn.execute(f"SELECT {names} FROM docs")
        rows = [dict(zip(COLUMNS, r)) for r in cursor.fetchall()]
    for row in rows:
        row["embedding"] = row["embedding"].to_numpy()
    return {row["id"]: _row(row) for row in rows}


def _row(row: dict) -> tuple:
    vector = np.asarray(row["embedding"], dtype=np.float32).tobytes()
    return (vector,) + tuple(row[c] for c in COLUMNS if c not in ("id", "embedding"))


def _counts(report: Path) -> dict:
    return json.loads((report / "manifest.json").read_text())["counts"]


def test_parquet_and_pgvector_publish_the_same_rows(tmp_path, tiny_models,
                                                    pg_database):
    v1, v2 = _corpora(tmp_path)
    model = tiny_models("bert", "e5-small-v2")
    uri = pg_database + "&table=docs"

    def pg(report: str) -> PgvectorOutput:
        return PgvectorOutput(PgSinkConfig(uri, str(tmp_path / report), index="none"))

    def files(name: str) -> ParquetOutput:
        return ParquetOutput(OutputConfig(str(tmp_path / name)))

    run_embed(_job(v1, model, files("night1")), [])
    run_embed(_job(v1, model, pg("pg1")), [])
    assert _pg_rows(pg_database) == _parquet_rows(tmp_path / "night1")
    assert _counts(tmp_path / "pg1") == _counts(tmp_path / "night1")
    first = _counts(tmp_path / "night1")
    assert first["chunk_rows"] > 0 and first["exact_duplicates"] > 0  # the corpus covers both

    run_embed(_job(v2, model, files("night2"), previous=str(tmp_path / "night1")), [])
    run_embed(_job(v2, model, pg("pg2"), previous=uri), [])
    assert _pg_rows(pg_database) == _parquet_rows(tmp_path / "night2")
    second, in_pg = _counts(tmp_path / "night2"), _counts(tmp_path / "pg2")
    # The one documented difference (README, pgvector limits): the table holds no
    # duplicates, so a document that was a duplicate last night counts as new there, and as
    # reembedded beside a snapshot's duplicates-*.parquet. Everything else is equal.
    moved = second["reembedded"] - in_pg["reembedded"]
    assert moved >= 0 and in_pg["new"] == second["new"] + moved
    assert {k: v for k, v in in_pg.items() if k not in ("new", "reembedded")} == \
        {k: v for k, v in second.items() if k not in ("new", "reembedded")}
    assert second["carried"] > 0 and second["reembedded"] > 0 and second["new"] > 0
    assert second["deleted"] > 0


def test_each_output_refuses_what_it_cannot_serve(tmp_path, tiny_models):
    from beam_e5.errors import ConfigError
    from beam_e5.transforms.semantic_dedupe import SemanticDedupeConfig

    v1, _ = _corpora(tmp_path)
    model = tiny_models("bert", "e5-small-v2")
    uri = "postgresql://u:pw@localhost/db?table=docs"
    pg = PgvectorOutput(PgSinkConfig(uri, str(tmp_path / "r")))
    with pytest.raises(ConfigError, match="differs from --output"):
        _job(v1, model, pg, previous=uri.replace("docs", "other"))
    with pytest.raises(ConfigError, match="--dedupe-threshold needs every vector"):
        EmbedJob(reader=ReaderConfig(str(v1)), encoder=EncoderConfig(model), output=pg,
                 previous=uri, semantic=SemanticDedupeConfig(threshold=0.9))
    with_text = PgvectorOutput(PgSinkConfig(uri, str(tmp_path / "r"), store_text=True))
    with pytest.raises(ConfigError, match="--store-text adds a 'text' column"):
        EmbedJob(reader=ReaderConfig(str(v1), keep_fields=("text",)),
                 encoder=EncoderConfig(model), output=with_text)
    files = ParquetOutput(OutputConfig(str(tmp_path / "out")))
    with pytest.raises(ConfigError, match="--previous is a postgresql:// URI"):
        _job(v1, model, files, previous=uri)
    assert not (tmp_path / "out").exists() and not (tmp_path / "r").exists()
