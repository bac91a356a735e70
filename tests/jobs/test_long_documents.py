"""``beam-e5 embed`` / ``reembed`` with long documents chunked: rows, counts, dedupe, carry.

Whole licences (thousands of tokens each) next to short paragraphs, real MiniLM weights,
``--max-length 128`` to keep it quick.
"""

import glob
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beam_e5.cli import main

pytestmark = pytest.mark.slow
FAST = ["--max-length", "128", "--beam-batch-size", "64"]


def _licences() -> dict[str, str]:
    return {Path(p).name: Path(p).read_text(encoding="utf-8")
            for p in sorted(glob.glob("/usr/share/common-licenses/*"))}


def _rows(out: Path) -> list[dict]:
    table = pa.concat_tables([pq.read_table(f) for f in sorted(out.glob("vectors-*.parquet"))])
    return table.to_pylist()


def _manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def _write(path: Path, docs: list[dict]) -> str:
    path.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    return str(path)


def _over_window(docs: list[dict], model_dir: str) -> set[str]:
    """Ids of the documents longer than one 128-token window (126 text tokens)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    return {d["id"] for d in docs
            if len(tok(d["text"], add_special_tokens=False, verbose=False)["input_ids"]) > 126}


@pytest.fixture(scope="module")
def corpus():
    lic = _licences()
    names = ["Apache-2.0", "BSD", "GPL-2", "MPL-2.0", "Artistic", "CC0-1.0"]
    docs = [{"id": f"lic-{n}", "text": lic[n]} for n in names]
    paras = [p.strip() for p in lic["GPL-3"].split("\n\n") if len(p.strip()) > 80][:30]
    docs += [{"id": f"p{i:02d}", "text": p} for i, p in enumerate(paras)]
    docs.append({"id": "lic-copy", "text": lic["BSD"].upper()})  # exact duplicate of lic-BSD
    # a near duplicate of a long licence: its document vector is what semantic dedupe sees
    docs.append({"id": "lic-near", "text": lic["MPL-2.0"].replace("Mozilla", "M0zilla")})
    return docs, lic


def test_chunked_run_rows_counts_and_dedupe(corpus, minilm_dir, tmp_path, capsys):
    docs, lic = corpus
    path = _write(tmp_path / "c.jsonl", docs)
    out = tmp_path / "out"
    assert main(["embed", "--input", path, "--output", str(out), "--model", minilm_dir,
                 "--dedupe-threshold", "0.97"] + FAST) == 0
    summary = capsys.readouterr().out
    c = _manifest(out)["counts"]
    assert c["read"] == len(docs) == c["written"] + c["exact_duplicates"] \
        + c["semantic_duplicates"] + c["invalid"]
    assert (c["exact_duplicates"], c["semantic_duplicates"], c["invalid"]) == (1, 1, 0)
    rows = _rows(out)
    texts = {d["id"]: d["text"] for d in docs}
    doc_rows = [r for r in rows if r["chunk"] is None or r["chunks"] == 1]
    chunk_rows = [r for r in rows if r["chunk"] is not None and r["chunks"] > 1]
    assert len(doc_rows) == c["written"] and len(chunk_rows) == c["chunk_rows"]
    long = _over_window(docs, minilm_dir) - {"lic-copy", "lic-near"}
    assert len(long) >= 6 and {r["id"] for r in doc_rows if r["chunks"] > 1} == long
    assert c["chunked_documents"] == len(long)
    assert c["truncated_documents"] == c["tokens_cut"] == 0
    assert f"long documents: {len(long)} chunked" in summary and "WARNING" not in summary
    # duplicates: every row of the dropped document is gone, the kept one is whole
    assert not [r for r in rows if r["doc_id"] in ("lic-copy", "lic-near")]
    dups = pa.concat_tables([pq.read_table(f) for f in out.glob("duplicates-*.parquet")])
    assert sorted((d["id"], d["duplicate_of"], d["kind"]) for d in dups.to_pylist()) == [
        ("lic-copy", "lic-BSD", "exact"), ("lic-near", "lic-MPL-2.0", "semantic")]
    # each chunked document: rows DOC#0..DOC#n-1, offsets into its text, all of it covered
    for doc in (r for r in doc_rows if r["chunks"] > 1):
        mine = sorted((r for r in chunk_rows if r["doc_id"] == doc["id"]),
                      key=lambda r: r["chunk"])
        assert [r["id"] for r in mine] == [f"{doc['id']}#{k}" for k in range(doc["chunks"])]
        assert doc["char_start"] is None and doc["char_end"] is None
        text = texts[doc["id"]]
        assert mine[0]["char_start"] == len(text) - len(text.lstrip())
        assert mine[-1]["char_end"] == len(text.rstrip())
        for a, b in zip(mine, mine[1:]):
            assert b["char_start"] < a["char_end"]  # overlapping windows, no gap
        assert all(r["tokens"] <= 128 for r in mine)
        emb = np.stack([r["embedding"] for r in mine])
        assert float(np.linalg.norm(doc["embedding"])) == pytest.approx(1.0, abs=1e-5)
        mean = np.average(emb, axis=0, weights=[r["tokens"] - 2 for r in mine])  # text tokens
        assert float(mean @ np.asarray(doc["embedding"]) / np.linalg.norm(mean)) > 0.9999
    single = [r for r in doc_rows if r["chunks"] == 1]
    assert all(r["id"] == r["doc_id"] and r["chunk"] == 0 for r in single)


def test_reembed_carries_chunks_and_rechunks_changes(corpus, minilm_dir, tmp_path):
    docs, lic = corpus
    docs = [d for d in docs if d["id"] not in ("lic-copy", "lic-near")]
    s1 = tmp_path / "s1"
    assert main(["embed", "--input", _write(tmp_path / "v1.jsonl", docs), "--output", str(s1),
                 "--model", minilm_dir] + FAST) == 0
    v2 = [dict(d, text=d["text"] + "\n\nAppendix: a new closing paragraph.")
          if d["id"] == "lic-BSD" else d for d in docs if d["id"] != "lic-CC0-1.0"]
    v2.append({"id": "lic-GPL-1", "text": lic["GPL-1"]})
    s2 = tmp_path / "s2"
    assert main(["reembed", "--input", _write(tmp_path / "v2.jsonl", v2), "--previous", str(s1),
                 "--output", str(s2), "--model", minilm_dir] + FAST) == 0
    c = _manifest(s2)["counts"]
    assert (c["carried"], c["reembedded"], c["new"], c["deleted"]) == (len(docs) - 2, 1, 1, 1)
    assert c["read"] == c["written"] == len(v2)
    old = {r["id"]: r for r in _rows(s1)}
    new = {r["id"]: r for r in _rows(s2)}
    for vid, r in new.items():
        if r["doc_id"] not in ("lic-BSD", "lic-GPL-1"):
            assert old[vid]["embedding"] == r["embedding"]  # every chunk carried as it was
            assert (old[vid]["char_start"], old[vid]["chunks"]) == (r["char_start"], r["chunks"])
    assert {r["doc_id"] for r in new.values()} == {d["id"] for d in v2}
    bsd = sorted((r for r in new.values() if r["doc_id"] == "lic-BSD" and r["chunk"] is not None),
                 key=lambda r: r["chunk"])
    text = next(d["text"] for d in v2 if d["id"] == "lic-BSD")
    assert text[bsd[-1]["char_start"]:bsd[-1]["char_end"]].endswith("closing paragraph.")
    # chunking settings are part of the model signature: other windows, nothing carried
    s3 = tmp_path / "s3"
    assert main(["reembed", "--input", _write(tmp_path / "v2.jsonl", v2), "--previous", str(s2),
                 "--output", str(s3), "--model", minilm_dir, "--chunk-tokens", "64"]
                + FAST) == 0
    c3 = _manifest(s3)["counts"]
    assert c3["carried"] == 0 and c3["reembedded"] == len(v2)
    assert c3["chunk_rows"] > c["chunk_rows"]


def test_truncate_and_fail_say_what_was_cut(corpus, minilm_dir, tmp_path, capsys):
    docs, _ = corpus
    docs = [d for d in docs if d["id"] not in ("lic-copy", "lic-near")]
    path = _write(tmp_path / "c.jsonl", docs)
    out = tmp_path / "t"
    assert main(["embed", "--input", path, "--output", str(out), "--model", minilm_dir,
                 "--long-text", "truncate"] + FAST) == 0
    summary = capsys.readouterr().out
    c = _manifest(out)["counts"]
    rows = _rows(out)
    assert len(rows) == c["written"] == len(docs) and c["chunk_rows"] == 0
    long = _over_window(docs, minilm_dir)
    assert c["truncated_documents"] == len(long) == sum(r["tokens_cut"] > 0 for r in rows)
    assert {r["id"] for r in rows if r["tokens_cut"]} == long
    assert c["tokens_cut"] == sum(r["tokens_cut"] for r in rows) > 5000
    assert f"WARNING: {len(long)} documents truncated" in summary
    out = tmp_path / "f"
    assert main(["embed", "--input", path, "--output", str(out), "--model", minilm_dir,
                 "--long-text", "fail"] + FAST) == 0
    c = _manifest(out)["counts"]
    assert c["invalid"] == len(long) and c["written"] == len(docs) - len(long)
    errors = [json.loads(line) for f in out.glob("errors-*.jsonl")
              for line in f.read_text().splitlines()]
    assert {e["id"] for e in errors} == long
    assert all("over the limit of 126" in e["reason"] for e in errors)


def test_gcs_run_gives_the_same_chunks(corpus, minilm_dir, gcs_emulator, tmp_path):
    docs, _ = corpus
    docs = docs[:3] + docs[6:10]  # three licences, four paragraphs
    data = "".join(json.dumps(d) + "\n" for d in docs).encode("utf-8")
    local_out = tmp_path / "local"
    assert main(["embed", "--input", _write(tmp_path / "c.jsonl", docs), "--output",
                 str(local_out), "--model", minilm_dir] + FAST) == 0
    inp = gcs_emulator.upload("long/corpus.jsonl", data)
    assert main(["embed", "--input", inp, "--output", gcs_emulator.url("long/out"), "--model",
                 minilm_dir] + FAST) == 0
    tables = []
    for name in gcs_emulator.list_names("long/out/"):
        if name.startswith("long/out/vectors-"):
            path = tmp_path / Path(name).name
            path.write_bytes(gcs_emulator.download(name))
            tables.append(pq.read_table(path))
    remote = {r["id"]: r for r in pa.concat_tables(tables).to_pylist()}
    local = {r["id"]: r for r in _rows(local_out)}
    assert remote.keys() == local.keys() and any("#" in k for k in local)
    for k, r in local.items():
        assert (r["chunk"], r["chunks"], r["char_start"], r["char_end"]) == (
            remote[k]["chunk"], remote[k]["chunks"], remote[k]["char_start"],
            remote[k]["char_end"])
        np.testing.assert_allclose(remote[k]["embedding"], r["embedding"], atol=1e-6)
    remote_counts = json.loads(gcs_emulator.download("long/out/manifest.json"))["counts"]
    assert remote_counts == _manifest(local_out)["counts"]
