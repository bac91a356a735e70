"""Airflow DAG: re-embed the corpus every night on Dataflow and publish the new snapshot.

Copy into your Airflow DAGs folder; set the variables below. It needs the Google provider
and the Apache Beam provider, which its Dataflow operators import:
``pip install apache-airflow-providers-google apache-airflow-providers-apache-beam``. It launches the Flex Template
built from docker/Dockerfile.cpu (see docs/deploy.md). The template's LATEST pointer moves
only after a complete run, so a failed night leaves yesterday's snapshot in service; the
next night simply runs again (``--overwrite`` replaces a crashed attempt's directory).
"""

from datetime import datetime

from airflow import DAG
from airflow.providers.google.cloud.operators.dataflow import DataflowStartFlexTemplateOperator

PROJECT = "my-project"
REGION = "us-central1"
BUCKET = "gs://my-bucket"
TEMPLATE = f"{BUCKET}/templates/beam-e5-reembed.json"

with DAG("beam_e5_nightly_reembed", start_date=datetime(2026, 1, 1), schedule="0 2 * * *",
         catchup=False, max_active_runs=1) as dag:
    DataflowStartFlexTemplateOperator(
        task_id="reembed",
        project_id=PROJECT,
        location=REGION,
        wait_until_finished=True,
        body={"launchParameter": {
            "jobName": "beam-e5-reembed-{{ ds_nodash }}",
            "containerSpecGcsPath": TEMPLATE,
            "parameters": {
                "input": f"{BUCKET}/corpus/*.jsonl",
                "previous": f"{BUCKET}/snapshots/LATEST",
                "output": f"{BUCKET}/snapshots/{{{{ ds_nodash }}}}",
                "publish": f"{BUCKET}/snapshots/LATEST",
                "model": f"{BUCKET}/models/e5-base-v2",
                "dedupe-threshold": "0.95",
                "overwrite": "true",
            },
            "environment": {"machineType": "n2-highmem-8", "maxWorkers": 50,
                            "sdkContainerImage": f"{REGION}-docker.pkg.dev/{PROJECT}/beam/beam-e5:cpu"},
        }},
    )
