"""The Parquet snapshot directory (local or gs://), published by moving a pointer file.

A run writes ``vectors-*.parquet`` into its own directory (also its run directory), then
``manifest.json``; ``--publish POINTER`` then points the pointer file at it (see
:mod:`beam_e5.io.snapshots`). ``reembed --previous`` reads the snapshot a directory or a
pointer names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import apache_beam as beam
import pyarrow as pa

from beam_e5.errors import ConfigError
from beam_e5.io.pg.uri import is_pg_uri
from beam_e5.io.rundir import OutputConfig, claim_output
from beam_e5.io.sinks import WriteVectors
from beam_e5.io.snapshots import (
    PreviousSnapshot,
    check_not_live,
    check_pointer_location,
    load_previous,
    publish,
    published_count,
    read_previous,
    same_location,
)
from beam_e5.io.targets.base import JobShape, OutputRun, VectorOutput

__all__ = ["ParquetOutput"]


@dataclass(frozen=True)
class ParquetOutput(VectorOutput):
    """``--output DIR`` (local or gs://) and, optionally, ``--publish POINTER``."""

    directory: OutputConfig
    publish_pointer: Optional[str] = None  # pointer file moved to this run after success

    @property
    def run_dir(self) -> OutputConfig:
        return self.directory

    @property
    def label(self) -> str:
        return self.directory.output

    def check_job(self, shape: JobShape) -> None:
        if is_pg_uri(shape.previous):
            raise ConfigError("--previous is a postgresql:// URI: --output must be the same URI "
                              "(a run re-embeds into the table it reads)")

    def options(self) -> dict[str, Any]:
        return {"output": self.label, "publish": self.publish_pointer}

    def open(self, schema: pa.Schema, signature: dict[str, Any],
             previous: Optional[str]) -> "ParquetRun":
        out = self.directory.output
        snapshot = load_previous(previous, signature) if previous else None
        if snapshot is not None and same_location(snapshot.path, out):
            raise ConfigError("--output must differ from the --previous snapshot; write each run "
                              "to a new directory and move a --publish pointer")
        if self.publish_pointer:
            check_pointer_location(self.publish_pointer, out)
        if self.directory.overwrite:
            check_not_live(out, (self.publish_pointer, previous))
        return ParquetRun(claim_output(self.directory), snapshot, self)


class ParquetRun(OutputRun):
    def __init__(self, claim, previous: Optional[PreviousSnapshot],
                 output: ParquetOutput) -> None:
        super().__init__(claim, previous)
        self.output = output

    def read_previous(self, p: beam.Pipeline) -> beam.PCollection:
        return read_previous(p, self.previous)

    # no record_rule: a Parquet string column holds any string, NUL characters included

    def write(self, written: beam.PCollection, carried: Optional[beam.PCollection],
              schema: pa.Schema) -> None:
        _ = written | "WriteVectors" >> WriteVectors(self.output.directory.output, schema)
        return None

    def published_documents(self) -> Optional[int]:
        return published_count(self.output.publish_pointer)

    def unpublished(self) -> str:
        pointer = self.output.publish_pointer
        return f"{pointer} keeps naming the snapshot it names now" if pointer else ""

    def switch(self, counts: dict[str, int], signature: dict[str, Any],
               manifest: dict[str, Any]) -> dict[str, Any]:
        publish(self.output.publish_pointer, self.output.directory.output)
        return {}
