"""The model signature: everything that decides a vector, including a fingerprint of the weights.

A snapshot's manifest records it; ``reembed`` carries a previous vector only when the
signature is unchanged.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, Optional

from beam_e5.model.config import EncoderSpec
from beam_e5.model.loading import is_gcs, list_gcs_files, write_json_atomically

__all__ = ["cached_local_digest", "model_signature", "weights_fingerprint"]


def weights_fingerprint(spec: EncoderSpec) -> str:
    """A cheap identity of the weights: a hub revision, or a hash of the weight files.

    Local files are hashed in full (SHA-256), once: the hash is kept in the model cache
    directory with each file's size, times, inode and device, and read back while they are
    unchanged (:func:`cached_local_digest`). For ``gs://`` the object names, sizes and update
    times are hashed (reading many GB on the launcher would be wasteful), so weights
    replaced by a file of the same size still count as a change.
    """
    source = spec.source
    if source.kind == "hub":
        return f"revision:{source.revision or 'unpinned'}"
    if source.kind == "gcs":
        digest = hashlib.sha256()
        for path, size, updated in sorted(list_gcs_files(source.ref)):
            if path.endswith(".safetensors") or path.endswith(".bin"):
                digest.update(f"{path}:{size}:{updated}".encode())
        return "gcs-listing:" + digest.hexdigest()[:32]
    cache = spec.config.model_cache_dir
    return "sha256:" + cached_local_digest(Path(source.ref),
                                           None if is_gcs(cache) else Path(cache))[:32]


# A file changed less than this long before it was hashed may change again within the same
# timestamp tick (file times are coarse), unseen by its stat: its hash is not kept.
SETTLED_S = 2.0


def weight_files(root: Path) -> list[Path]:
    return [p for p in sorted(root.rglob("*"))
            if p.suffix in (".safetensors", ".bin") and p.is_file()]


def file_states(files: list[Path]) -> list[list[Any]]:
    """What changes when a file is written, replaced or moved: any write sets its ctime,
    which no one can set back."""
    states = []
    for path in files:
        st = path.stat()
        states.append([str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns,
                       st.st_ino, st.st_dev])
    return states


def sha256_files(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in files:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 24), b""):
                digest.update(block)
    return digest.hexdigest()


def cached_local_digest(root: Path, cache_dir: Optional[Path]) -> str:
    """:func:`sha256_files` of the weight files under ``root``, read from
    ``cache_dir/fingerprints/`` while every file's state is the one recorded with it (an
    unwritable or absent cache: hashed every time, as before)."""
    files = weight_files(root)
    states = file_states(files)
    record = None
    if cache_dir is not None:
        name = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:24] + ".json"
        record = cache_dir / "fingerprints" / name
        try:
            known = json.loads(record.read_text(encoding="utf-8"))
            if known["files"] == states:
                return str(known["sha256"])
        except (OSError, ValueError, KeyError, TypeError):
            pass  # none yet, or unreadable: hash
    digest = sha256_files(files)
    newest_ns = max((max(s[2], s[3]) for s in states), default=0)
    if (record is not None and time.time_ns() - newest_ns > SETTLED_S * 1e9
            and file_states(files) == states):
        _write_atomically(record, {"files": states, "sha256": digest})
    return digest


def _write_atomically(path: Path, content: dict[str, Any]) -> None:
    try:
        write_json_atomically(path, content, prefix=".fingerprint-")
    except OSError:
        return  # a read-only cache: the next run hashes again


def model_signature(spec: EncoderSpec) -> dict[str, Any]:
    """Everything that decides a vector; a change in any field re-embeds everything."""
    return {**spec.signature(), "weights": weights_fingerprint(spec)}
