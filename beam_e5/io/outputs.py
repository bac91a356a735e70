"""The output directory: checks before a run, counts and manifest after it.

A finished run is the set of files that ``manifest.json`` describes; the manifest is written
last and atomically (a temporary name, then a rename), so a reader that sees a manifest sees
a complete run. Beam's sinks write shards under temporary names and rename them at finalize.
"""

from __future__ import annotations

import glob
import json
import logging
import os
from dataclasses import dataclass
from typing import Any, Optional

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from beam_e5.errors import ConfigError
from beam_e5.io.sinks import VECTOR_DTYPES

LOG = logging.getLogger(__name__)

MANIFEST = "manifest.json"
COUNTS_DIR = "_counts"
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


def _join(*parts: str) -> str:
    return FileSystems.join(*parts)


def existing_outputs(output_dir: str) -> list[str]:
    """Paths in ``output_dir`` that a previous (complete or crashed) run left."""
    patterns = [_join(output_dir, MANIFEST)] + [_join(output_dir, p) for p in OUTPUT_PATTERNS]
    found = []
    for result in FileSystems.match(patterns, limits=[10_000] * len(patterns)):
        found += [m.path for m in result.metadata_list]
    if "://" not in output_dir:  # local: Beam's match lists files only, not (empty) folders
        found += [p for prefix in STAGING_DIR_PREFIXES
                  for p in glob.glob(os.path.join(output_dir, prefix + "*")) if os.path.isdir(p)]
    return found


def prepare_output(cfg: OutputConfig) -> None:
    """Refuse to mix runs; with ``overwrite`` remove the previous run, manifest first."""
    found = existing_outputs(cfg.output)
    if not found:
        if not FileSystems.exists(cfg.output):
            FileSystems.mkdirs(cfg.output)
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
    pattern = _join(output_dir, COUNTS_DIR, "counts*")
    paths = [m.path for m in FileSystems.match([pattern])[0].metadata_list]
    counts: dict[str, int] = {}
    for path in paths:
        with FileSystems.open(path) as f:
            for line in f.read().decode("utf-8").splitlines():
                if line.strip():
                    for k, v in json.loads(line).items():
                        counts[k] = counts.get(k, 0) + int(v)
    FileSystems.delete([_join(output_dir, COUNTS_DIR)] if FileSystems.exists(
        _join(output_dir, COUNTS_DIR)) else paths)
    return counts


def record_counts(p: beam.Pipeline, counts: dict[str, Any], output_dir: str,
                  sums: Optional[dict[str, Any]] = None) -> None:
    """Count each stream inside the pipeline; exact on every runner, unlike metrics.

    ``sums``: streams of integers whose total is recorded (tokens cut, for instance).
    """
    per_stream = []
    for name, pcoll in counts.items():
        per_stream.append(pcoll
                          | f"Count_{name}" >> beam.combiners.Count.Globally()
                          | f"Name_{name}" >> beam.Map(lambda n, k=name: json.dumps({k: n})))
    for name, pcoll in (sums or {}).items():
        per_stream.append(pcoll
                          | f"Sum_{name}" >> beam.CombineGlobally(sum)
                          | f"Name_{name}" >> beam.Map(lambda n, k=name: json.dumps({k: n})))
    _ = (tuple(per_stream)
         | "AllCounts" >> beam.Flatten(pipeline=p)
         | "WriteCounts" >> beam.io.WriteToText(FileSystems.join(output_dir, COUNTS_DIR, "counts"),
                                                file_name_suffix=".jsonl"))


def write_manifest(output_dir: str, manifest: dict[str, Any]) -> str:
    """Write ``manifest.json`` atomically (temporary name, then rename)."""
    final = _join(output_dir, MANIFEST)
    tmp = _join(output_dir, MANIFEST + ".tmp")
    with FileSystems.create(tmp) as f:
        f.write(json.dumps(manifest, indent=2, sort_keys=True, default=str).encode("utf-8"))
    FileSystems.rename([tmp], [final])
    return final


def read_manifest(output_dir: str) -> dict[str, Any]:
    path = _join(output_dir, MANIFEST)
    if not FileSystems.exists(path):
        raise ConfigError(f"{output_dir} has no {MANIFEST}: it is not a complete beam-e5 run")
    with FileSystems.open(path) as f:
        return json.loads(f.read().decode("utf-8"))
