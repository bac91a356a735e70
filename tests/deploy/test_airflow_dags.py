"""The nightly schedule, run for real under Apache Airflow.

Airflow is installed by this test into an environment of its own (it pins other versions of
many libraries than beam-e5's), with the Apache Beam and Google providers; its metadata
database is SQLite in a temporary AIRFLOW_HOME. ``airflow dags test`` then runs
``deploy/airflow_local_reembed_dag.py`` for three nights:

1. nothing published yet: the DAG embeds the corpus and publishes LATEST;
2. the corpus plus one document: the DAG re-embeds against LATEST, carries every unchanged
   document and embeds the new one;
3. a broken night (its .gz export is cut short): the run fails and LATEST stays where it was.

The Dataflow DAG (``deploy/airflow_reembed_dag.py``) must import cleanly under the same
Airflow with the Google provider installed.

The Airflow environment is cached in ``$BEAM_E5_AIRFLOW_VENV`` (default
``~/.cache/beam-e5/airflow-<version>``); the test is skipped, saying why, only when Airflow
cannot be installed (no package index).
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
AIRFLOW_VERSION = "3.3.2"
AIRFLOW_PACKAGES = [f"apache-airflow=={AIRFLOW_VERSION}", "apache-airflow-providers-apache-beam",
                    "apache-airflow-providers-google"]
LOCAL_DAG = "beam_e5_local_nightly_reembed"


@pytest.fixture(scope="module")
def airflow_python() -> Path:
    venv = Path(os.environ.get("BEAM_E5_AIRFLOW_VENV",
                               Path.home() / ".cache" / "beam-e5" / f"airflow-{AIRFLOW_VERSION}"))
    python = venv / "bin" / "python"
    marker = venv / ".beam-e5-installed"
    if not marker.exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        pip = subprocess.run([str(python), "-m", "pip", "install", "--quiet",
                              "--disable-pip-version-check", *AIRFLOW_PACKAGES],
                             capture_output=True, text=True)
        if pip.returncode != 0:
            last = (pip.stderr.strip().splitlines() or ["pip gave no reason"])[-1]
            pytest.skip(f"Apache Airflow could not be installed from the package index: {last}")
        marker.write_text(" ".join(AIRFLOW_PACKAGES))
    return python


@pytest.fixture()
def airflow_env(tmp_path, airflow_python) -> dict[str, str]:
    home = tmp_path / "airflow-home"
    dags = home / "dags"
    dags.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PYTHON"))}
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "deploy"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "PATH": f"{airflow_python.parent}:{os.environ['PATH']}",
    })
    subprocess.run([str(airflow_python.parent / "airflow"), "db", "migrate"], env=env,
                   check=True, capture_output=True, text=True)
    return env


def beam_e5_python(tmp_path: Path) -> str:
    """A wrapper around this interpreter that imports this checkout's beam_e5."""
    wrapper = tmp_path / "beam-e5-python"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH="{ROOT}" HF_HUB_OFFLINE=1 '
                       f'exec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


def write_corpus(path: Path, n: int) -> None:
    rows = [{"id": f"doc{i:03d}", "text": f"Night schedule document {i}: the corpus changes "
             f"slowly, and item {i * 7 % 13} describes topic {i % 5} in some detail."}
            for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def run_night(env: dict[str, str], day: str) -> subprocess.CompletedProcess:
    airflow = str(Path(env["PATH"].split(":")[0]) / "airflow")
    return subprocess.run([airflow, "dags", "test", LOCAL_DAG, day], env=env,
                          capture_output=True, text=True, timeout=900)


def test_two_nights_then_a_failing_night(tmp_path, airflow_env, minilm_dir):
    corpus = tmp_path / "corpus.jsonl"
    write_corpus(corpus, 40)
    snapshots = tmp_path / "snapshots"
    snapshots.mkdir()  # beam-e5 refuses a --publish pointer in a folder that does not exist
    env = {**airflow_env, "BEAM_E5_PYTHON": beam_e5_python(tmp_path),
           "BEAM_E5_PIPELINES": str(ROOT / "pipelines"), "BEAM_E5_CORPUS": str(corpus),
           "BEAM_E5_SNAPSHOTS": str(snapshots), "BEAM_E5_MODEL": minilm_dir}
    latest = snapshots / "LATEST"

    first = run_night(env, "2026-01-01")
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
    assert latest.read_text().strip() == str(snapshots / "20260101")
    night1 = json.loads((snapshots / "20260101" / "manifest.json").read_text())
    assert night1["command"] == "embed" and night1["counts"]["written"] == 40

    write_corpus(corpus, 41)  # one new document
    second = run_night(env, "2026-01-02")
    assert second.returncode == 0, second.stdout[-4000:] + second.stderr[-4000:]
    assert latest.read_text().strip() == str(snapshots / "20260102")
    night2 = json.loads((snapshots / "20260102" / "manifest.json").read_text())
    assert night2["command"] == "reembed"
    assert night2["counts"]["carried"] == 40 and night2["counts"]["new"] == 1
    assert night2["counts"]["reembedded"] == 0 and night2["counts"]["deleted"] == 0

    # an export cut off mid-upload: the records before the cut are read, the file is an
    # error, the night fails, and LATEST keeps naming the second night
    cut = tmp_path / "cut.jsonl.gz"
    whole = gzip.compress(corpus.read_bytes())
    cut.write_bytes(whole[: len(whole) * 2 // 3])
    broken = run_night({**env, "BEAM_E5_CORPUS": str(cut)}, "2026-01-03")
    assert broken.returncode != 0
    assert latest.read_text().strip() == str(snapshots / "20260102")
    night3 = json.loads((snapshots / "20260103" / "manifest.json").read_text())
    assert night3["incomplete_inputs"] and night3["incomplete_inputs"][0]["source"].endswith(
        "cut.jsonl.gz")


def test_dataflow_dag_imports_with_the_google_provider(airflow_python, tmp_path):
    code = ("import sys\n"
            "try:\n"
            "    from airflow.dag_processing.dagbag import DagBag\n"
            "except ImportError:\n"
            "    from airflow.models.dagbag import DagBag\n"
            f"bag = DagBag(dag_folder={str(ROOT / 'deploy')!r})\n"
            "print(sorted(bag.dag_ids)); print(bag.import_errors)\n"
            "sys.exit(1 if bag.import_errors else 0)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PYTHON"))}
    env.update({"AIRFLOW_HOME": str(tmp_path / "home"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"})
    out = subprocess.run([str(airflow_python), "-c", code], env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "beam_e5_nightly_reembed" in out.stdout and LOCAL_DAG in out.stdout
