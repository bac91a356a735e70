"""The estimate of documents to read that the progress lines' share and ETA rest on."""

import gzip

import pyarrow as pa
import pyarrow.parquet as pq

from beam_e5.io.reader_validation import InputFile
from beam_e5.jobs import progress
from beam_e5.jobs.progress import estimate_documents, extrapolate


def _file(path, fmt, compressed=False):
    return InputFile(str(path), path.stat().st_size, fmt, compressed, None)


def test_extrapolate():
    assert extrapolate(1_000, 100, 5) == 50
    assert extrapolate(80, 80, 7) == 7  # the sample was the whole input
    assert extrapolate(1_000, 0, 0) is None and extrapolate(1_000, 100, 0) is None


def test_line_formats_from_a_sample_of_the_first_file(tmp_path, monkeypatch):
    monkeypatch.setattr(progress, "SAMPLE_BYTES", 1_000)
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("".join(f'{{"id": "{k:04d}", "text": "t"}}\n' for k in range(300)))
    b.write_text("".join(f'{{"id": "{k:04d}", "text": "t"}}\n' for k in range(100)))
    estimate = estimate_documents([_file(a, "jsonl"), _file(b, "jsonl")])
    assert estimate == 400  # same-sized lines, whole lines sampled: the rate holds
    csv = tmp_path / "c.csv"
    csv.write_text("id,text\n1,a\n2,b\n")
    assert estimate_documents([_file(csv, "csv")]) == 2  # the header is no document


def test_parquet_row_counts_and_no_estimate(tmp_path):
    p = tmp_path / "a.parquet"
    pq.write_table(pa.table({"id": ["a", "b", "c"], "text": ["x", "y", "z"]}), p)
    assert estimate_documents([_file(p, "parquet"), _file(p, "parquet")]) == 6
    gz = tmp_path / "a.jsonl.gz"
    gz.write_bytes(gzip.compress(b'{"id": "a", "text": "x"}\n'))
    assert estimate_documents([_file(gz, "jsonl", compressed=True)]) is None
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet")
    assert estimate_documents([_file(bad, "parquet")]) is None
    assert estimate_documents([]) is None
