"""Hostile inputs, round 2 (issue 22), through the real ``beam-e5`` command line.

The weak cases of the second round: each asserts the outcome the user sees (exit status, one
line, what is left in ``--output``). docs/reliability.md lists them beside round 1's.
"""

from __future__ import annotations

import pytest
from test_hostile_inputs import cli, model_args, write_jsonl


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
