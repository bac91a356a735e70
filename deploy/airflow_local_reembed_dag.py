"""Airflow DAG: re-embed the corpus every night without Dataflow, and publish the snapshot.

For users who run beam-e5 on one machine (the DirectRunner) or on a portable runner (Flink,
Spark: pass ``--runner`` and its options in ``BEAM_E5_EXTRA_ARGS``). Copy this file into
your Airflow DAGs folder and set, as environment variables of the Airflow workers:

``BEAM_E5_PYTHON``
    the Python of an environment where beam-e5 is installed (Airflow and beam-e5 need not
    share one: their pins differ). Default: ``python3``.
``BEAM_E5_INPUT``, ``BEAM_E5_MODEL``
    the corpus (file, glob, gs://) and the model (directory, gs:// or Hub name).
``BEAM_E5_SNAPSHOTS``
    the folder (local or gs://) that receives one snapshot per night, ``YYYYMMDD/``, and the
    ``LATEST`` pointer that serving reads.
``BEAM_E5_EXTRA_ARGS``
    more options, e.g. ``--dedupe-threshold 0.95 --runner FlinkRunner ...``.
``BEAM_E5_RETRIES``
    task retries (default 1, after 30 minutes).

Each night runs ``beam-e5 reembed --previous LATEST`` (``embed`` on the first night, when no
LATEST exists yet), writing ``SNAPSHOTS/<ds_nodash>`` and moving LATEST only after a complete,
balanced run that passed the publish guards (never an empty run, never one that shrank below
``--publish-min-ratio``). A failing night fails the task and leaves LATEST where it was; its
retry (or the next night) runs again: ``--overwrite`` replaces what a failed attempt left,
and beam-e5 refuses to overwrite the snapshot LATEST names.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from datetime import datetime, timedelta

from airflow import DAG

try:  # Airflow 3
    from airflow.providers.standard.operators.python import PythonOperator
except ImportError:  # Airflow 2
    from airflow.operators.python import PythonOperator

EXISTS = ("import sys; from apache_beam.io.filesystems import FileSystems; "
          "sys.exit(0 if FileSystems.exists(sys.argv[1]) else 1)")


def _join(folder: str, name: str) -> str:
    return folder.rstrip("/") + "/" + name


def nightly_command(python: str, ds_nodash: str, latest_exists: bool) -> list[str]:
    """The beam-e5 command line of one night (a pure function, for tests and dry runs)."""
    snapshots = os.environ["BEAM_E5_SNAPSHOTS"]
    latest = _join(snapshots, "LATEST")
    cmd = [python, "-m", "beam_e5", "reembed" if latest_exists else "embed",
           "--input", os.environ["BEAM_E5_INPUT"], "--model", os.environ["BEAM_E5_MODEL"],
           "--output", _join(snapshots, ds_nodash), "--publish", latest, "--overwrite"]
    if latest_exists:
        cmd += ["--previous", latest]
    return cmd + shlex.split(os.environ.get("BEAM_E5_EXTRA_ARGS", ""))


def run_night(ds_nodash: str) -> None:
    python = os.environ.get("BEAM_E5_PYTHON", "python3")
    latest = _join(os.environ["BEAM_E5_SNAPSHOTS"], "LATEST")
    exists = subprocess.run([python, "-c", EXISTS, latest], check=False).returncode == 0
    cmd = nightly_command(python, ds_nodash, exists)
    print("running:", " ".join(shlex.quote(c) for c in cmd), flush=True)
    # a non-zero exit (refused, failed input, publish guard) fails the task: LATEST stays
    subprocess.run(cmd, check=True)


with DAG("beam_e5_local_nightly_reembed", start_date=datetime(2026, 1, 1),
         schedule="0 2 * * *", catchup=False, max_active_runs=1,
         default_args={"retries": int(os.environ.get("BEAM_E5_RETRIES", "1")),
                       "retry_delay": timedelta(minutes=30)}) as dag:
    PythonOperator(task_id="reembed", python_callable=run_night,
                   op_kwargs={"ds_nodash": "{{ ds_nodash }}"})
