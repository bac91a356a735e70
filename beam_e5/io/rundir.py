"""The run directory: claimed before a run, counts and manifest written after it.

Every run has one (the Parquet output directory itself, or ``--report-dir`` beside a
database output): it holds ``manifest.json``, ``errors-*.jsonl``, ``duplicates-*.parquet``
and ``deleted-*.jsonl``; :func:`claim_output` holds it for the length of a run
(``with claim_output(cfg):``).

A finished run is the set of files that ``manifest.json`` describes; the manifest is written
last and atomically (a temporary name, then a rename), so a reader that sees a manifest sees
a complete run. Beam's sinks write shards under temporary names and rename them at finalize.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Optional

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from beam_e5.errors import ConfigError
from beam_e5.io.sinks import VECTOR_DTYPES
from beam_e5.records import FILE_SCOPE

LOG = logging.getLogger(__name__)

MANIFEST = "manifest.json"
COUNTS_DIR = "_counts"
RUN_MARKER = "_RUNNING"  # claimed at start, removed at the end: one run per output at a time
# What a run (or a crashed one) can leave; Beam's sinks stage shards in beam-temp-* folders.
OUTPUT_PATTERNS = ("vectors-*", "duplicates-*", "errors-*", "deleted-*", COUNTS_DIR + "/**",
                   "beam-temp-*/**", MANIFEST + ".tmp")
STAGING_DIR_PREFIXES = ("beam-temp-", COUNTS_DIR)


@dataclass(frozen=True)
class OutputConfig:
    """Where and how results are written."""

    output: str
    vector_dtype: str = "float32"
    overwrite: bool = False

    def __post_init__(self) -> None:
        if not self.output or not self.output.strip():
            raise ConfigError("--output is empty; pass a local directory or a gs:// prefix")
        if self.vector_dtype not in VECTOR_DTYPES:
            raise ConfigError(f"--vector-dtype must be one of {', '.join(VECTOR_DTYPES)}, "
                              f"got {self.vector_dtype!r}")


def existing_outputs(output_dir: str) -> list[str]:
    """Paths in ``output_dir`` that a previous (complete or crashed) run left."""
    patterns = ([FileSystems.join(output_dir, MANIFEST), FileSystems.join(output_dir, RUN_MARKER)]
                + [FileSystems.join(output_dir, p) for p in OUTPUT_PATTERNS])
    found = []
    for result in FileSystems.match(patterns, limits=[10_000] * len(patterns)):
        found += [m.path for m in result.metadata_list]
    if "://" not in output_dir:  # local: Beam's match lists files only, not (empty) folders
        found += [p for prefix in STAGING_DIR_PREFIXES
                  for p in glob.glob(os.path.join(output_dir, prefix + "*")) if os.path.isdir(p)]
    return found


class OutputClaim:
    """This run's hold on its output directory: the ``_RUNNING`` marker it created.

    ``release()`` after success removes the marker; ``abandon()`` after a failure removes the
    run's partial files too, so the corrected rerun needs no ``--overwrite``. Once the run
    is ``mark_complete()`` (its manifest written), a later failure only releases it.
    """

    def __init__(self, output_dir: str, marker: str, created: bool = False) -> None:
        self.output_dir = output_dir
        self.marker = marker
        self.created = created  # the claim made the (local) directory: abandon removes it
        self.complete = False
        with _HELD_LOCK:
            _HELD.append(self)

    def mark_complete(self) -> None:
        self.complete = True

    def end(self, failed: bool, refused: bool = False) -> None:
        """Release the directory, or abandon it when the run failed before it was complete
        (``refused``: before it started, so a directory the claim made goes too)."""
        if failed and not self.complete:
            self.abandon(refused)
        else:
            self.release()

    def __enter__(self) -> "OutputClaim":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.end(failed=exc_type is not None, refused=refusal(exc_type))

    def release(self) -> None:
        with _HELD_LOCK:
            if self in _HELD:
                _HELD.remove(self)
        _delete_all([self.marker])

    def abandon(self, refused: bool = False) -> None:
        """Remove the run's partial files and the marker; ``refused`` (the run never
        started): also the directory, if the claim created it and nothing else is in it."""
        try:
            _delete_all([p for p in existing_outputs(self.output_dir) if p != self.marker])
        finally:
            self.release()
            if refused and self.created:
                remove_if_empty(self.output_dir)


def refusal(exc_type: Optional[type]) -> bool:
    """Whether a run ended by ``exc_type`` was refused before it started (ConfigError)."""
    return exc_type is not None and issubclass(exc_type, ConfigError)


_HELD: list[OutputClaim] = []  # the claims of this process not yet released
_HELD_LOCK = threading.Lock()


def held_claims() -> list[OutputClaim]:
    """The output claims this process holds now (what an interrupted run must give up)."""
    with _HELD_LOCK:
        return list(_HELD)


def remove_if_empty(directory: str) -> None:
    """Remove a local directory this run created, if nothing is left in it."""
    try:
        os.rmdir(directory)
    except OSError:
        pass  # not empty (someone else's files), or already gone: leave it


def _marker_text() -> bytes:
    return json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                       "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}).encode()


def _marker_owner(marker: str) -> dict[str, Any]:
    try:
        with FileSystems.open(marker) as f:
            owner = json.loads(f.read().decode("utf-8"))
        return owner if isinstance(owner, dict) else {}
    except Exception:  # noqa: BLE001 - a marker half-written by a killed run
        return {}


def _alive_here(owner: dict[str, Any]) -> bool:
    """Whether the marker's run is a live process on this machine."""
    if owner.get("host") != socket.gethostname() or not isinstance(owner.get("pid"), int):
        return False
    try:
        os.kill(owner["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _create_exclusive(path: str) -> bool:
    """Create ``path`` only if it does not exist; False if it does. Atomic on local disks
    (``O_EXCL``) and on GCS (an ``ifGenerationMatch=0`` precondition)."""
    if "://" not in path:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(_marker_text())
        return True
    if path.startswith("gs://"):
        from google.api_core.exceptions import PreconditionFailed
        from google.cloud import storage

        bucket, _, name = path[len("gs://"):].partition("/")
        client = (storage.Client.create_anonymous_client()
                  if os.environ.get("STORAGE_EMULATOR_HOST") else storage.Client())
        blob = client.bucket(bucket).blob(name)
        if blob.exists():  # also where the precondition is not enforced (the emulator)
            return False
        try:
            blob.upload_from_string(_marker_text(), if_generation_match=0)
        except PreconditionFailed:
            return False
        return True
    if FileSystems.exists(path):  # other filesystems: best effort
        return False
    with FileSystems.create(path) as f:
        f.write(_marker_text())
    return True


def check_output_location(output: str) -> bool:
    """A local ``--output`` must be a directory we can create and write in; True when this
    call created it (a refused or failed run removes it again)."""
    if "://" in output:
        return False
    if os.path.exists(output) and not os.path.isdir(output):
        raise ConfigError(f"--output {output} is an existing file, not a directory; choose a "
                          "new directory name")
    created = not os.path.exists(output)
    try:
        os.makedirs(output, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create --output {output} ({e.strerror}); choose a "
                          "directory you can write to") from e
    if not os.access(output, os.W_OK | os.X_OK):
        if created:
            remove_if_empty(output)
        raise ConfigError(f"cannot write to --output {output} (permission denied); choose a "
                          "directory you can write to or fix its permissions")
    return created


def claim_output(cfg: OutputConfig) -> OutputClaim:
    """Take the output directory for this run, atomically, before looking inside it.

    Refuses at once when another run holds it (its ``_RUNNING`` marker); a marker left by a
    killed run is replaced only with ``--overwrite`` (and never while its process still runs
    on this machine). Then refuses to mix runs, or with ``overwrite`` removes the previous
    run, manifest first.
    """
    created = check_output_location(cfg.output)
    try:
        return _claim(cfg, created)
    except BaseException:
        if created:
            remove_if_empty(cfg.output)
        raise


def _claim(cfg: OutputConfig, created: bool) -> OutputClaim:
    if "://" in cfg.output and not FileSystems.exists(cfg.output):
        FileSystems.mkdirs(cfg.output)
    marker = FileSystems.join(cfg.output, RUN_MARKER)
    if not _create_exclusive(marker):
        owner = _marker_owner(marker)
        who = (f"pid {owner.get('pid')} on {owner.get('host')}, started {owner.get('started')}"
               if owner else "owner unknown")
        if not cfg.overwrite or _alive_here(owner):
            raise ConfigError(
                f"another beam-e5 run is writing to {cfg.output} ({who}); wait for it to "
                "finish or choose another --output. If that run was killed, pass --overwrite "
                "to replace what it left")
        _delete_all([marker])
        if not _create_exclusive(marker):
            raise ConfigError(f"another beam-e5 run took {cfg.output} just now; choose "
                              "another --output")
    claim = OutputClaim(cfg.output, marker, created)
    try:
        _clear_previous_run(cfg, marker)
    except BaseException:
        claim.release()
        raise
    return claim


def _clear_previous_run(cfg: OutputConfig, marker: str) -> None:
    found = [p for p in existing_outputs(cfg.output) if p != marker]
    if not found:
        return
    if not cfg.overwrite:
        what = "a manifest.json" if any(p.endswith(MANIFEST) for p in found) else \
            "files of an unfinished run"
        raise ConfigError(f"output directory {cfg.output} already holds {what} "
                          f"({len(found)} files); pass --overwrite to replace it, or choose "
                          "a new --output")
    manifest = [p for p in found if p.endswith(MANIFEST)]
    _delete_all(manifest)  # first, so the directory is never 'complete' but mixed
    _delete_all([p for p in found if p not in manifest])
    LOG.info("beam-e5: --overwrite removed %d files from %s", len(found), cfg.output)


def _delete_all(paths: list[str]) -> None:
    """Delete files before the folders holding them; tolerate paths already gone."""
    for path in sorted(set(paths), key=lambda p: (-p.count("/"), p)):
        if FileSystems.exists(path):
            FileSystems.delete([path])


def read_counts(output_dir: str) -> dict[str, int]:
    """Merge the per-stream counts written by the pipeline, then remove them."""
    pattern = FileSystems.join(output_dir, COUNTS_DIR, "counts*")
    paths = [m.path for m in FileSystems.match([pattern])[0].metadata_list]
    counts: dict[str, int] = {}
    for path in paths:
        with FileSystems.open(path) as f:
            for line in f.read().decode("utf-8").splitlines():
                if line.strip():
                    for k, v in json.loads(line).items():
                        counts[k] = counts.get(k, 0) + int(v)
    FileSystems.delete([FileSystems.join(output_dir, COUNTS_DIR)] if FileSystems.exists(
        FileSystems.join(output_dir, COUNTS_DIR)) else paths)
    return counts


def record_counts(p: beam.Pipeline, counts: dict[str, Any], output_dir: str,
                  sums: Optional[dict[str, Any]] = None) -> None:
    """Count each stream inside the pipeline; exact on every runner, unlike metrics.

    ``sums``: streams of integers whose total is recorded (tokens cut, for instance).
    Every stream feeds one ``CombinePerKey(sum)`` keyed by its name (one shuffle, not one
    global combine per stream: each costs the DirectRunner three stages), seeded with a
    zero per name so that an empty stream is recorded as 0.
    """
    sums = sums or {}
    names = list(counts) + [n for n in sums if n not in counts]
    keyed = [p | "CountsZero" >> beam.Create([(name, 0) for name in names])]
    for name, pcoll in counts.items():
        keyed.append(pcoll | f"One_{name}" >> beam.Map(lambda _, k=name: (k, 1)))
    for name, pcoll in sums.items():
        keyed.append(pcoll | f"Value_{name}" >> beam.Map(lambda v, k=name: (k, int(v))))
    _ = (tuple(keyed)
         | "AllCounts" >> beam.Flatten(pipeline=p)
         | "SumCounts" >> beam.CombinePerKey(sum)
         | "CountToJson" >> beam.MapTuple(lambda k, n: json.dumps({k: n}))
         | "WriteCounts" >> beam.io.WriteToText(FileSystems.join(output_dir, COUNTS_DIR, "counts"),
                                                file_name_suffix=".jsonl"))


def record_problems(errors: Any, output_dir: str) -> None:
    """Write the whole-file errors (``scope: "file"``) among ``errors`` to the counts folder,
    so the job can name them after the run (:func:`read_problems`)."""
    _ = (errors
         | "FileProblems" >> beam.Filter(lambda e: e.get("scope") == FILE_SCOPE)
         | "ProblemToJson" >> beam.Map(
             lambda e: json.dumps({"source": e["source"], "reason": e["reason"]}))
         | "WriteProblems" >> beam.io.WriteToText(
             FileSystems.join(output_dir, COUNTS_DIR, "problems"), file_name_suffix=".jsonl"))


def read_problems(output_dir: str) -> list[dict[str, str]]:
    """The whole-file errors recorded by :func:`record_problems` (call before read_counts)."""
    pattern = FileSystems.join(output_dir, COUNTS_DIR, "problems*")
    problems = []
    paths = [m.path for m in FileSystems.match([pattern])[0].metadata_list]
    for path in paths:
        with FileSystems.open(path) as f:
            problems += [json.loads(line) for line in f.read().decode("utf-8").splitlines()
                         if line.strip()]
    _delete_all(paths)
    return sorted(problems, key=lambda p: p["source"])


def write_manifest(output_dir: str, manifest: dict[str, Any]) -> str:
    """Write ``manifest.json`` atomically (temporary name, then rename)."""
    final = FileSystems.join(output_dir, MANIFEST)
    tmp = FileSystems.join(output_dir, MANIFEST + ".tmp")
    with FileSystems.create(tmp) as f:
        f.write(json.dumps(manifest, indent=2, sort_keys=True, default=str).encode("utf-8"))
    FileSystems.rename([tmp], [final])
    return final


def read_manifest(output_dir: str) -> dict[str, Any]:
    path = FileSystems.join(output_dir, MANIFEST)
    if not FileSystems.exists(path):
        raise ConfigError(f"{output_dir} has no {MANIFEST}: it is not a complete beam-e5 run")
    with FileSystems.open(path) as f:
        return json.loads(f.read().decode("utf-8"))
