"""Beam's own example ``apache_beam/examples/ml_transform/mltransform_text_embedding.py``,
run as shipped and with the one-line swap (``SentenceTransformerEmbeddings`` ->
``E5TextEmbeddings``): it passes ``min_batch_size``, ``max_batch_size``, ``large_model``,
``load_model_args={'device': ...}`` and ``inference_args={'batch_size', 'convert_to_numpy',
'show_progress_bar'}``; both runs must write the same records and the same vectors."""

import json

import numpy as np
import pytest
from realtext import licence_paragraphs

from beam_e5.transforms.rag import E5TextEmbeddings

example = pytest.importorskip("apache_beam.examples.ml_transform.mltransform_text_embedding")

# whole Beam pipelines, about 1 s to 6 s each: `make test` (and CI) runs them, `make test-fast`
# keeps its 3-minute budget
pytestmark = pytest.mark.slow


def _run_example(tmp_path, name, model, lines):
    out = tmp_path / name
    argv = ["--input", str(lines), "--output", str(out / "part"), "--artifact_location",
            str(out / "artifacts"), "--model_name", model, "--min_batch_size", "4",
            "--max_batch_size", "8", "--model_batch_size", "4", "--device", "CPU",
            "--large_model", "true"]
    example.run(argv, save_main_session=False).wait_until_finish()
    rows = [json.loads(line) for f in sorted(out.glob("part*.jsonl"))
            for line in f.read_text().splitlines()]
    return {r["id"]: r for r in rows}


def test_beams_text_embedding_example_runs_with_the_swap(minilm_dir, tmp_path, monkeypatch):
    texts = [" ".join(p.split()) for p in licence_paragraphs(20)]
    lines = tmp_path / "input.txt"
    lines.write_text("\n".join(texts + [""]) + "\n")  # a blank line: skipped by the example
    beams = _run_example(tmp_path, "beam", minilm_dir, lines)
    # the one line a user changes: the embeddings class the example builds
    monkeypatch.setattr(example, "SentenceTransformerEmbeddings", E5TextEmbeddings)
    ours = _run_example(tmp_path, "beam-e5", minilm_dir, lines)

    assert len(beams) == len(set(texts)) and sorted(ours) == sorted(beams)
    for rid, row in ours.items():
        ref = beams[rid]
        assert {k: row[k] for k in ("model_name", "raw_text", "embedding_dim")} == {
            k: ref[k] for k in ("model_name", "raw_text", "embedding_dim")}
        v, w = np.asarray(row["embedding"]), np.asarray(ref["embedding"])
        assert float(v @ w / (np.linalg.norm(v) * np.linalg.norm(w))) >= 0.9999
