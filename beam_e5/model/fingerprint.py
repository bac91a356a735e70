"""The model signature: everything that decides a vector, including a fingerprint of the weights.

A snapshot's manifest records it; ``reembed`` carries a previous vector only when the
signature is unchanged.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from beam_e5.model.config import EncoderSpec
from beam_e5.model.loading import list_gcs_files

__all__ = ["model_signature", "weights_fingerprint"]


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
    for path in sorted(Path(source.ref).rglob("*")):
        if path.suffix in (".safetensors", ".bin") and path.is_file():
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 24), b""):
                    digest.update(block)
    return "sha256:" + digest.hexdigest()[:32]


def model_signature(spec: EncoderSpec) -> dict[str, Any]:
    """Everything that decides a vector; a change in any field re-embeds everything."""
    return {**spec.signature(), "weights": weights_fingerprint(spec)}
