"""Airflow DAG: re-embed the corpus every night without Dataflow, and publish the new snapshot.

For teams that run Beam on their own machines: each night runs ``pipelines/reembed.py`` (the
first night, with nothing published yet, ``pipelines/embed.py``) through Airflow's Apache Beam
provider (``BeamRunPythonPipelineOperator``) on the DirectRunner, or on a portable runner
(Flink, Spark) by setting ``BEAM_E5_RUNNER=PortableRunner`` and ``BEAM_E5_JOB_ENDPOINT``.

Each night writes ``SNAPSHOTS/<ds_nodash>/`` and only then moves ``SNAPSHOTS/LATEST`` to it
(beam-e5's ``--publish`` writes the pointer after the manifest), so a failed night leaves the
previous snapshot in service and the next night carries from it.

Settings are environment variables of the Airflow workers (or Airflow Variables of the same
name), read when the DAG file is parsed:

==========================  ====================================================================
``BEAM_E5_PYTHON``          the Python of an environment with beam-e5 installed (required)
``BEAM_E5_PIPELINES``       the folder holding ``embed.py`` and ``reembed.py`` (default: the
                            ``pipelines/`` folder next to this file's parent)
``BEAM_E5_CORPUS``          input file or glob (local or gs://) (required)
``BEAM_E5_SNAPSHOTS``       folder for the nightly snapshots and LATEST (required)
``BEAM_E5_MODEL``           model name, local directory or gs:// (required)
``BEAM_E5_EXTRA_ARGS``      more beam-e5 options, e.g. ``--dedupe-threshold=0.95`` (optional)
``BEAM_E5_RUNNER``          ``DirectRunner`` (default) or ``PortableRunner``
``BEAM_E5_JOB_ENDPOINT``    with ``PortableRunner``: the job server, e.g. ``localhost:8099``
==========================  ====================================================================
"""

from __future__ import annotations

import os
import shlex
from datetime import datetime
from pathlib import Path

from airflow.providers.apache.beam.operators.beam import BeamRunPythonPipelineOperator

try:  # Airflow 3
    from airflow.sdk import DAG, Variable, task
except ImportError:  # Airflow 2
    from airflow import DAG
    from airflow.decorators import task
    from airflow.models import Variable


def setting(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    if value:
        return value
    try:
        return Variable.get(name, default)
    except Exception:  # no metadata database while parsing (e.g. a plain import check)
        return default


PYTHON = setting("BEAM_E5_PYTHON", "python3")
PIPELINES = setting("BEAM_E5_PIPELINES",
                    str(Path(__file__).resolve().parent.parent / "pipelines"))
CORPUS = setting("BEAM_E5_CORPUS", "")
SNAPSHOTS = (setting("BEAM_E5_SNAPSHOTS", "") or "").rstrip("/")
MODEL = setting("BEAM_E5_MODEL", "")
RUNNER = setting("BEAM_E5_RUNNER", "DirectRunner")
JOB_ENDPOINT = setting("BEAM_E5_JOB_ENDPOINT")
EXTRA = shlex.split(setting("BEAM_E5_EXTRA_ARGS", "") or "")

LATEST = f"{SNAPSHOTS}/LATEST"
TONIGHT = f"{SNAPSHOTS}/{{{{ ds_nodash }}}}"


def _options(extra: dict[str, str]) -> dict[str, object]:
    # --overwrite: a retried night replaces what its crashed attempt left in TONIGHT
    opts: dict[str, object] = {"input": CORPUS, "model": MODEL, "output": TONIGHT,
                               "publish": LATEST, "overwrite": True, **extra}
    if RUNNER == "PortableRunner" and JOB_ENDPOINT:
        opts["job_endpoint"] = JOB_ENDPOINT
    for arg in EXTRA:  # "--name=value" or a bare "--flag"
        name, _, value = arg.lstrip("-").partition("=")
        opts[name] = value if value else True
    return opts


with DAG("beam_e5_local_nightly_reembed", start_date=datetime(2026, 1, 1),
         schedule="0 2 * * *", catchup=False, max_active_runs=1,
         doc_md=__doc__) as dag:

    @task.branch(task_id="previous_snapshot")
    def previous_snapshot() -> str:
        """Re-embed against LATEST when a snapshot is published, else embed from scratch."""
        from apache_beam.io.filesystems import FileSystems  # local paths and gs:// alike

        return "reembed" if FileSystems.exists(LATEST) else "embed"

    embed = BeamRunPythonPipelineOperator(
        task_id="embed", runner=RUNNER, py_interpreter=PYTHON,
        py_file=f"{PIPELINES}/embed.py", pipeline_options=_options({}))
    reembed = BeamRunPythonPipelineOperator(
        task_id="reembed", runner=RUNNER, py_interpreter=PYTHON,
        py_file=f"{PIPELINES}/reembed.py", pipeline_options=_options({"previous": LATEST}))

    previous_snapshot() >> [embed, reembed]
