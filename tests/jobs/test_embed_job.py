"""The embed job's graph stages, each on a real DirectRunner pipeline with small inputs."""

from __future__ import annotations

import json

import apache_beam as beam
import numpy as np
import pytest

from beam_e5.io.pg.config import PgSinkConfig
from beam_e5.io.readers import ReaderConfig, validate_reader_config
from beam_e5.io.rundir import OutputConfig
from beam_e5.io.targets.parquet import ParquetOutput
from beam_e5.io.targets.pgvector import PgvectorOutput
from beam_e5.jobs.embed import (
    EmbedJob,
    ResolvedJob,
    Streams,
    carried_chunk_rows,
    count_written,
    exact_stage,
    job_vectors_schema,
    read_stage,
)
from beam_e5.model.config import EncoderConfig

DOCS = [{"id": "a", "text": "the quick brown fox", "tag": "x"},
        {"id": "b", "text": "the quick brown fox", "tag": "y"},  # exact duplicate of a
        {"id": "c", "text": "a lazy dog", "tag": "z"},
        {"id": "d"}]  # no text: a reader error


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    return path


def _job(corpus, model, output) -> EmbedJob:
    return EmbedJob(reader=ReaderConfig(str(corpus), keep_fields=("tag",)),
                    encoder=EncoderConfig(model), output=output)


def _resolved(job: EmbedJob) -> ResolvedJob:
    spec = job.encoder.resolve()
    return ResolvedJob(spec, {}, validate_reader_config(job.reader),
                       job_vectors_schema(job, spec, {}))


def _outputs(tmp_path):
    files = ParquetOutput(OutputConfig(str(tmp_path / "out")))
    table = PgvectorOutput(PgSinkConfig("postgresql://u@h/db?table=docs", str(tmp_path / "r"),
                                        store_text=True))
    return files, table


def test_read_and_exact_stages(corpus, tmp_path, tiny_models, run_beam):
    files, table = _outputs(tmp_path)
    model = tiny_models("bert", "e5-small-v2")
    for output, has_text in ((files, False), (table, True)):
        job = _job(corpus, model, output)
        resolved = _resolved(job)
        streams = Streams()

        def build(p, job=job, resolved=resolved, streams=streams):
            unique = exact_stage(read_stage(p, job, resolved, streams), job, streams)
            return {"unique": unique, **streams.counts}

        run = run_beam(build)
        unique = sorted(run.outputs["unique"], key=lambda d: d["id"])
        assert [d["id"] for d in unique] == ["a", "c"]
        assert [("text" in d["fields"]) for d in unique] == [has_text, has_text]
        assert unique[0]["fields"]["tag"] == "x"
        assert len(run.outputs["documents"]) == 3 and len(run.outputs["reader_errors"]) == 1
        assert [d["id"] for d in run.outputs["exact_duplicates"]] == ["b"]
        assert run.outputs["id_conflicts"] == []
        assert len(streams.errors) == 2 and len(streams.duplicates) == 1


def _row(doc_id: str, chunk=None, chunks=1, tokens_cut=0) -> dict:
    row_id = doc_id if chunk is None else f"{doc_id}#{chunk}"
    return {"id": row_id, "doc_id": doc_id, "chunk": chunk, "chunks": chunks,
            "tokens_cut": tokens_cut, "embedding": np.zeros(2, np.float32)}


def _counted(run_beam, written, carried):
    streams = Streams()

    def build(p):
        streams.carried = (p | "Carried" >> beam.Create(carried)) if carried is not None else None
        count_written(p | "Written" >> beam.Create(written), streams)
        ones = {name: pcoll | f"One_{name}" >> beam.Map(lambda _: 1)
                for name, pcoll in streams.counts.items()}
        return {**ones, **streams.sums}

    return {name: sum(values) for name, values in run_beam(build).outputs.items()}


def test_count_written_counts_documents_and_window_rows(run_beam):
    written = [_row("a"), _row("b", tokens_cut=7),
               _row("c", None, 2), _row("c", 0, 2), _row("c", 1, 2)]
    assert _counted(run_beam, written, None) == {
        "written": 3, "chunk_rows": 2, "chunked_documents": 1, "truncated_documents": 1,
        "tokens_cut": 7}


def test_documents_carried_inside_the_store_count_as_written(run_beam):
    carried = [{"id": "x", "chunks": 3, "chunk": None}, {"id": "y", "chunks": 1}]
    counts = _counted(run_beam, [_row("a")], carried)
    assert counts["written"] == 3 and counts["chunked_documents"] == 1
    assert counts["carried_chunk_rows"] == 3 and counts["chunk_rows"] == 0


@pytest.mark.parametrize("doc, rows", [({"chunks": 4}, 4), ({"chunks": 1}, 0), ({}, 0),
                                       ({"chunks": None}, 0)])
def test_carried_chunk_rows(doc, rows):
    assert carried_chunk_rows(doc) == rows


def test_the_schema_gains_text_where_the_output_stores_it(corpus, tmp_path,
                                                         tiny_models):
    files, table = _outputs(tmp_path)
    model = tiny_models("bert", "e5-small-v2")
    names = [_resolved(_job(corpus, model, out)).schema.names for out in (files, table)]
    assert "text" not in names[0] and names[1][-1] == "text"
    assert names[1][:-1] == names[0]
