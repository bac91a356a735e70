"""The same embed run (exact + semantic dedupe) on every runner we can run here.

In-process DirectRunner, DirectRunner with 2 worker processes, and the portable runner
(the Fn API path Flink and Dataflow use) with a LOOPBACK environment: the vectors,
duplicates and counts must agree record by record.
"""

import json
from pathlib import Path

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beam_e5.cli import main

pytestmark = pytest.mark.slow
SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample" / "corpus.jsonl"

RUNNERS = {
    "in_process": [],
    "multi_processing": ["--direct_num_workers=2", "--direct_running_mode=multi_processing"],
    "portable": ["--runner=PortableRunner", "--job_endpoint=embed",
                 "--environment_type=LOOPBACK"],
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rows = [json.loads(line) for line in open(SAMPLE, encoding="utf-8")][:150]
    rows += [{"id": "zz-copy", "text": rows[3]["text"].upper()},  # exact duplicate
             {"id": "zz-near", "text": rows[5]["text"] + " (see also)"},  # near duplicate
             {"id": "zz-empty", "text": "   "}]  # rejected
    path = tmp_path_factory.mktemp("runners") / "corpus.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def _outputs(out):
    vec = pa.concat_tables([pq.read_table(f) for f in out.glob("vectors-*.parquet")])
    dups = pa.concat_tables([pq.read_table(f) for f in out.glob("duplicates-*.parquet")])
    vectors = dict(zip(vec.column("id").to_pylist(),
                       vec.column("embedding").to_numpy(zero_copy_only=False)))
    duplicates = sorted((d["id"], d["duplicate_of"], d["kind"]) for d in dups.to_pylist())
    counts = json.loads((out / "manifest.json").read_text())["counts"]
    return vectors, duplicates, counts


@pytest.fixture(scope="module")
def runs(corpus, minilm_dir, tmp_path_factory):
    results = {}
    for name, options in RUNNERS.items():
        out = tmp_path_factory.mktemp(name)
        assert main(["embed", "--input", corpus, "--output", str(out), "--model", minilm_dir,
                     "--dedupe-threshold", "0.9", "--max-length", "64",
                     "--beam-batch-size", "32"] + options) == 0
        results[name] = _outputs(out)
    return results


@pytest.mark.parametrize("runner", ["multi_processing", "portable"])
def test_runner_matches_in_process(runs, runner):
    ref_vectors, ref_dups, ref_counts = runs["in_process"]
    vectors, dups, counts = runs[runner]
    assert counts == ref_counts
    assert dups == ref_dups
    assert vectors.keys() == ref_vectors.keys()
    for k, v in ref_vectors.items():
        np.testing.assert_allclose(vectors[k], v, atol=2e-6)


def test_the_reference_run_found_what_was_planted(runs):
    _, dups, counts = runs["in_process"]
    assert any(d[0] == "zz-copy" and d[2] == "exact" for d in dups)
    assert any(d[0] == "zz-near" and d[2] == "semantic" for d in dups)
    assert counts["invalid"] == 1 and counts["read"] == 153
    assert counts["chunked_documents"] > 0 and counts["chunk_rows"] > 0  # chunking is on


def test_local_runner_fails_the_job_rather_than_retry(tmp_path):
    """A DoFn that raises once fails a DirectRunner job, although a retry would succeed:
    local runners do not retry bundles (Dataflow and Flink do, which is why every DoFn here
    must be deterministic and write only through Beam sinks)."""
    marker = tmp_path / "raised-once"

    def fail_once(x):
        if not marker.exists():
            marker.write_text("1")
            raise RuntimeError("transient fault")
        return x

    with pytest.raises(Exception, match="transient fault"):
        with beam.Pipeline(runner="DirectRunner") as p:
            _ = p | beam.Create([1, 2, 3]) | beam.Map(fail_once)
    assert marker.exists()
