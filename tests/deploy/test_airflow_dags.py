"""The nightly schedule under a real Apache Airflow (issue 16).

The test installs Apache Airflow from PyPI into its own virtualenv (cached under
``~/.cache/beam-e5-tests/``; Airflow's pins clash with Beam's, so it never shares the project
environment), points it at a SQLite metadata database, and runs
``airflow dags test beam_e5_local_nightly_reembed DATE`` for real: the DAG's task calls this
project's Python to run ``beam-e5`` on the DirectRunner.

* night 1: ``embed`` (no LATEST yet) publishes ``snapshots/20260101``;
* night 2: the same corpus plus one document: ``reembed`` carries every old vector, embeds
  the new one, and moves LATEST;
* night 3: an input file cut off mid-upload: the task fails and LATEST stays on night 2.

The Dataflow DAG (``deploy/airflow_reembed_dag.py``) must import under the same Airflow with
the Google provider (and the Apache Beam provider its Dataflow operators need) installed. Skipped, with the pip error, only if Airflow cannot be
installed (no network to PyPI).
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from model_fixtures import minilm_dir  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
AIRFLOW_VERSION = "3.1.8"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "beam-e5-tests"
DAG_ID = "beam_e5_local_nightly_reembed"

pytestmark = pytest.mark.slow


def _pip(env_dir: Path, *packages: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(env_dir / "bin" / "python"), "-m", "pip", "install", "-q",
                           "--disable-pip-version-check", *packages],
                          capture_output=True, text=True, timeout=1800)


def _installed(env_dir: Path, marker: str, *packages: str) -> None:
    """``packages`` installed into ``env_dir`` (once: a marker file records it)."""
    done = env_dir / marker
    if done.exists():
        return
    proc = _pip(env_dir, *packages)
    if proc.returncode != 0:
        pytest.skip(f"cannot install {' '.join(packages)} from PyPI: "
                    f"{(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
    done.write_text(" ".join(packages))


@pytest.fixture(scope="module")
def airflow_env() -> Path:
    """A virtualenv with Apache Airflow (created once, reused by later runs)."""
    env_dir = CACHE / "airflow"
    if not (env_dir / ".installed").exists():
        venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    _installed(env_dir, ".installed", f"apache-airflow=={AIRFLOW_VERSION}")
    return env_dir


def _airflow(env_dir: Path, home: Path, *args: str, extra_env=None, timeout=900):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PYTHON"))}
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "deploy"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "PATH": f"{env_dir / 'bin'}:{os.environ.get('PATH', '')}",
        **(extra_env or {}),
    })
    return subprocess.run([str(env_dir / "bin" / "airflow"), *args], env=env, cwd=str(home),
                          capture_output=True, text=True, timeout=timeout)


def _docs(n: int) -> list[str]:
    return [json.dumps({"id": f"d{i}", "text": f"night corpus document {i} about apache beam "
                        f"and embeddings, variant {i * 31 % 17}"}) for i in range(n)]


def _run_state(env_dir: Path, home: Path, extra_env: dict) -> str:
    proc = _airflow(env_dir, home, "dags", "list-runs", DAG_ID, "-o", "json",
                    extra_env=extra_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_two_nights_then_a_failing_night_under_real_airflow(airflow_env, tmp_path,
                                                           minilm_dir):  # noqa: F811
    home = tmp_path / "airflow-home"
    home.mkdir()
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    snapshots = tmp_path / "snapshots"
    (corpus / "part-0.jsonl").write_text("\n".join(_docs(8)) + "\n")
    extra_env = {
        "BEAM_E5_PYTHON": sys.executable,
        "BEAM_E5_INPUT": f"{corpus}/*",
        "BEAM_E5_MODEL": minilm_dir,
        "BEAM_E5_SNAPSHOTS": str(snapshots),
        "BEAM_E5_EXTRA_ARGS": "--beam-batch-size 16",
        "BEAM_E5_RETRIES": "0",
        "HF_HUB_OFFLINE": "1",
    }
    migrate = _airflow(airflow_env, home, "db", "migrate", extra_env=extra_env)
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    parsed = _airflow(airflow_env, home, "dags", "reserialize", extra_env=extra_env)
    assert parsed.returncode == 0, parsed.stderr[-3000:]
    listed = _airflow(airflow_env, home, "dags", "list", "-o", "json", extra_env=extra_env)
    assert DAG_ID in listed.stdout, listed.stdout[-2000:] + listed.stderr[-3000:]

    def night(date: str) -> subprocess.CompletedProcess:
        return _airflow(airflow_env, home, "dags", "test", DAG_ID, date,
                        extra_env={**extra_env, "PYTHONPATH": str(ROOT)})

    first = night("2026-01-01")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    latest = snapshots / "LATEST"
    assert latest.read_text().strip() == str(snapshots / "20260101")
    m1 = json.loads((snapshots / "20260101" / "manifest.json").read_text())
    assert m1["command"] == "embed" and m1["counts"]["written"] == 8

    (corpus / "part-1.jsonl").write_text(json.dumps(
        {"id": "new", "text": "a document that arrived on the second day"}) + "\n")
    second = night("2026-01-02")
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert latest.read_text().strip() == str(snapshots / "20260102")
    c2 = json.loads((snapshots / "20260102" / "manifest.json").read_text())["counts"]
    assert c2["carried"] == 8 and c2["new"] == 1 and c2["written"] == 9

    whole = gzip.compress(("\n".join(_docs(400)) + "\n").encode())
    (corpus / "part-2.jsonl.gz").write_bytes(whole[: len(whole) // 2])  # cut mid-upload
    third = night("2026-01-03")
    assert third.returncode != 0, third.stdout[-3000:]
    assert "DagRun failed" in third.stdout + third.stderr
    assert "could not be read to their end" in third.stdout + third.stderr
    assert '"failed"' in _run_state(airflow_env, home, extra_env)
    assert latest.read_text().strip() == str(snapshots / "20260102")  # LATEST stays


def test_dataflow_dag_imports_with_the_google_provider(airflow_env, tmp_path):
    env_dir = airflow_env  # the same Airflow, with the Google provider added
    # the Dataflow operators import the Apache Beam provider too (the Google one alone fails:
    # "Failed to import apache-airflow-providers-apache-beam")
    _installed(env_dir, ".google-installed", f"apache-airflow=={AIRFLOW_VERSION}",
               "apache-airflow-providers-google", "apache-airflow-providers-apache-beam")
    home = tmp_path / "airflow-home"
    home.mkdir()
    check = ("import importlib.util, sys\n"
             "spec = importlib.util.spec_from_file_location('dag', sys.argv[1])\n"
             "mod = importlib.util.module_from_spec(spec)\n"
             "spec.loader.exec_module(mod)\n"
             "print(sorted(t.task_id for t in mod.dag.tasks))\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PYTHON"))}
    env.update({"AIRFLOW_HOME": str(home),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db"})
    proc = subprocess.run([str(env_dir / "bin" / "python"), "-c", check,
                           str(ROOT / "deploy" / "airflow_reembed_dag.py")],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "['reembed']" in proc.stdout
