"""Incremental re-embedding against a previous snapshot, and safe publishing.

``beam-e5 reembed --input CORPUS --previous SNAPSHOT --output NEW --model MODEL`` runs the
embed pipeline, but a document whose id and text key match the previous snapshot, under the
same model signature, keeps its old vector without inference. Categories (for the manifest):

* ``carried``: vector copied from the previous snapshot (no inference);
* ``new``: id absent from the previous snapshot (neither its vectors nor its duplicates);
* ``reembedded``: any other document sent to the model: changed text, a previous duplicate
  that now needs a vector, or every document when the model signature changed;
* ``deleted``: ids of the previous snapshot that are no longer among the corpus's valid
  documents; written to ``deleted-*.jsonl``.

``carried + new + reembedded`` are the unique documents; ``new + reembedded`` is what the
model sees. ``--publish POINTER`` writes the snapshot path into ``POINTER`` (atomically) only
after the manifest: a crashed run leaves the previous snapshot in service.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Iterable

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from beam_e5.config import EncoderSpec
from beam_e5.errors import ConfigError
from beam_e5.loading import list_gcs_files
from beam_e5.outputs import MANIFEST, read_manifest

CARRIED, TO_EMBED, DELETED = "carried", "to_embed", "deleted"
NEW, REEMBEDDED = "new", "reembedded"


def weights_fingerprint(spec: EncoderSpec) -> str:
    """A cheap identity of the weights: a hub revision, or a hash of the weight files.

    Local files are hashed in full (SHA-256); for ``gs://`` the object names, sizes and
    update times are hashed (reading many GB on the launcher would be wasteful), so weights
    replaced by a file of the same size still count as a change.
    """
    source = spec.source
    if source.kind == "hub":
        return f"revision:{source.revision or 'unpinned'}"
    digest = hashlib.sha256()
    if source.kind == "gcs":
        for path, size, updated in sorted(list_gcs_files(source.ref)):
            if path.endswith(".safetensors") or path.endswith(".bin"):
                digest.update(f"{path}:{size}:{updated}".encode())
        return "gcs-listing:" + digest.hexdigest()[:32]
    from pathlib import Path

    for path in sorted(Path(source.ref).rglob("*")):
        if path.suffix in (".safetensors", ".bin") and path.is_file():
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 24), b""):
                    digest.update(block)
    return "sha256:" + digest.hexdigest()[:32]


def model_signature(spec: EncoderSpec) -> dict[str, str]:
    """Everything that decides a vector; a change in any field re-embeds everything."""
    return {**spec.signature(), "weights": weights_fingerprint(spec)}


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
    return PreviousSnapshot(snapshot, manifest.get("model") == signature)


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
    from beam_e5.dedupe_job import table_to_records

    for rec in table_to_records(table):
        yield rec["id"], rec


def read_previous(p: beam.Pipeline, prev: PreviousSnapshot):
    """(id, record-or-None) of every document the previous snapshot knows."""
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


class _SplitByPrevious(beam.DoFn):
    """Per id: carry the old vector, embed (new or re-embedded), or list as deleted."""

    def __init__(self, same_model: bool) -> None:
        self._same_model = same_model

    def process(self, element: tuple[str, dict[str, list]]):
        doc_id, groups = element
        docs, previous, present = groups["doc"], groups["previous"], groups["present"]
        if not docs:
            if previous and not present:
                yield beam.pvalue.TaggedOutput(DELETED, {"id": doc_id})
            return
        doc = docs[0]
        old = next((r for r in previous if r is not None), None)
        if (self._same_model and old is not None
                and old["text_sha256"] == doc["text_sha256"]):
            yield beam.pvalue.TaggedOutput(CARRIED, {
                "id": doc_id, "text_sha256": doc["text_sha256"], "source": doc["source"],
                "fields": doc.get("fields") or {}, "embedding": old["embedding"],
                "tokens": old["tokens"], "truncated": False})
            return
        category = REEMBEDDED if previous else NEW
        yield beam.pvalue.TaggedOutput(TO_EMBED, (category, doc))


def split_by_previous(unique_docs, present_ids, previous, same_model: bool):
    """Outputs ``carried`` (embedded records), ``to_embed`` ((category, doc)), ``deleted``.

    ``present_ids`` are the ids of all valid documents read (duplicates included), so an id
    that became an exact duplicate is not 'deleted'.
    """
    keyed = unique_docs | "KeyDocs" >> beam.Map(lambda d: (d["id"], d))
    present = present_ids | "KeyPresent" >> beam.Map(lambda i: (i, True))
    return ({"doc": keyed, "previous": previous, "present": present}
            | "JoinPrevious" >> beam.CoGroupByKey()
            | "SplitByPrevious" >> beam.ParDo(_SplitByPrevious(same_model)).with_outputs(
                CARRIED, TO_EMBED, DELETED))


def deleted_to_json(record: dict[str, Any]) -> str:
    return json.dumps(record, sort_keys=True)


__all__ = ["PreviousSnapshot", "load_previous", "model_signature", "publish",
           "read_previous", "split_by_previous"]
