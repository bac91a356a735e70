"""Hostile inputs, round 2 (issue 22), through the real ``beam-e5`` command line.

The weak cases of the second round: each asserts the outcome the user sees (exit status, one
line, what is left in ``--output``). docs/reliability.md lists them beside round 1's.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_hostile_inputs import cli, model_args, write_jsonl

from beam_e5.cli import main


@pytest.mark.parametrize("extra, message", [
    (["--chunk-tokens", "100000"], "--chunk-tokens 100000 exceeds what the model's window holds"),
    (["--max-length", "40", "--chunk-overlap", "30"], "--chunk-overlap 30 is more than half"),
    (["--max-length", "1000"], "--max-length 1000 exceeds"),
    (["--max-length", "8"], "raise --max-length"),
])
def test_refusals_exit_2_on_one_line_and_create_no_output_directory(
        tmp_path, capsys, minilm_dir, extra, message):
    corpus = write_jsonl(tmp_path / "c.jsonl", [{"id": "a", "text": "short"}])
    out = tmp_path / "out"
    rc, _, err = cli(capsys, "embed", "--input", corpus, "--output", str(out),
                     *model_args(minilm_dir), *extra)
    assert rc == 2 and err.startswith("beam-e5: error: ") and err.count("\n") == 1, err
    assert message in err
    assert not out.exists()  # not even an empty directory


@pytest.mark.parametrize("field", ["doc_id", "chunk", "chunks", "char_start", "char_end",
                                   "tokens_cut"])
def test_a_kept_field_named_like_a_chunk_column_is_refused_with_the_rename(
        tmp_path, capsys, minilm_dir, field):
    corpus = write_jsonl(tmp_path / "c.jsonl", [{"id": "a", "text": "t", field: "mine"}])
    out = tmp_path / "out"
    rc, _, err = cli(capsys, "embed", "--input", corpus, "--output", str(out),
                     "--keep-fields", field, *model_args(minilm_dir))
    assert rc == 2 and err.startswith("beam-e5: error: ") and err.count("\n") == 1, err
    assert f"--keep-fields {field!r} names a column beam-e5 writes itself" in err
    assert f"--keep-fields {field}:source_{field}" in err
    assert not out.exists()


def test_a_refusal_after_the_claim_removes_the_directory_it_created(tmp_path, capsys,
                                                                     minilm_dir):
    """A PostgreSQL output claims --report-dir, then connects: a server that cannot be
    reached is refused, and the report directory the claim made is gone again."""
    pytest.importorskip("psycopg")
    corpus = write_jsonl(tmp_path / "c.jsonl", [{"id": "a", "text": "short"}])
    report = tmp_path / "report"
    rc, _, err = cli(capsys, "embed", "--input", corpus, "--report-dir", str(report),
                     "--output", "postgresql://u@127.0.0.1:1/db?table=docs&connect_timeout=2",
                     *model_args(minilm_dir))
    assert rc == 2 and "cannot connect" in err, err  # (the libpq text: branch sec-pg)
    assert not report.exists()
    kept = tmp_path / "kept"
    kept.mkdir()  # a directory the user made is left in place
    rc, _, _ = cli(capsys, "embed", "--input", corpus, "--report-dir", str(kept),
                   "--output", "postgresql://u@127.0.0.1:1/db?table=docs&connect_timeout=2",
                   *model_args(minilm_dir))
    assert rc == 2 and kept.is_dir() and not any(kept.iterdir())


def _cli_process(*args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]),
               HF_HUB_OFFLINE="1")
    return subprocess.Popen([sys.executable, "-m", "beam_e5", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_for_staging(out: Path, proc: subprocess.Popen, limit_s: float = 120) -> None:
    start = time.monotonic()
    while time.monotonic() - start < limit_s and proc.poll() is None:
        if out.is_dir() and any(p.name.startswith("beam-temp-") for p in out.iterdir()):
            return
        time.sleep(0.2)
    raise AssertionError(f"the run never started writing: {proc.poll()}")


@pytest.mark.slow
def test_ctrl_c_during_a_long_document_stops_at_once_and_leaves_a_rerunnable_output(
        tmp_path, minilm_dir):
    long = " ".join(f"sentence {i} of a very long manual page about pipelines."
                    for i in range(20000))  # minutes of embedding on a 2-core machine
    corpus = write_jsonl(tmp_path / "c.jsonl", [{"id": "long", "text": long}])
    out = tmp_path / "out"
    proc = _cli_process("embed", "--input", corpus, "--output", str(out), "--model", minilm_dir)
    _wait_for_staging(out, proc)
    time.sleep(2)  # inside the long document: tokenising, cutting, embedding its windows
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    stopped_s = time.monotonic() - sent
    assert proc.returncode == 130, err
    assert stopped_s < 5, stopped_s
    assert "Traceback" not in err
    [last] = err.strip().splitlines()[-1:]
    assert last.startswith("beam-e5: interrupted (Ctrl-C)") and str(out) in last
    assert list(out.iterdir()) == []  # no marker, no partial file
    short = write_jsonl(tmp_path / "s.jsonl", [{"id": "s", "text": "a short document"}])
    assert main(["embed", "--input", short, "--output", str(out),
                 *model_args(minilm_dir)]) == 0  # the same --output, no --overwrite


def _can_mount_tmpfs(where: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c",
                            f"mount -t tmpfs -o size=64k tmpfs {where}"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.slow
def test_disk_full_is_one_line_naming_the_output_and_exit_1(tmp_path, tiny_models):
    """A real full filesystem: a 64 KiB tmpfs mounted in a private mount namespace."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if not _can_mount_tmpfs(disk):
        pytest.skip("cannot mount a tmpfs here (needs unshare -m and the right to mount)")
    model = tiny_models("bert", "e5-small-v2")
    corpus = write_jsonl(tmp_path / "c.jsonl", [
        {"id": f"d{i}", "text": f"document {i} " + "words about beam " * (i % 7 + 1)}
        for i in range(3000)])
    out = disk / "out"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]),
               HF_HUB_OFFLINE="1")
    script = (f"mount -t tmpfs -o size=64k tmpfs {disk} && {sys.executable} -m beam_e5 embed "
              f"--input {corpus} --output {out} --model {model} --max-length 32; rc=$?; "
              f"ls -A {out}; exit $rc")
    run = subprocess.run(["unshare", "-m", "sh", "-c", script], env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 1, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    [line] = [x for x in run.stderr.splitlines() if x.startswith("beam-e5: run failed")]
    assert line.startswith(f"beam-e5: run failed: disk full at {out} (No space left on device)")
    assert run.stdout.strip() == ""  # the directory holds nothing: rerun once there is space


@pytest.mark.slow
def test_binary_text_trailing_gzip_garbage_and_late_kept_fields_are_read(
        tmp_path, capsys, caplog, tiny_models):
    """Three inputs the first round refused or lost, in one run: all their records arrive."""
    import gzip
    import json
    import logging

    import pyarrow as pa
    import pyarrow.parquet as pq

    model = tiny_models("bert", "e5-small-v2")
    src = tmp_path / "in"
    src.mkdir()
    pq.write_table(pa.table({"id": ["p1", "p2", "p3"],
                             "text": pa.array([b"binary but UTF-8 \xc3\xa9", b"plain bytes",
                                               b"not \xff UTF-8"], pa.binary()),
                             "lang": ["fr", "en", "xx"]}), src / "b.parquet")
    lines = [{"id": "g1", "text": "first record has no lang"},
             {"id": "g2", "text": "the second one has it", "lang": "de"}]
    (src / "g.jsonl.gz").write_bytes(
        gzip.compress("".join(json.dumps(r) + "\n" for r in lines).encode()) + b"junk\n")
    out = tmp_path / "out"
    caplog.set_level(logging.WARNING)
    rc, _, err = cli(capsys, "embed", "--input", f"{src}/*", "--output", str(out),
                     "--model", model, "--max-length", "32", "--keep-fields", "lang")
    assert rc == 0, err
    rows = {r["id"]: r["lang"] for f in out.glob("vectors-*.parquet")
            for r in pq.read_table(f, columns=["id", "lang"]).to_pylist()}
    assert rows == {"p1": "fr", "p2": "en", "g1": None, "g2": "de"}
    [error] = [json.loads(x) for f in out.glob("errors-*.jsonl") for x in f.read_text().split("\n")
               if x]
    assert error["source"].endswith("b.parquet:row=2") and "not valid UTF-8" in error["reason"]
    assert any("trailing garbage" in r.getMessage() and "g.jsonl.gz" in r.getMessage()
               for r in caplog.records) or "trailing garbage" in err
