"""Hostile inputs through the real ``beam-e5`` command line (issue 16): nothing is lost.

Each test asserts the outcome the user sees (exit status, one-line message, error rows) and,
for runs that write, the balance ``read = written + duplicates + invalid`` with every valid
record written. Pre-pipeline refusals are fast; runs that start a pipeline are marked slow.
The table in docs/reliability.md lists these cases.
"""

from __future__ import annotations

import gzip
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beam_e5.cli import main
from beam_e5.errors import ConfigError
from beam_e5.io.rundir import RUN_MARKER, OutputConfig, claim_output

# ------------------------------------------------------------------------ helpers --


def cli(capsys, *args: str) -> tuple[int, str, str]:
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def docs(prefix: str, n: int) -> list[dict]:
    return [{"id": f"{prefix}{i}", "text": f"{prefix} document {i} about apache beam pipelines "
             f"and sentence embeddings number {i * 7919 % 1000}"} for i in range(n)]


def vector_ids(out: Path) -> list[str]:
    return [i for f in sorted(out.glob("vectors-*.parquet"))
            for i in pq.read_table(f, columns=["id"]).column("id").to_pylist()]


def error_rows(out: Path) -> list[dict]:
    return [json.loads(line) for f in sorted(out.glob("errors-*.jsonl"))
            for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]


def manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def assert_balanced(out: Path) -> dict:
    c = manifest(out)["counts"]
    assert c["read"] == (c["written"] + c["exact_duplicates"] + c["semantic_duplicates"]
                         + c["invalid"]), c
    assert c["written"] == len(vector_ids(out))
    assert c["invalid"] == len(error_rows(out))
    return c


def no_run_left(out: Path) -> None:
    """A refused run leaves nothing that would block the corrected rerun."""
    assert not out.exists() or not any(out.iterdir()), list(out.iterdir())


def model_args(model: str) -> list[str]:
    return ["--model", model, "--beam-batch-size", "16"]


# ------------------------------------------------- data loss: one hostile corpus --


@pytest.mark.slow
def test_cut_gzip_broken_csv_surrogates_and_unknown_tokens_lose_nothing(
        tmp_path, capsys, minilm_dir):
    # 1. a gzip export cut off mid-upload
    gz_rows = docs("g", 300)
    whole = gzip.compress("".join(json.dumps(r) + "\n" for r in gz_rows).encode())
    cut = whole[: len(whole) * 6 // 10]
    (tmp_path / "cut.jsonl.gz").write_bytes(cut)
    readable = zlib.decompressobj(31).decompress(cut)
    complete = readable.count(b"\n")  # whole lines before the break
    assert 0 < complete < 300
    # 2. a CSV whose quote is never closed: rows after it must not merge into one record
    (tmp_path / "broken.csv").write_text(
        'id,text\nc1,the first row is fine\nc2,"an unterminated quote starts here\n'
        "c3,this row would be swallowed\nc4,and this one too\n", encoding="utf-8")
    # 3. lone surrogates, 6. texts without a real token, one mostly unknown
    good = docs("j", 12)
    lines = [json.dumps(r) for r in good] + [
        '{"id": "sur-text", "text": "lone \\ud800 surrogate in the text"}',
        '{"id": "sur-id-\\udc00", "text": "a lone surrogate in the id"}',
        json.dumps({"id": "only-unk", "text": "\U0001F600\U0001F680"}),
        json.dumps({"id": "zero-width", "text": "\u200b\u200b\u200b"}),
        json.dumps({"id": "mostly-unk", "text": "\U0001F600 \U0001F680 \U0001F9FF ok"}),
    ]
    (tmp_path / "records.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out, pointer = tmp_path / "out", tmp_path / "LATEST"

    rc, stdout, err = cli(capsys, "embed", "--input", f"{tmp_path}/*.jsonl*,{tmp_path}/*.csv",
                          "--output", str(out), "--publish", str(pointer),
                          *model_args(minilm_dir))

    assert rc == 1, err
    assert "run failed" in err and "could not be read to their end" in err
    assert not pointer.exists()  # nothing published
    c = assert_balanced(out)
    ids = set(vector_ids(out))
    assert {r["id"] for r in good} | {"mostly-unk", "c1"} <= ids
    assert {f"g{i}" for i in range(complete)} <= ids  # every record before the cut
    errors = {e["id"] or e["source"]: e for e in error_rows(out)}
    file_errors = [e for e in error_rows(out) if e.get("scope") == "file"]
    assert sorted(e["source"].split(":")[0] for e in file_errors) == sorted(
        [str(tmp_path / "broken.csv"), str(tmp_path / "cut.jsonl.gz")])
    csv_error = next(e for e in file_errors if "broken.csv" in e["source"])
    assert "c3,this row would be swallowed" in csv_error["record"]
    assert not {"c2", "c3", "c4"} & ids  # never a merged record
    assert "lone surrogate" in errors["sur-text"]["reason"]
    assert "lone surrogate" in errors["sur-id-\\udc00"]["reason"]
    assert "unknown token" in errors["only-unk"]["reason"]
    assert "tokenises to nothing" in errors["zero-width"]["reason"]
    m = manifest(out)
    assert [p["source"].split(":")[0] for p in m["incomplete_inputs"]] == sorted(
        [str(tmp_path / "broken.csv"), str(tmp_path / "cut.jsonl.gz")])
    assert m["stats"]["mostly_unknown_texts"] == 1
    assert any("mostly unknown" in w for w in m["warnings"]) and "mostly unknown" in stdout
    assert c["written"] == 12 + 2 + complete
    assert not (out / RUN_MARKER).exists()


# ------------------------------------------------------ publishing guards (5, 8) --


@pytest.mark.slow
def test_publish_guards_empty_shrunk_and_live_snapshot(tmp_path, capsys, minilm_dir,
                                                       monkeypatch):
    monkeypatch.chdir(tmp_path)
    corpus = write_jsonl(tmp_path / "corpus.jsonl", docs("d", 10))
    rc, _, err = cli(capsys, "embed", "--input", corpus, "--output", "night1",
                     "--publish", "LATEST", *model_args(minilm_dir))
    assert rc == 0, err
    live = tmp_path / "night1"
    # absolute, from a relative --output
    assert (tmp_path / "LATEST").read_text().strip() == str(live)

    # --overwrite of the directory LATEST names is refused before anything is deleted
    rc, _, err = cli(capsys, "embed", "--input", corpus, "--output", "night1", "--overwrite",
                     "--publish", "LATEST", *model_args(minilm_dir))
    assert rc == 2 and "live snapshot" in err and (live / "manifest.json").exists()

    # an empty export (header-only CSV) is never published
    (tmp_path / "empty.csv").write_text("id,text\n")
    rc, stdout, err = cli(capsys, "embed", "--input", "empty.csv", "--output", "night2",
                          "--publish", "LATEST", "--publish-min-ratio", "0",
                          *model_args(minilm_dir))
    assert rc == 1 and "0 documents" in err and "no document was written" in stdout
    assert manifest(tmp_path / "night2")["counts"]["read"] == 0

    # a corpus that shrank by 70% is not published unless the guard is lowered
    small = write_jsonl(tmp_path / "small.jsonl", docs("d", 3))
    rc, _, err = cli(capsys, "embed", "--input", small, "--output", "night3",
                     "--publish", "LATEST", *model_args(minilm_dir))
    assert rc == 1 and "--publish-min-ratio" in err
    assert (tmp_path / "LATEST").read_text().strip() == str(live)
    assert_balanced(tmp_path / "night3")
    rc, _, err = cli(capsys, "reembed", "--input", small, "--previous", "LATEST",
                     "--output", "night4", "--publish", "LATEST", "--publish-min-ratio", "0",
                     *model_args(minilm_dir))
    assert rc == 0, err
    assert (tmp_path / "LATEST").read_text().strip() == str(tmp_path / "night4")
    c = assert_balanced(tmp_path / "night4")
    assert c["carried"] == 3 and c["deleted"] == 7


# ------------------------------------------------------- one run per output (8) --


def _claim(output: str, results) -> None:  # results: a multiprocessing queue
    try:
        claim_output(OutputConfig(output))
        results.put("won")
    except ConfigError as e:
        results.put(str(e))


def test_concurrent_runs_into_one_output_exactly_one_wins(tmp_path):
    out = str(tmp_path / "out")
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    procs = [ctx.Process(target=_claim, args=(out, results)) for _ in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    got = [results.get(timeout=5) for _ in procs]
    assert got.count("won") == 1, got
    assert all("another beam-e5 run is writing" in g for g in got if g != "won")


def test_marker_of_a_live_run_refuses_even_with_overwrite(tmp_path, capsys, minilm_dir):
    out = tmp_path / "out"
    out.mkdir()
    (out / RUN_MARKER).write_text(json.dumps({"host": os.uname().nodename, "pid": os.getpid(),
                                              "started": "now"}))
    corpus = write_jsonl(tmp_path / "c.jsonl", docs("d", 2))
    for extra in ([], ["--overwrite"]):
        rc, _, err = cli(capsys, "embed", "--input", corpus, "--output", str(out), *extra,
                         *model_args(minilm_dir))
        assert rc == 2 and "another beam-e5 run is writing" in err
    assert (out / RUN_MARKER).exists()  # still the other run's


def test_marker_of_a_killed_run_is_replaced_only_with_overwrite(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / RUN_MARKER).write_text(json.dumps({"host": os.uname().nodename, "pid": 2**22 + 7,
                                              "started": "then"}))
    (out / "vectors-00000-of-00001.parquet").write_bytes(b"half")
    with pytest.raises(ConfigError, match="pass --overwrite"):
        claim_output(OutputConfig(str(out)))
    claim = claim_output(OutputConfig(str(out), overwrite=True))
    assert sorted(p.name for p in out.iterdir()) == [RUN_MARKER]
    claim.release()
    assert not any(out.iterdir())


# ------------------------------------------- refused before the pipeline (7, 9, 10) --


@pytest.fixture
def corpus(tmp_path) -> str:
    return write_jsonl(tmp_path / "corpus.jsonl", docs("d", 3))


def _refused(capsys, out: Path, *args: str) -> str:
    rc, _, err = cli(capsys, *args)
    assert rc == 2, err
    assert err.startswith("beam-e5: error: ") and err.count("\n") == 1, err  # one line
    assert "Traceback" not in err
    no_run_left(out)
    return err


def test_corrupt_and_non_gzip_gz_named_before_the_run(tmp_path, capsys, minilm_dir):
    out = tmp_path / "out"
    (tmp_path / "plain.jsonl.gz").write_text('{"id": "a", "text": "not compressed"}\n')
    err = _refused(capsys, out, "embed", "--input", str(tmp_path / "plain.jsonl.gz"),
                   "--output", str(out), *model_args(minilm_dir))
    assert "plain.jsonl.gz" in err
    whole = gzip.compress(b'{"id": "a", "text": "x"}\n' * 50)
    (tmp_path / "bad.txt.gz").write_bytes(whole[:10] + b"\x00" * 20 + whole[30:])
    err = _refused(capsys, out, "embed", "--input", str(tmp_path / "bad.txt.gz"),
                   "--output", str(out), *model_args(minilm_dir))
    assert "bad.txt.gz" in err


@pytest.mark.parametrize("name, data, expected", [
    ("utf16.jsonl", '{"id": "a", "text": "caf\u00e9"}\n'.encode("utf-16"), "UTF-16"),
    ("latin1.jsonl", '{"id": "a", "text": "caf\u00e9 cr\u00e8me"}\n'.encode("latin-1") * 3,
     "Latin-1"),
    ("latin1.csv", "id,text\na,caf\u00e9\nb,na\u00efve\n".encode("latin-1"), "Latin-1"),
    ("corpus.zip", b"PK\x03\x04" + b"\x00" * 40, "archive"),
    ("export.txt", b"PK\x03\x04" + b"\x00" * 40, "zip archive"),
])
def test_wrong_encodings_and_archives_are_diagnosed(tmp_path, capsys, minilm_dir, name, data,
                                                    expected):
    (tmp_path / name).write_bytes(data)
    out = tmp_path / "out"
    err = _refused(capsys, out, "embed", "--input", str(tmp_path / name), "--output", str(out),
                   *model_args(minilm_dir))
    assert expected in err and name in err


def test_output_that_is_a_file_or_read_only(tmp_path, capsys, corpus, minilm_dir):
    target = tmp_path / "out.parquet"
    target.write_text("x")
    rc, _, err = cli(capsys, "embed", "--input", corpus, "--output", str(target),
                     *model_args(minilm_dir))
    assert rc == 2 and "is an existing file" in err
    if os.geteuid() == 0:
        pytest.skip("running as root: permissions do not stop root from writing")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        rc, _, err = cli(capsys, "embed", "--input", corpus, "--output", str(locked / "out"),
                         *model_args(minilm_dir))
        assert rc == 2 and "cannot create --output" in err
        rc, _, err = cli(capsys, "embed", "--input", corpus, "--output", str(locked),
                         *model_args(minilm_dir))
        assert rc == 2 and "cannot write to --output" in err
    finally:
        locked.chmod(0o755)


def test_cuda_without_a_gpu_on_the_direct_runner(tmp_path, capsys, corpus, minilm_dir):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    out = tmp_path / "out"
    err = _refused(capsys, out, "embed", "--input", corpus, "--output", str(out),
                   "--device", "cuda", *model_args(minilm_dir))
    assert "no CUDA GPU" in err


@pytest.mark.parametrize("field", ["id", "embedding", "text_sha256", "tokens"])
def test_reserved_keep_fields(tmp_path, capsys, minilm_dir, field):
    corpus = write_jsonl(tmp_path / "c.jsonl", [{"id": "a", "text": "t", "embedding": "x",
                                                 "text_sha256": "y", "tokens": 3}])
    out = tmp_path / "out"
    err = _refused(capsys, out, "embed", "--input", corpus, "--output", str(out),
                   "--keep-fields", field, *model_args(minilm_dir))
    assert f"--keep-fields {field!r}" in err


def test_max_length_beyond_the_model_is_refused(tmp_path, capsys, corpus, minilm_dir):
    out = tmp_path / "out"
    err = _refused(capsys, out, "embed", "--input", corpus, "--output", str(out),
                   "--max-length", "1000", *model_args(minilm_dir))
    assert "--max-length 1000 exceeds" in err and "512" in err


def test_half_copied_model_and_foreign_tokenizer(tmp_path, capsys, corpus, minilm_dir,
                                                 tiny_models):
    tiny = tiny_models("xlm-roberta", "multilingual-e5-small")
    capsys.readouterr()  # building the fixture prints progress
    half = tmp_path / "half-model"
    shutil.copytree(minilm_dir, half)
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        (half / name).unlink()
    out = tmp_path / "out"
    err = _refused(capsys, out, "embed", "--input", corpus, "--output", str(out),
                   *model_args(str(half)))
    assert "no tokenizer files" in err
    foreign = tmp_path / "multilingual-e5-small"
    shutil.copytree(tiny, foreign)
    shutil.copy(Path(minilm_dir) / "tokenizer.json", foreign / "tokenizer.json")
    err = _refused(capsys, out, "embed", "--input", corpus, "--output", str(out),
                   *model_args(str(foreign)))
    assert "belong to another model" in err


def test_previous_that_is_not_a_snapshot(tmp_path, capsys, corpus, minilm_dir):
    parquet = tmp_path / "vectors.parquet"
    pq.write_table(pa.table({"id": ["a"]}), parquet)
    (tmp_path / "no-manifest").mkdir()
    out = tmp_path / "out"
    for previous in (parquet, tmp_path / "no-manifest"):
        err = _refused(capsys, out, "reembed", "--input", corpus, "--previous", str(previous),
                       "--output", str(out), *model_args(minilm_dir))
        assert "neither a complete snapshot" in err


def test_dedupe_over_integer_ids_is_refused(tmp_path, capsys):
    table = pa.table({"id": pa.array([1, 2], pa.int64()),
                      "embedding": pa.FixedSizeListArray.from_arrays(
                          pa.array([1, 0, 0, 1], pa.float32()), 2)})
    pq.write_table(table, tmp_path / "vectors-0.parquet")
    out = tmp_path / "out"
    err = _refused(capsys, out, "dedupe", "--input", str(tmp_path / "vectors-*.parquet"),
                   "--output", str(out), "--threshold", "0.9")
    assert "not a string" in err


@pytest.mark.slow  # a fresh interpreter imports Beam (~15 s)
def test_explain_without_matplotlib_fails_before_reading(tmp_path):
    blocker = (
        "import sys\n"
        "sys.modules['matplotlib'] = None  # what an install without the [explain] extra sees\n"
        "from beam_e5.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n")
    out = tmp_path / "explain"
    proc = subprocess.run(
        [sys.executable, "-c", blocker, "dedupe", "--input", str(tmp_path / "nothing-*.parquet"),
         "--output", str(out), "--explain"],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.returncode == 2, proc.stderr
    assert "needs matplotlib" in proc.stderr and "Traceback" not in proc.stderr


# ---------------------------------------------------- dedupe, reembed, ids (7, 10) --


@pytest.mark.slow
def test_dedupe_sets_nan_vectors_and_null_ids_aside(tmp_path, capsys):
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(6, 8)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    vecs[2, 3] = np.nan
    ids = ["a", "b", "nan-vector", None, "e", "f"]
    table = pa.table({"id": pa.array(ids, pa.string()),
                      "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vecs.ravel()), 8),
                      "text_sha256": pa.array(["x"] * 6), "tokens": pa.array([3] * 6, pa.int32())})
    pq.write_table(table, tmp_path / "vectors-0.parquet")
    out = tmp_path / "out"
    rc, _, err = cli(capsys, "dedupe", "--input", str(tmp_path / "vectors-*.parquet"),
                     "--output", str(out), "--threshold", "0.99")
    assert rc == 0, err
    c = manifest(out)["counts"]
    assert c["read"] == 6 and c["invalid"] == 2 and c["written"] + c["semantic_duplicates"] == 4
    assert sorted(vector_ids(out)) == ["a", "b", "e", "f"]
    reasons = {e["id"]: e["reason"] for e in error_rows(out)}
    assert "NaN" in reasons["nan-vector"] and "null" in reasons[None]


@pytest.mark.slow
def test_reembed_previous_dedupe_output_carries_and_ids_stay_unique(tmp_path, capsys,
                                                                    minilm_dir):
    rows = docs("d", 6)
    corpus = write_jsonl(tmp_path / "c.jsonl", rows)
    rc, _, err = cli(capsys, "embed", "--input", corpus, "--output", str(tmp_path / "e"),
                     *model_args(minilm_dir))
    assert rc == 0, err
    rc, _, err = cli(capsys, "dedupe", "--input", str(tmp_path / "e" / "vectors-*.parquet"),
                     "--output", str(tmp_path / "dd"), "--threshold", "0.999")
    assert rc == 0, err
    # the same corpus plus: an id given twice with two texts, and an id repeated verbatim
    more = rows + [{"id": "twice", "text": "first text"}, {"id": "twice", "text": "other text"},
                   {"id": "same", "text": "repeated record"},
                   {"id": "same", "text": "repeated record"},
                   {"id": "zcopy", "text": rows[0]["text"]}]
    corpus2 = write_jsonl(tmp_path / "c2.jsonl", more)
    rc, _, err = cli(capsys, "reembed", "--input", corpus2, "--previous", str(tmp_path / "dd"),
                     "--output", str(tmp_path / "r"), *model_args(minilm_dir))
    assert rc == 0, err
    c = assert_balanced(tmp_path / "r")
    assert c["carried"] == len(vector_ids(tmp_path / "dd")) == 6
    rc, _, err = cli(capsys, "embed", "--input", corpus2, "--output", str(tmp_path / "n"),
                     "--no-exact-dedupe", *model_args(minilm_dir))
    assert rc == 0, err
    c = assert_balanced(tmp_path / "n")
    ids = vector_ids(tmp_path / "n")
    assert len(ids) == len(set(ids)) and "twice" not in ids and "zcopy" in ids
    assert c["invalid"] == 2 and c["exact_duplicates"] == 1


def test_gcs_output_claim_is_exclusive(gcs_emulator):
    """A second claim is refused. (The race itself rests on GCS's ifGenerationMatch=0
    precondition, which the emulator does not enforce; the local race is tested above.)"""
    out = gcs_emulator.url("runs/night")
    claim = claim_output(OutputConfig(out))
    assert gcs_emulator.list_names("runs/night/") == [f"runs/night/{RUN_MARKER}"]
    with pytest.raises(ConfigError, match="another beam-e5 run is writing"):
        claim_output(OutputConfig(out))
    claim.release()
    assert gcs_emulator.list_names("runs/night/") == []
    claim_output(OutputConfig(out)).release()


def test_a_failed_run_removes_its_partial_files(tmp_path):
    out = tmp_path / "out"
    claim = claim_output(OutputConfig(str(out)))
    (out / "beam-temp-vectors-123").mkdir()
    (out / "beam-temp-vectors-123" / "shard").write_bytes(b"half")
    (out / "errors-00000-of-00001.jsonl").write_text("{}\n")
    claim.abandon()  # what run_embed / run_dedupe do when the pipeline raises
    assert not any(out.iterdir())
    claim_output(OutputConfig(str(out))).release()  # the corrected rerun needs no --overwrite


def test_profile_length_beyond_the_model_is_capped_to_what_runs():
    from beam_e5.model.config import cap_max_length, model_length_limit
    from beam_e5.model.profiles import ModelProfile

    profile = ModelProfile("generic", "", "", "mean", 1024)
    config = {"model_type": "xlm-roberta", "max_position_embeddings": 514}
    limit = model_length_limit(None, lambda name: config)
    assert limit == 512
    assert cap_max_length("m", profile, None, limit).max_length == 512
    with pytest.raises(ConfigError, match="--max-length 1024 exceeds"):
        cap_max_length("m", profile, 1024, limit)
    assert model_length_limit(None, lambda name: {"model_type": "mistral"}) is None


@pytest.mark.parametrize("pointer, expected", [
    ("missing-folder/LATEST", "does not exist"),
    (".", "is a directory"),
    ("out", "is the --output directory"),
])
def test_publish_pointer_that_cannot_be_written(tmp_path, capsys, corpus, minilm_dir,
                                                monkeypatch, pointer, expected):
    monkeypatch.chdir(tmp_path)
    err = _refused(capsys, tmp_path / "out", "embed", "--input", corpus, "--output", "out",
                   "--publish", pointer, *model_args(minilm_dir))
    assert expected in err
