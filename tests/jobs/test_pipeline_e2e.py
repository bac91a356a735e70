"""The embed pipeline over 5,000+ real documents, locally and on the GCS emulator.

Marked slow: each run embeds ~5,000 texts with the real all-MiniLM-L6-v2 weights (max length
64 to keep it a couple of minutes on 2 cores).
"""

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beam_e5.cli import main
from tools.localtext import build_local_corpus, write_jsonl

N_DOCS = 5200
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def corpus_path(tmp_path_factory):
    docs = build_local_corpus(N_DOCS, seed=7, max_chars=1500, duplicate_fraction=0.05)
    path = tmp_path_factory.mktemp("e2e") / "corpus.jsonl"
    write_jsonl(docs, path)
    return path


def _args(inp, out, model):
    # truncate: one vector per document keeps this 5,000-document run short (chunked runs:
    # tests/jobs/test_runners.py and tests/jobs/test_long_documents.py)
    return ["embed", "--input", inp, "--output", out, "--model", model, "--max-length", "64",
            "--keep-fields", "collection", "--long-text", "truncate"]


def _vectors(tables):
    table = pa.concat_tables(tables)
    emb = np.stack(table.column("embedding").to_numpy(zero_copy_only=False))
    return dict(zip(table.column("id").to_pylist(), emb))


@pytest.fixture(scope="module")
def local_run(corpus_path, minilm_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("local-out")
    assert main(_args(str(corpus_path), str(out), minilm_dir)) == 0
    return out


def test_local_run_balances_and_is_clean(local_run, corpus_path):
    out = local_run
    manifest = json.loads((out / "manifest.json").read_text())
    c = manifest["counts"]
    assert c["read"] == N_DOCS
    assert c["read"] == (c["written"] + c["exact_duplicates"] + c["semantic_duplicates"]
                         + c["invalid"])
    assert c["exact_duplicates"] >= 0.04 * N_DOCS  # planted duplicates were found
    vectors = _vectors([pq.read_table(f) for f in out.glob("vectors-*.parquet")])
    assert len(vectors) == c["written"]
    # nothing is cut silently: the manifest and each truncated row say how much
    assert c["truncated_documents"] > 0 and c["tokens_cut"] > c["truncated_documents"]
    cut = pa.concat_tables([pq.read_table(f) for f in out.glob("vectors-*.parquet")]).column(
        "tokens_cut").to_pylist()
    assert sum(cut) == c["tokens_cut"] and sum(x > 0 for x in cut) == c["truncated_documents"]
    norms = np.linalg.norm(np.stack(list(vectors.values())), axis=1)
    assert np.all(np.abs(norms - 1) <= 1e-5)
    dups = pa.concat_tables([pq.read_table(f) for f in out.glob("duplicates-*.parquet")])
    dup_ids = dups.column("id").to_pylist()
    assert len(dup_ids) == len(set(dup_ids)) == c["exact_duplicates"]
    assert not set(dup_ids) & set(vectors)  # ids unique across vectors and duplicates
    assert set(dups.column("duplicate_of").to_pylist()) <= set(vectors)
    input_ids = {json.loads(line)["id"] for line in Path(corpus_path).read_text().splitlines()}
    errors = [json.loads(line) for f in out.glob("errors-*.jsonl")
              for line in f.read_text().splitlines()]
    assert set(vectors) | set(dup_ids) | {e["id"] for e in errors} == input_ids


def test_gcs_run_gives_identical_vectors(local_run, corpus_path, minilm_dir, gcs_emulator,
                                         tmp_path):
    inp = gcs_emulator.upload("corpus/corpus.jsonl", Path(corpus_path).read_bytes())
    out = gcs_emulator.url("runs/r1")
    assert main(_args(inp, out, minilm_dir)) == 0
    names = gcs_emulator.list_names("runs/r1/")
    assert "runs/r1/manifest.json" in names
    assert not [n for n in names if "beam-temp" in n or "_counts" in n]
    tables = []
    for name in names:
        if name.startswith("runs/r1/vectors-"):
            local = tmp_path / Path(name).name
            local.write_bytes(gcs_emulator.download(name))
            tables.append(pq.read_table(local))
    remote = _vectors(tables)
    local = _vectors([pq.read_table(f) for f in local_run.glob("vectors-*.parquet")])
    assert remote.keys() == local.keys()
    for k, v in local.items():
        np.testing.assert_array_equal(remote[k], v)
    remote_manifest = json.loads(gcs_emulator.download("runs/r1/manifest.json"))
    local_manifest = json.loads((local_run / "manifest.json").read_text())
    assert remote_manifest["counts"] == local_manifest["counts"]
