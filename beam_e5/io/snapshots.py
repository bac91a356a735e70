"""Snapshots: resolve ``--previous``, read its vectors back, and publish a finished run.

``beam-e5 reembed --input CORPUS --previous SNAPSHOT --output NEW --model MODEL`` runs the
embed job, but a document whose id and text key match the previous snapshot, under the
same model signature (:mod:`beam_e5.model.fingerprint`), keeps its old vector without
inference (:mod:`beam_e5.transforms.reembed_split`). ``--publish POINTER`` writes the
snapshot path into ``POINTER`` (atomically) only after the manifest: a crashed run leaves
the previous snapshot in service.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from beam_e5.errors import ConfigError
from beam_e5.io.outputs import MANIFEST, read_manifest
from beam_e5.io.sinks import table_to_records

__all__ = ["PreviousSnapshot", "load_previous", "publish", "read_previous", "resolve_snapshot",
           "same_signature"]


def resolve_snapshot(path: str) -> str:
    """A snapshot directory, or a publish pointer file holding one."""
    path = path.rstrip("/")
    if FileSystems.exists(FileSystems.join(path, MANIFEST)):
        return path
    if FileSystems.exists(path):
        with FileSystems.open(path) as f:
            target = f.read().decode("utf-8").strip()
        if target and FileSystems.exists(FileSystems.join(target, MANIFEST)):
            return target
    raise ConfigError(f"--previous {path} is neither a complete snapshot (no {MANIFEST}) nor a "
                      "--publish pointer to one; run `beam-e5 embed` first or fix the path")


@dataclass(frozen=True)
class PreviousSnapshot:
    path: str
    same_model: bool  # the model signature matches: vectors can be carried


def load_previous(path: str, signature: dict[str, str]) -> PreviousSnapshot:
    snapshot = resolve_snapshot(path)
    manifest = read_manifest(snapshot)
    return PreviousSnapshot(snapshot, same_signature(manifest.get("model"), signature))


def same_signature(recorded: Any, current: dict[str, Any]) -> bool:
    """Whether a manifest's model signature equals ``current``.

    Compared in string form: snapshots written before 0.2 recorded every value as a string
    (``"dim": "384"``), and they must still match the same model.
    """
    if not isinstance(recorded, dict):
        return False
    return ({k: str(v) for k, v in recorded.items()}
            == {k: str(v) for k, v in current.items()})


def publish(pointer: str, snapshot: str) -> None:
    """Point ``pointer`` at ``snapshot``: write a temporary file, then rename over it.

    The rename replaces the old pointer in one step (``os.rename`` locally; on GCS a copy
    onto the existing object, which readers see whole), so there is never a moment without
    a pointer.
    """
    tmp = pointer + ".tmp"
    with FileSystems.create(tmp) as f:
        f.write((snapshot.rstrip("/") + "\n").encode("utf-8"))
    FileSystems.rename([tmp], [pointer])


# ------------------------------------------------------------------ pipeline stages --

def _previous_vectors(table) -> Iterable[tuple[str, dict]]:
    for rec in table_to_records(table):
        yield rec["doc_id"], rec


def read_previous(p: beam.Pipeline, prev: PreviousSnapshot):
    """(doc_id, record-or-None) of every vector row (every chunk) the previous snapshot has,
    and (id, None) for its duplicates."""
    vectors = (p
               | "ReadPreviousVectors" >> beam.io.ReadFromParquetBatched(
                   FileSystems.join(prev.path, "vectors-*.parquet"))
               | "PreviousRecords" >> beam.FlatMap(_previous_vectors))
    dup_files = FileSystems.match([FileSystems.join(prev.path, "duplicates-*.parquet")])[0]
    if not dup_files.metadata_list:
        return vectors
    dups = (p
            | "ReadPreviousDuplicates" >> beam.io.ReadFromParquetBatched(
                FileSystems.join(prev.path, "duplicates-*.parquet"), columns=["id"])
            | "PreviousDuplicateIds" >> beam.FlatMap(
                lambda t: [(i, None) for i in t.column("id").to_pylist()]))
    return (vectors, dups) | "AllPrevious" >> beam.Flatten()

