"""Snapshots: resolve ``--previous``, read its vectors back, and publish a finished run.

``beam-e5 reembed --input CORPUS --previous SNAPSHOT --output NEW --model MODEL`` runs the
embed job, but a document whose id and text key match the previous snapshot, under the
same model signature (:mod:`beam_e5.model.fingerprint`), keeps its old vector without
inference (:mod:`beam_e5.transforms.reembed_split`). ``--publish POINTER`` writes the
snapshot path into ``POINTER`` (atomically) only after the manifest: a crashed run leaves
the previous snapshot in service.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterable, Optional

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from beam_e5.errors import ConfigError, RunFailed
from beam_e5.io.rundir import MANIFEST, read_manifest
from beam_e5.io.sinks import table_to_records

__all__ = ["PreviousSnapshot", "check_guards", "check_min_ratio", "check_not_live",
           "DEFAULT_MIN_RATIO", "check_pointer_location", "load_previous", "publish",
           "published_count", "read_pointer", "read_previous", "resolve_snapshot",
           "same_location", "same_signature"]


MAX_POINTER_BYTES = 4096
# refuse to publish fewer documents than this fraction of the snapshot a run replaces
DEFAULT_MIN_RATIO = 0.5


def _local_abs(path: str) -> str:
    return path if "://" in path else os.path.abspath(path)


def same_location(a: str, b: str) -> bool:
    """Whether two paths (local, relative or absolute, or a URL) name the same place."""
    return _local_abs(a).rstrip("/") == _local_abs(b).rstrip("/")


def read_pointer(pointer: str) -> Optional[str]:
    """The snapshot a ``--publish`` pointer file names, or None if it is not a pointer file
    (missing, a directory, binary, several lines, too big)."""
    if "://" not in pointer and not os.path.isfile(pointer):
        return None
    if not FileSystems.exists(pointer):
        return None
    try:
        with FileSystems.open(pointer) as f:
            data = f.read(MAX_POINTER_BYTES + 1)
        target = data.decode("utf-8").strip()
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if len(data) > MAX_POINTER_BYTES or not target or "\n" in target or "\x00" in target:
        return None
    return target.rstrip("/")


def resolve_snapshot(path: str) -> str:
    """A snapshot directory, or a publish pointer file holding one."""
    path = path.rstrip("/")
    if FileSystems.exists(FileSystems.join(path, MANIFEST)):
        return path
    target = read_pointer(path)
    if target and FileSystems.exists(FileSystems.join(target, MANIFEST)):
        return target
    if target:
        raise ConfigError(f"--previous {path} points to {target}, which holds no {MANIFEST} (not "
                          "a complete beam-e5 run); fix the pointer or pass a snapshot directory")
    raise ConfigError(f"--previous {path} is neither a complete snapshot (a directory with "
                      f"{MANIFEST}) nor a --publish pointer to one; pass the --output "
                      "directory or the pointer file of an earlier run")


def check_not_live(output: str, pointers: Iterable[Optional[str]]) -> None:
    """Refuse ``--overwrite`` of the snapshot a pointer (``--publish``, ``--previous``) names:
    it would delete the served snapshot before its replacement exists."""
    for pointer in pointers:
        target = read_pointer(pointer) if pointer else None
        if target and same_location(target, output):
            raise ConfigError(
                f"--output {output} is the live snapshot that {pointer} names; --overwrite "
                "would delete it before the new run is complete. Write each run to a new "
                "directory (e.g. a date) and let --publish move the pointer")


def check_pointer_location(pointer: str, output: str) -> None:
    """A ``--publish`` pointer must be a file we can write next to, not the output itself."""
    if same_location(pointer, output):
        raise ConfigError(f"--publish {pointer} is the --output directory; name a pointer file "
                          "beside the snapshots, e.g. snapshots/LATEST")
    if "://" in pointer:
        return
    if os.path.isdir(pointer):
        raise ConfigError(f"--publish {pointer} is a directory; name a pointer file, e.g. "
                          f"{os.path.join(pointer, 'LATEST')}")
    parent = os.path.dirname(os.path.abspath(pointer))
    if not os.path.isdir(parent):
        raise ConfigError(f"the folder of --publish {pointer} does not exist; create {parent} "
                          "or choose another pointer path")
    if not os.access(parent, os.W_OK):
        raise ConfigError(f"cannot write --publish {pointer} (no write permission on {parent})")


def published_count(pointer: Optional[str]) -> Optional[int]:
    """``written`` of the snapshot a pointer names now (None if none or unknown)."""
    target = read_pointer(pointer) if pointer else None
    if not target or not FileSystems.exists(FileSystems.join(target, MANIFEST)):
        return None
    written = (read_manifest(target).get("counts") or {}).get("written")
    return written if isinstance(written, int) else None


def check_guards(written: int, before: Optional[int], min_ratio: float, kept: str) -> None:
    """Publish guards, whatever is published: never a run without documents, never one that
    shrank below ``min_ratio`` times the ``before`` documents it replaces (0 turns that guard
    off). ``kept`` says what stays in service when a guard refuses."""
    if written <= 0:
        raise RunFailed(f"not publishing: the run wrote 0 documents, and {kept}. "
                        "Check --input (an empty export?)")
    if before and min_ratio > 0 and written < min_ratio * before:
        raise RunFailed(
            f"not publishing: the run wrote {written:,} documents, fewer than "
            f"--publish-min-ratio {min_ratio:g} x the {before:,} it would replace, and {kept}. "
            "If the corpus really shrank, rerun with --publish-min-ratio 0")


def check_min_ratio(value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"--publish-min-ratio must be between 0 and 1, got {value}; "
                          "0 turns the shrink guard off")


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
        f.write((_local_abs(snapshot).rstrip("/") + "\n").encode("utf-8"))
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

