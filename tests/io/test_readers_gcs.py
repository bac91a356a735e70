"""ReadCorpus on gs:// paths, against a local gcp-storage-emulator (no cloud, no credentials)."""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beam_e5.errors import ConfigError
from beam_e5.io.readers import (
    ReadCorpus,
    ReaderConfig,
    plan_splits,
    validate_reader_config,
)


def _parquet_bytes(n: int, row_group_size: int) -> bytes:
    buf = io.BytesIO()
    table = pa.table(
        {"id": [f"p{i}" for i in range(n)], "text": [f"parquet doc {i}" for i in range(n)]}
    )
    pq.write_table(table, buf, row_group_size=row_group_size)
    return buf.getvalue()


def test_read_jsonl_and_parquet_from_gcs(gcs_emulator, run_beam) -> None:
    lines = [
        {"id": 1, "text": "json one"},
        {"id": 2, "text": None},
        {"id": 3, "text": "json three"},
    ]
    gcs_emulator.upload("corpus/a.jsonl", "".join(json.dumps(r) + "\n" for r in lines).encode())
    gcs_emulator.upload("corpus/b.parquet", _parquet_bytes(7, row_group_size=3))
    cfg = ReaderConfig(
        f"{gcs_emulator.url('corpus/*.jsonl')},{gcs_emulator.url('corpus/*.parquet')}"
    )

    resolved = validate_reader_config(cfg)
    urls = [gcs_emulator.url("corpus/a.jsonl"), gcs_emulator.url("corpus/b.parquet")]
    assert [f.path for f in resolved.files] == urls
    assert len(plan_splits(resolved.files[1])) == 3  # row groups, read from gs://

    def build(p):
        out = p | ReadCorpus(cfg, split_bytes=40)  # the JSONL file is read in byte ranges
        return {"documents": out.documents, "errors": out.errors}

    run = run_beam(build)
    docs = sorted(run.outputs["documents"], key=lambda d: d["id"])
    assert [d["id"] for d in docs] == ["1", "3"] + [f"p{i}" for i in range(7)]
    assert docs[-1]["source"] == gcs_emulator.url("corpus/b.parquet") + ":row=6"
    assert docs[0]["source"] == gcs_emulator.url("corpus/a.jsonl") + ":byte=0"
    [error] = run.outputs["errors"]
    assert error["id"] == "2" and "null" in error["reason"]
    assert run.counters == {"records_read": 10, "records_invalid": 1}


def test_gcs_config_errors(gcs_emulator) -> None:
    with pytest.raises(ConfigError, match="no file matches"):
        validate_reader_config(ReaderConfig(gcs_emulator.url("nothing/*.jsonl")))
    gcs_emulator.upload("bad/x.parquet", b"not parquet" * 20)
    with pytest.raises(ConfigError, match="cannot read the Parquet schema"):
        validate_reader_config(ReaderConfig(gcs_emulator.url("bad/x.parquet")))
    gcs_emulator.upload("ok/y.parquet", _parquet_bytes(2, row_group_size=2))
    with pytest.raises(ConfigError, match="--text-field 'body'"):
        validate_reader_config(ReaderConfig(gcs_emulator.url("ok/y.parquet"), text_field="body"))


def test_fixture_helpers(gcs_emulator) -> None:
    url = gcs_emulator.upload("dir/file.bin", b"\x00\x01payload")
    assert url == f"gs://{gcs_emulator.bucket_name}/dir/file.bin"
    assert gcs_emulator.download("dir/file.bin") == b"\x00\x01payload"
    assert gcs_emulator.list_names("dir/") == ["dir/file.bin"]
    assert gcs_emulator.host.startswith("http://127.0.0.1:")
