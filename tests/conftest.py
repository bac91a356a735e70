"""Shared pytest fixtures.

Sections:
  * Beam pipeline runner helper (``run_beam``).
  * GCS emulator (``gcs_emulator``), for gs:// reads and writes without a cloud.
"""

from __future__ import annotations

import glob
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.metrics.metric import MetricsFilter

# Fixtures of these modules are available to every test without an import.
pytest_plugins = ("model_fixtures", "pg_fixtures")

# --------------------------------------------------------------------------------------
# Beam pipeline runner helper
# --------------------------------------------------------------------------------------

BuildFn = Callable[[beam.Pipeline], dict[str, beam.PCollection]]


@dataclass
class BeamRun:
    """Materialised outputs (JSON round-tripped dicts) and ``beam_e5`` counters."""

    outputs: dict[str, list[Any]]
    counters: dict[str, int]


@pytest.fixture
def run_beam(tmp_path: Path) -> Callable[[BuildFn], BeamRun]:
    """Run a pipeline on the DirectRunner and read back its named outputs.

    ``run_beam(build)`` calls ``build(pipeline)``, which returns ``{name: PCollection}``;
    every element is written as JSON to a file under ``tmp_path`` (so this works on any
    runner, in-process or not) and read back. Counters in namespace ``beam_e5`` are
    summed over steps.
    """
    runs = iter(range(1_000_000))

    def run(build: BuildFn) -> BeamRun:
        out_dir = tmp_path / f"beam-run-{next(runs)}"
        p = beam.Pipeline(runner="DirectRunner")
        names = []
        for name, pcoll in build(p).items():
            names.append(name)
            _ = (
                pcoll
                | f"Json_{name}"
                >> beam.Map(lambda x: json.dumps(x, sort_keys=True, ensure_ascii=False))
                | f"Write_{name}"
                >> beam.io.WriteToText(str(out_dir / name), file_name_suffix=".jsonl")
            )
        result = p.run()
        result.wait_until_finish()
        outputs: dict[str, list[Any]] = {}
        for name in names:
            rows: list[Any] = []
            for path in sorted(glob.glob(str(out_dir / f"{name}-*.jsonl"))):
                with open(path, encoding="utf-8") as f:
                    rows += [json.loads(line) for line in f if line.strip()]
            outputs[name] = rows
        counters: dict[str, int] = {}
        for c in result.metrics().query(MetricsFilter().with_namespace("beam_e5"))["counters"]:
            counters[c.key.metric.name] = counters.get(c.key.metric.name, 0) + c.committed
        return BeamRun(outputs, counters)

    return run


# --------------------------------------------------------------------------------------
# GCS emulator
# --------------------------------------------------------------------------------------

# An "authorized_user" Application Default Credentials file whose access token never
# expires: google-auth then never tries to refresh it (no network), and Beam uses it
# at once. Without it Beam's auth (apache_beam/internal/gcp/auth.py) retries
# google.auth.default() with exponential back-off for ~30 s before falling back to an
# anonymous client.
_FAKE_ADC = {
    "type": "authorized_user",
    "client_id": "gcs-emulator",
    "client_secret": "gcs-emulator",
    "refresh_token": "gcs-emulator",
    "token": "gcs-emulator-token",
    "expiry": "2999-01-01T00:00:00Z",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class _EmulatorServer:
    host: str  # "http://127.0.0.1:PORT"
    adc_path: str


@pytest.fixture(scope="session")
def _gcs_emulator_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_EmulatorServer]:
    """One in-memory ``gcp-storage-emulator`` process for the test session."""
    work = tmp_path_factory.mktemp("gcs-emulator")
    adc_path = work / "fake-adc.json"
    adc_path.write_text(json.dumps(_FAKE_ADC))
    port = _free_port()
    log_path = work / "emulator.log"
    cmd = [sys.executable, "-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1",
           "--port", str(port), "--in-memory"]  # fmt: skip
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError as e:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log_tail = log_path.read_text()[-2000:]
                    raise RuntimeError(f"gcp-storage-emulator did not start: {log_tail}") from e
                time.sleep(0.1)
        yield _EmulatorServer(f"http://127.0.0.1:{port}", str(adc_path))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class GcsEmulator:
    """A fresh bucket on the emulator; see the ``gcs_emulator`` fixture."""

    host: str
    bucket_name: str
    client: Any  # google.cloud.storage.Client (anonymous, pointed at the emulator)

    def url(self, name: str) -> str:
        """``gs://BUCKET/NAME``."""
        return f"gs://{self.bucket_name}/{name}"

    def upload(self, name: str, data: bytes) -> str:
        """Store ``data`` as object ``name``; returns its gs:// URL."""
        self.client.bucket(self.bucket_name).blob(name).upload_from_string(data)
        return self.url(name)

    def upload_dir(self, local: str, prefix: str) -> str:
        """Store every file under ``local`` (README.md aside) under ``prefix/``; its gs:// URL."""
        for path in Path(local).rglob("*"):
            if path.is_file() and path.name != "README.md":
                self.upload(f"{prefix}/{path.relative_to(local)}", path.read_bytes())
        return self.url(prefix)

    def download(self, name: str) -> bytes:
        """The bytes of object ``name``."""
        return bytes(self.client.bucket(self.bucket_name).blob(name).download_as_bytes())

    def list_names(self, prefix: str = "") -> list[str]:
        """Sorted object names under ``prefix``."""
        return sorted(b.name for b in self.client.list_blobs(self.bucket_name, prefix=prefix))


@pytest.fixture
def gcs_emulator(
    _gcs_emulator_server: _EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[GcsEmulator]:
    """A new bucket on a local ``gcp-storage-emulator`` that Beam's gs:// filesystem uses.

    How Beam is pointed at the emulator (for this test's duration, via env vars that
    subprocesses inherit too):

    * ``STORAGE_EMULATOR_HOST=http://127.0.0.1:PORT``: google-cloud-storage (which Beam's
      ``gcsio`` uses since 2.52) sends every request there.
    * ``GOOGLE_APPLICATION_CREDENTIALS`` -> a fake ``authorized_user`` file with a token
      that never expires, and ``GOOGLE_CLOUD_PROJECT=test``: Beam's
      ``auth.get_service_credentials`` finds credentials at once instead of retrying
      ``google.auth.default()`` for ~30 s, and google-auth never refreshes the token,
      so nothing reaches the internet. The emulator ignores the Authorization header.

    Beam caches credentials per process (``apache_beam.internal.gcp.auth._Credentials``),
    so a gs:// access made earlier in the process without these variables is cached as
    anonymous; that also works with the emulator. Yields a :class:`GcsEmulator` with
    ``.host``, ``.bucket_name``, ``.client``, ``upload(name, bytes) -> gs:// URL``,
    ``download(name)``, ``list_names(prefix)`` and ``url(name)``.
    """
    from google.cloud import storage

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", _gcs_emulator_server.host)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", _gcs_emulator_server.adc_path)
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "test")
    client = storage.Client.create_anonymous_client()
    bucket_name = f"beam-e5-test-{uuid.uuid4().hex[:12]}"
    client.create_bucket(bucket_name)
    assert os.environ["STORAGE_EMULATOR_HOST"] == _gcs_emulator_server.host
    yield GcsEmulator(_gcs_emulator_server.host, bucket_name, client)
