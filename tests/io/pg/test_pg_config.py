"""The pgvector output's config: validation before anything connects, and the CLI's checks."""

import pytest

from beam_e5.cli import main
from beam_e5.errors import ConfigError
from beam_e5.io.pg.config import PgSinkConfig


@pytest.mark.parametrize("kwargs, message", [
    ({"report_dir": ""}, "needs --report-dir"),
    ({"report_dir": "postgresql://u@h/db"}, "not a database"),
    ({"index": "flat"}, "--index must be one of"),
    ({"hnsw_m": 1}, "--hnsw-m must be between"),
    ({"hnsw_m": 16, "hnsw_ef_construction": 20}, "at least twice"),
    ({"ivfflat_lists": -1}, "--ivfflat-lists"),
    ({"batch_rows": 0}, "--batch-rows must be at least 1"),
    ({"maintenance_work_mem": "lots"}, "memory size"),
])
def test_sink_config_validation(kwargs, message):
    args = {"report_dir": "reports/", **kwargs}
    with pytest.raises(ConfigError, match=message):
        PgSinkConfig("postgresql://u@h/db?table=docs", **args)


def test_manifest_options_never_hold_the_password():
    cfg = PgSinkConfig("postgresql://u:hunter2@h/db?table=docs", "r/")
    assert "hunter2" not in repr(cfg.options()) and "hunter2" not in repr(cfg)


BASE = ["embed", "--input", "data/sample/corpus.jsonl", "--model", "m"]


@pytest.mark.parametrize("extra, message", [
    (["--output", "out/", "--index", "hnsw"], "--index applies to a postgresql:// --output"),
    (["--output", "out/", "--store-text"], "--store-text applies to a postgresql://"),
    (["--output", "postgresql://u:pw@h/db?table=docs"], "needs --report-dir"),
    (["--output", "postgresql://u:pw@h/db?table=docs", "--report-dir", "r/", "--publish", "p"],
     "drop --publish"),
    (["--output", "postgresql://u:pw@h/db?table=docs", "--report-dir", "r/",
      "--keep-fields", "text", "--store-text"], "drop one of them"),
])
def test_cli_misconfigurations_exit_2_before_anything_runs(extra, message, capsys):
    assert main(BASE + extra) == 2
    err = capsys.readouterr().err
    assert message in err and ":pw@" not in err


def test_reembed_previous_must_be_the_output_uri(capsys):
    args = ["reembed", "--input", "data/sample/corpus.jsonl", "--model", "m",
            "--report-dir", "r/", "--output", "postgresql://u:pw@h/db?table=docs"]
    assert main(args + ["--previous", "postgresql://u:pw@h/db?table=other"]) == 2
    assert "differs from --output" in capsys.readouterr().err
    assert main(args + ["--previous", "snapshots/LATEST"]) == 2
    assert "must be the same URI" in capsys.readouterr().err
    assert main(["reembed", "--input", "x.jsonl", "--model", "m", "--output", "out/",
                 "--previous", "postgresql://u@h/db?table=docs"]) == 2
    assert "--output must be the same URI" in capsys.readouterr().err
