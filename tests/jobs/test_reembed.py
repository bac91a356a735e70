"""Incremental re-embedding, publishing, and a run killed part-way then re-run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from realtext import write_nightly_corpora

from beam_e5.cli import main
from beam_e5.model.config import EncoderConfig
from beam_e5.model.fingerprint import weights_fingerprint

pytestmark = pytest.mark.slow
# truncate: one window per document keeps these runs short; chunked re-embedding is tested
# in tests/jobs/test_long_documents.py
FAST = ["--max-length", "32", "--long-text", "truncate"]


def _table(out: Path) -> pa.Table:
    return pa.concat_tables([pq.read_table(f) for f in sorted(out.glob("vectors-*.parquet"))])


def _vectors(out: Path) -> dict[str, np.ndarray]:
    """Every row (chunk rows DOCID#N included) by id."""
    table = _table(out)
    emb = table.column("embedding").to_numpy(zero_copy_only=False)
    return dict(zip(table.column("id").to_pylist(), emb))


def _doc_of(out: Path) -> dict[str, str]:
    """Row id -> document id."""
    table = _table(out)
    return dict(zip(table.column("id").to_pylist(), table.column("doc_id").to_pylist()))


def _manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    root = tmp_path_factory.mktemp("reembed")
    return (root, *write_nightly_corpora(root))


@pytest.fixture(scope="module")
def snapshots(corpora, minilm_dir):
    root, *_ = corpora
    pointer = str(root / "LATEST")
    assert main(["embed", "--input", str(root / "v1.jsonl"), "--output", str(root / "s1"),
                 "--model", minilm_dir, "--publish", pointer] + FAST) == 0
    assert main(["reembed", "--input", str(root / "v2.jsonl"), "--previous", pointer,
                 "--output", str(root / "s2"), "--model", minilm_dir, "--publish", pointer]
                + FAST) == 0
    return root, pointer


def test_reembed_counts_and_carried_vectors(corpora, snapshots):
    root, edited, deleted, new = corpora
    _, pointer = snapshots
    m = _manifest(root / "s2")
    c = m["counts"]
    assert (c["carried"], c["reembedded"], c["new"], c["deleted"]) == (930, 50, 30, 20)
    assert c["read"] == 1010 == c["written"] + c["exact_duplicates"] + c["semantic_duplicates"] \
        + c["invalid"]
    assert m["stats"]["texts_embedded"] == 80  # only new and changed texts reach the model
    assert c["truncated_documents"] > 100 and c["chunk_rows"] == 0
    old, cur = _vectors(root / "s1"), _vectors(root / "s2")
    old_doc, cur_doc = _doc_of(root / "s1"), _doc_of(root / "s2")
    assert set(cur_doc.values()) == (set(old_doc.values()) - deleted) | new
    carried_rows = 0
    for vid, vec in cur.items():
        if cur_doc[vid] not in edited and cur_doc[vid] not in new:
            # every row (each chunk and the document row) carried byte for byte
            assert vec.tobytes() == old[vid].tobytes()
            carried_rows += 1
    assert carried_rows == sum(1 for d in old_doc.values() if d not in edited | deleted)
    listed = {json.loads(line)["id"] for f in (root / "s2").glob("deleted-*.jsonl")
              for line in f.read_text().splitlines()}
    assert listed == deleted
    assert Path(pointer).read_text().strip() == str(root / "s2")


def test_reembed_is_idempotent(corpora, snapshots, minilm_dir):
    root, *_ = corpora
    args = ["reembed", "--input", str(root / "v2.jsonl"), "--previous", str(root / "s1"),
            "--output", str(root / "s2b"), "--model", minilm_dir] + FAST
    assert main(args) == 0
    assert main(args + ["--overwrite"]) == 0
    a, b = _vectors(root / "s2"), _vectors(root / "s2b")
    assert a.keys() == b.keys()
    assert all(a[k].tobytes() == b[k].tobytes() for k in a)
    assert _manifest(root / "s2")["counts"] == _manifest(root / "s2b")["counts"]


def test_changed_model_signature_reembeds_everything(corpora, snapshots, minilm_dir):
    root, *_ = corpora
    assert main(["reembed", "--input", str(root / "v2.jsonl"), "--previous", str(root / "s1"),
                 "--output", str(root / "s3"), "--model", minilm_dir,
                 "--max-length", "48"]) == 0
    c = _manifest(root / "s3")["counts"]
    assert c["carried"] == 0 and c["reembedded"] + c["new"] == 1010


def test_killed_run_leaves_previous_published_and_rerun_is_complete(corpora, snapshots,
                                                                    minilm_dir, tmp_path):
    root, *_ = corpora
    _, pointer = snapshots
    published = Path(pointer).read_text()
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "beam_e5", "reembed", "--input", str(root / "v1.jsonl"),
           "--previous", pointer, "--output", str(out), "--model", minilm_dir,
           "--publish", pointer, "--beam-batch-size", "64", "--max-length", "48"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if out.exists() and any(out.rglob("*")):  # Beam has started writing temp files
            break
        time.sleep(0.2)
    time.sleep(2)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "manifest.json").exists()
    assert Path(pointer).read_text() == published  # the previous snapshot stays in service
    assert main(cmd[3:] + ["--overwrite"]) == 0
    clean = tmp_path / "clean"
    assert main([str(clean) if a == str(out) else a for a in cmd[3:]]) == 0
    assert _vectors(out).keys() == _vectors(clean).keys()
    got, want = _vectors(out), _vectors(clean)
    assert all(got[k].tobytes() == want[k].tobytes() for k in want)
    leftovers = [p.name for p in out.iterdir()
                 if not p.name.startswith(("vectors-", "duplicates-", "errors-", "deleted-",
                                           "manifest.json"))]
    assert leftovers == []


def test_gcs_weights_replaced_by_a_file_of_the_same_size_change_the_fingerprint(
        gcs_emulator, tiny_models):
    local = Path(tiny_models("bert", "e5-small-v2"))
    url = gcs_emulator.upload_dir(str(local), "models/e5-small-v2")

    def fingerprint() -> str:
        return weights_fingerprint(EncoderConfig(url).resolve())

    first = fingerprint()
    assert first.startswith("gcs-listing:") and fingerprint() == first
    gcs_emulator.upload("models/e5-small-v2/tokenizer.json", (local / "tokenizer.json")
                        .read_bytes() + b" ")  # not a weight file: same fingerprint
    assert fingerprint() == first
    weights = (local / "model.safetensors").read_bytes()
    time.sleep(1.1)  # a later update time, at any timestamp resolution
    gcs_emulator.upload("models/e5-small-v2/model.safetensors", weights[:-1] + b"\x00")
    assert fingerprint() != first
