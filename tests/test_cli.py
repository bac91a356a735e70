"""``beam-e5 embed`` end to end on small corpora: outputs, manifest, counts, misconfiguration."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from realtext import mixed_length_texts

from beam_e5.cli import main
from beam_e5.model.config import EncoderConfig
from beam_e5.model.encoder import Encoder


def _write_jsonl(path, rows, extra_lines=()):
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
        for line in extra_lines:
            f.write(line + "\n")
    return str(path)


def _table(out, prefix):
    files = sorted(out.glob(f"{prefix}-*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files]), files


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    texts = mixed_length_texts(80)
    rows = [{"id": f"d{i:03d}", "text": t, "title": f"title {i}"} for i, t in enumerate(texts)]
    rows.append({"id": "dup1", "text": "  " + texts[3].upper() + "\n"})  # exact duplicate of d003
    rows.append({"id": "e1", "text": ""})  # empty: rejected
    path = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    return _write_jsonl(path, rows, extra_lines=["{not json"]), texts


def test_embed_writes_vectors_duplicates_errors_manifest(corpus, minilm_dir, tmp_path,
                                                         capsys):
    path, texts = corpus
    out = tmp_path / "out"
    rc = main(["embed", "--input", path, "--output", str(out), "--model", minilm_dir,
               "--keep-fields", "title", "--beam-batch-size", "32"])
    assert rc == 0
    summary = capsys.readouterr().out
    assert ("read 83 = written 80 + exact duplicates 1 + semantic duplicates 0 + invalid 2"
            in summary)
    assert "docs/s" in summary and "padding ratio" in summary

    vectors, files = _table(out, "vectors")
    rows = vectors.to_pylist()
    docs = [r for r in rows if r["chunk"] is None or r["chunks"] == 1]
    chunked = [r for r in docs if r["chunks"] > 1]
    assert len(docs) == 80 and chunked  # mixed lengths: some texts exceed 256 tokens
    assert len(rows) == 80 + sum(r["chunks"] for r in chunked)
    assert f"long documents: {len(chunked)} chunked" in summary and "WARNING" not in summary
    emb_type = vectors.schema.field("embedding").type
    assert pa.types.is_fixed_size_list(emb_type) and emb_type.list_size == 384
    assert emb_type.value_type == pa.float32()
    meta = pq.read_schema(files[0]).metadata
    assert meta[b"beam_e5.model"].decode() == minilm_dir
    assert meta[b"beam_e5.dim"] == b"384" and meta[b"beam_e5.normalization"] == b"l2"
    assert meta[b"beam_e5.profile.pooling"] == b"mean"
    assert meta[b"beam_e5.profile.max_length"] == b"256"
    assert b"beam_e5.prefix" in meta

    matrix = np.stack(vectors.column("embedding").to_numpy(zero_copy_only=False))
    np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-5)
    ids = vectors.column("id").to_pylist()
    ref, _ = Encoder.load(EncoderConfig(minilm_dir).resolve()).encode(texts)
    for row, r in enumerate(rows):
        if r["chunks"] == 1:  # a text that fits: the same vector as before chunking existed
            assert r["id"] == r["doc_id"] and r["chunk"] == 0
            assert float(matrix[row] @ ref[int(r["id"][1:])]) > 0.99999
        elif r["chunk"] is not None:
            assert r["id"] == f"{r['doc_id']}#{r['chunk']}"
    assert vectors.column("title").to_pylist()[ids.index("d005")] == "title 5"

    dups, _ = _table(out, "duplicates")
    assert dups.to_pylist() == [{"id": "dup1", "duplicate_of": "d003", "similarity": 1.0,
                                 "kind": "exact"}]
    errors = [json.loads(line) for f in out.glob("errors-*.jsonl")
              for line in f.read_text().splitlines()]
    assert len(errors) == 2 and all(e["reason"] for e in errors)

    manifest = json.loads((out / "manifest.json").read_text())
    c = manifest["counts"]
    assert c == {"read": 83, "invalid": 2, "exact_duplicates": 1, "semantic_duplicates": 0,
                 "embedded": 80, "written": 80, "chunked_documents": len(chunked),
                 "chunk_rows": len(rows) - 80, "truncated_documents": 0, "tokens_cut": 0}
    assert manifest["model"]["long_text"] == "chunk"
    assert manifest["options"]["long_text"] == {"mode": "chunk", "chunk_tokens": None,
                                                "overlap": None}
    assert manifest["model"]["model"] == minilm_dir
    # values keep their JSON types: numbers as numbers, booleans as booleans
    assert manifest["model"]["dim"] == 384
    assert manifest["model"]["profile.max_length"] == 256
    assert manifest["model"]["profile.append_eos"] is False
    assert manifest["options"]["encoder"]["max_batch_tokens"] == 8192
    assert manifest["options"]["exact_dedupe"] is True
    assert manifest["stats"]["real_tokens"] > 0
    assert manifest["stats"]["model_loads"] == 1
    # the encoder's own seconds: some, and no more than the job took (one worker)
    assert 0 < manifest["stats"]["encode_seconds"] <= manifest["stats"]["seconds"]
    assert not (out / "_counts").exists()


@pytest.mark.slow
def test_existing_manifest_needs_overwrite(corpus, minilm_dir, tmp_path, capsys):
    path, _ = corpus
    out = tmp_path / "out"
    args = ["embed", "--input", path, "--output", str(out), "--model", minilm_dir,
            "--no-exact-dedupe", "--vector-dtype", "float16"]
    assert main(args) == 0
    capsys.readouterr()
    assert main(args) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    (out / "vectors-stale-from-crash.parquet").write_bytes(b"junk")
    assert main(args + ["--overwrite"]) == 0
    vectors, files = _table(out, "vectors")
    docs = [r for r in vectors.to_pylist() if r["chunk"] is None or r["chunks"] == 1]
    assert len(docs) == 81  # exact dedupe off: the duplicate is embedded too
    assert vectors.schema.field("embedding").type.value_type == pa.float16()
    assert not (out / "vectors-stale-from-crash.parquet").exists()


@pytest.mark.parametrize("args,message", [
    (["--model", "/no/such/model/dir"], "does not exist"),
    (["--role", "document"], "invalid choice"),
    (["--max-batch-tokens", "0"], "positive integer"),
    (["--max-length", "1024", "--max-batch-tokens", "512"], "smaller than the max length"),
    (["--long-text", "truncate", "--chunk-tokens", "100"], "chunk only"),
    (["--chunk-tokens", "100", "--chunk-overlap", "60"], "more than half"),
    (["--chunk-overlap", "200"], "more than half of the window"),
    (["--long-text", "split"], "invalid choice"),
])
def test_misconfiguration_fails_before_the_pipeline(corpus, minilm_dir, tmp_path, capsys,
                                                    args, message):
    path, _ = corpus
    base = ["embed", "--input", path, "--output", str(tmp_path / "o"), "--model", minilm_dir]
    try:
        rc = main(base + args)
    except SystemExit as e:  # argparse choices
        rc = e.code
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o" / "manifest.json").exists()


@pytest.mark.slow
def test_neighbours_finds_the_document_itself(corpus, minilm_dir, tmp_path, capsys):
    path, texts = corpus
    out = tmp_path / "out"
    assert main(["embed", "--input", path, "--output", str(out), "--model", minilm_dir,
                 "--keep-fields", "title"]) == 0
    capsys.readouterr()
    assert main(["neighbours", "--vectors", str(out), "--model", minilm_dir, "--corpus", path,
                 "--query", texts[7], "--k", "3"]) == 0
    printed = capsys.readouterr().out
    assert " 1. 1.0000  d007  title=title 7" in printed
    # a chunk of a long document is found by its own text, and printed from its offsets
    vectors, _ = _table(out, "vectors")
    chunk = next(r for r in vectors.to_pylist() if r["chunk"] == 1 and r["chunks"] > 1)
    piece = texts[int(chunk["doc_id"][1:])][chunk["char_start"]:chunk["char_end"]]
    assert main(["neighbours", "--vectors", str(out), "--model", minilm_dir, "--corpus", path,
                 "--query", piece, "--k", "1"]) == 0
    printed = capsys.readouterr().out
    assert f" 1. 1.0000  {chunk['id']}  " in printed
    assert " ".join(piece.split())[:60] in printed


def test_neighbours_prints_the_text_of_ids_that_hold_a_hash(minilm_dir, tmp_path,
                                                            capsys):
    """Source ids like ``man1/tar.1.gz#9`` are whole-document ids, not chunk ids."""
    rows = [{"id": "man1/tar.1.gz#9", "text": "tar saves many files together into an archive"},
            {"id": "common-licenses/GPL-1#6", "text": "You may copy and distribute copies"},
            {"id": "plain", "text": "rotating log files every night"}]
    path = _write_jsonl(tmp_path / "hash-ids.jsonl", rows)
    out = tmp_path / "out"
    assert main(["embed", "--input", path, "--output", str(out), "--model", minilm_dir]) == 0
    capsys.readouterr()
    assert main(["neighbours", "--vectors", str(out), "--model", minilm_dir, "--corpus", path,
                 "--query", rows[0]["text"], "--k", "2"]) == 0
    printed = capsys.readouterr().out
    assert " 1. 1.0000  man1/tar.1.gz#9" in printed
    assert "      " + rows[0]["text"] in printed


@pytest.mark.slow
def test_embed_with_semantic_dedupe_then_dedupe_command(corpus, minilm_dir, tmp_path,
                                                        capsys):
    base, texts = corpus
    near = [{"id": "z-near-4", "text": texts[4] + " (as amended)"},
            {"id": "z-near-8", "text": texts[8].replace(" the ", " this ", 1) + " Thanks."}]
    path = _write_jsonl(tmp_path / "with-near.jsonl",
                        [json.loads(line) for line in open(base) if line.startswith("{\"")]
                        + near)
    out = tmp_path / "out"
    assert main(["embed", "--input", path, "--output", str(out), "--model", minilm_dir,
                 "--dedupe-threshold", "0.9"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    c = manifest["counts"]
    assert c["read"] == (c["written"] + c["exact_duplicates"] + c["semantic_duplicates"]
                         + c["invalid"])
    dups, _ = _table(out, "duplicates")
    semantic = [d for d in dups.to_pylist() if d["kind"] == "semantic"]
    assert len(semantic) == c["semantic_duplicates"]
    assert {d["id"]: d["duplicate_of"] for d in semantic if d["id"].startswith("z-")} == {
        "z-near-4": "d004", "z-near-8": "d008"}
    assert all(d["similarity"] >= 0.9 and d["duplicate_of"] < d["id"] for d in semantic)

    # the same rule applied afterwards by `beam-e5 dedupe` on an undeduplicated run
    plain = tmp_path / "plain"
    assert main(["embed", "--input", path, "--output", str(plain), "--model", minilm_dir]) == 0
    deduped = tmp_path / "deduped"
    assert main(["dedupe", "--input", str(plain / "vectors-*.parquet"), "--output", str(deduped),
                 "--threshold", "0.9"]) == 0
    later, _ = _table(deduped, "duplicates")
    assert sorted(later.column("id").to_pylist()) == sorted(d["id"] for d in semantic)
    kept, kept_files = _table(deduped, "vectors")
    kept_docs = [r for r in kept.to_pylist() if r["chunk"] is None or r["chunks"] == 1]
    assert len(kept_docs) == c["written"]
    assert kept.num_rows == c["written"] + c["chunk_rows"]  # chunks follow their document
    assert pq.read_schema(kept_files[0]).metadata[b"beam_e5.model"].decode() == minilm_dir
    capsys.readouterr()
    assert main(["dedupe", "--input", str(plain / "vectors-*.parquet"), "--output",
                 str(tmp_path / "explain"), "--explain"]) == 0
    assert "0.90" in capsys.readouterr().out
    assert (tmp_path / "explain" / "nn_similarity.png").stat().st_size > 1000


def test_dedupe_command_needs_threshold_or_explain(tmp_path, capsys):
    assert main(["dedupe", "--input", str(tmp_path / "none-*.parquet"),
                 "--output", str(tmp_path / "o"), "--threshold", "0.9"]) == 2
    assert "no file matches" in capsys.readouterr().err


def test_semantic_dedupe_requires_exact_dedupe(corpus, minilm_dir, tmp_path, capsys):
    path, _ = corpus
    assert main(["embed", "--input", path, "--output", str(tmp_path / "o"), "--model",
                 minilm_dir, "--no-exact-dedupe", "--dedupe-threshold", "0.9"]) == 2
    assert "drop --no-exact-dedupe" in capsys.readouterr().err


def test_misspelt_option_fails_before_the_pipeline(corpus, minilm_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["embed", "--input", str(corpus), "--output", str(tmp_path / "out"),
              "--model", minilm_dir, "--dedupe-treshold", "0.9"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--dedupe-treshold" in err and "did you mean --dedupe-threshold?" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flag", [
    "--runner=DirectRunner", "--direct_num_workers=2", "--direct_running_mode=multi_processing",
    "--job_endpoint=embed", "--environment_type=LOOPBACK", "--flink_master=host:8081",
    "--project=p", "--region=r", "--temp_location=gs://b/tmp", "--experiments=use_runner_v2",
    "--sdk_container_image=img", "--machine_type=n2-highmem-8",
    "--dataflow_service_options=worker_accelerator=type:nvidia-l4;count:1"])
def test_beam_pipeline_options_pass_through(flag):
    from beam_e5.cli import unknown_beam_args

    assert unknown_beam_args([flag]) == []
    assert unknown_beam_args([flag, "--no-such-option"]) == ["--no-such-option"]


def test_flex_template_parameters_are_reembed_options():
    """Every template parameter (and every one the Airflow DAG passes) is a reembed option."""
    import ast
    from pathlib import Path

    from beam_e5.cli import build_parser

    root = Path(__file__).resolve().parent.parent
    meta = json.loads((root / "deploy" / "flex-template-metadata.json").read_text())
    names = {p["name"] for p in meta["parameters"]}
    reembed = build_parser()._subparsers._group_actions[0].choices["reembed"]
    options = {o[2:] for a in reembed._actions for o in a.option_strings if o.startswith("--")}
    assert names <= options, names - options
    dag = ast.parse((root / "deploy" / "airflow_reembed_dag.py").read_text())
    passed = set()
    for node in ast.walk(dag):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if isinstance(key, ast.Constant) and key.value == "parameters":
                    passed |= {k.value for k in value.keys}
    assert passed and passed <= names, passed - names


def test_disk_full_is_found_through_beams_rewrapping() -> None:
    import errno

    from beam_e5.cli import disk_full

    assert disk_full(OSError(errno.ENOSPC, "No space left on device", "/out/x"))
    assert disk_full(RuntimeError("OSError: [Errno 28] No space left on device [while "
                                  "running 'WriteVectors/Write']"))
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as inner:
            raise ValueError("writing failed") from inner
    except ValueError as outer:
        assert disk_full(outer)
    assert not disk_full(OSError(errno.EACCES, "Permission denied"))
    assert not disk_full(RuntimeError("[Errno 2] No such file or directory"))


def test_stop_on_interrupt_gives_the_signal_back_as_it_found_it() -> None:
    import signal

    from beam_e5.cli import StopOnInterrupt

    handler = signal.getsignal(signal.SIGINT)
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, set())
    with StopOnInterrupt():
        assert signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, set())
    assert signal.getsignal(signal.SIGINT) is handler
    assert signal.pthread_sigmask(signal.SIG_BLOCK, set()) == mask


def test_ctrl_c_taken_by_a_thread_started_before_the_run_stops_it_at_once() -> None:
    """A thread an import started before the block does not block SIGINT, so the kernel
    hands the signal to it; Python's handler would then wait for the main thread, here
    parked in a 20 s wait as it is during a whole document's inference."""
    import signal
    import subprocess
    import sys
    import time

    code = ("import threading, time\nfrom beam_e5.cli import StopOnInterrupt\n"
            "threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n"
            "with StopOnInterrupt():\n    print('ready', flush=True)\n"
            "    threading.Event().wait(20)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert time.monotonic() - sent < 5
    assert err.strip().startswith("beam-e5: interrupted (Ctrl-C)")


def test_a_stopped_and_continued_run_is_not_taken_for_ctrl_c() -> None:
    """Ctrl-Z then fg (SIGSTOP, SIGCONT) cuts the watcher's wait short past its timeout,
    and ``sigtimedwait`` then returns an empty siginfo: that is no SIGINT."""
    import signal
    import subprocess
    import sys
    import time

    code = ("import time\nfrom beam_e5.cli import StopOnInterrupt\n"
            "with StopOnInterrupt():\n    print('ready', flush=True)\n    time.sleep(1.5)\n"
            "print('done', flush=True)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGSTOP)
    time.sleep(0.5)  # longer than the watcher's 0.2 s wait
    proc.send_signal(signal.SIGCONT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out.strip() == "done"
