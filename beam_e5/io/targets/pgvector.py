"""The PostgreSQL/pgvector table, published by swapping the view behind a stable name.

``--output 'postgresql://USER@HOST:PORT/DB?table=NAME'`` with ``--report-dir`` for the run
directory. The run's lifecycle (lock, load tables, merge, index, swap) is
:class:`beam_e5.io.pg.run.PgRun`; this module fits it to :class:`VectorOutput`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import apache_beam as beam
import pyarrow as pa

from beam_e5.errors import ConfigError
from beam_e5.io.pg.config import PgSinkConfig
from beam_e5.io.pg.refusals import pg_cannot_hold
from beam_e5.io.pg.run import PgRun
from beam_e5.io.pg.uri import is_pg_uri, redact
from beam_e5.io.rundir import OutputConfig, claim_output
from beam_e5.io.snapshots import PreviousSnapshot, same_signature
from beam_e5.io.targets.base import JobShape, OutputRun, RecordRule, VectorOutput
from beam_e5.records import check_kept_columns

__all__ = ["PgvectorOutput"]


@dataclass(frozen=True)
class PgvectorOutput(VectorOutput):
    """A postgresql:// ``--output`` and the ``--report-dir`` beside it."""

    sink: PgSinkConfig
    vector_dtype: str = "float32"
    overwrite: bool = False  # of the report directory

    @property
    def run_dir(self) -> OutputConfig:
        return OutputConfig(self.sink.report_dir, self.vector_dtype, self.overwrite)

    @property
    def label(self) -> str:
        return self.sink.target.redacted

    @property
    def stores_text(self) -> bool:
        return self.sink.store_text

    def options(self) -> dict[str, Any]:
        return self.sink.options()

    def redact(self, reference: Optional[str]) -> Optional[str]:
        return redact(reference) or None

    def check_job(self, shape: JobShape) -> None:
        if shape.previous is not None:
            self._check_previous(shape.previous)
            if shape.semantic_dedupe:
                raise ConfigError("--dedupe-threshold needs every vector in the workers, but a "
                                  "postgresql:// reembed keeps unchanged vectors in the "
                                  "database: drop it, or reembed to files")
        check_kept_columns([(c, c) for c in shape.keep_fields], self.stores_text)

    def _check_previous(self, previous: str) -> None:
        if not is_pg_uri(previous):
            raise ConfigError("with a postgresql:// --output, --previous must be the same URI "
                              "(reembed reads what that table publishes)")
        same, here = PgSinkConfig(previous, self.sink.report_dir).target, self.sink.target
        if (same.dsn, same.name, same.schema) != (here.dsn, here.name, here.schema):
            raise ConfigError(f"--previous {redact(previous)} differs from --output "
                              f"{here.redacted}: reembed into a table publishes under the "
                              "name it read; pass the same URI to both")

    def open(self, schema: pa.Schema, signature: dict[str, Any],
             previous: Optional[str]) -> "PgvectorRun":
        # the database first: a run it refuses (cannot connect, no schema, locked) leaves
        # no report directory behind
        run = PgRun.open(self.sink, schema)
        try:
            snapshot = self._previous_snapshot(run, signature) if previous else None
            claim = claim_output(self.run_dir)
        except BaseException:
            run.close()
            raise
        return PgvectorRun(claim, snapshot, self, run)

    def _previous_snapshot(self, run: PgRun, signature: dict[str, Any]) -> PreviousSnapshot:
        if run.published is None:
            raise ConfigError(f"nothing is published under {self.sink.target.name} yet: "
                              "run `beam-e5 embed` with this --output first")
        return PreviousSnapshot(f"{run.schema}.{run.published.table}",
                                same_signature(run.published.signature, signature))


class PgvectorRun(OutputRun):
    carries_in_store = True  # unchanged rows are copied inside the database at the merge

    def __init__(self, claim, previous: Optional[PreviousSnapshot], output: PgvectorOutput,
                 run: PgRun) -> None:
        super().__init__(claim, previous)
        self.output = output
        self.run = run

    def read_previous(self, p: beam.Pipeline) -> beam.PCollection:
        return p | "ReadPublished" >> self.run.read_published()

    def record_rule(self) -> Optional[RecordRule]:
        return pg_cannot_hold  # a NUL character in the id, a kept field or the stored text

    def write(self, written: beam.PCollection, carried: Optional[beam.PCollection],
              schema: pa.Schema) -> beam.PCollection:
        refused = written | "WriteVectorsToPg" >> self.run.write_vectors(schema)
        if carried is None:
            return refused
        refused_carried = carried | "WriteCarriedToPg" >> self.run.write_carried(schema)
        return (refused, refused_carried) | "RefusedByPg" >> beam.Flatten()

    def published_documents(self) -> Optional[int]:
        return self.run.published_documents()

    def unpublished(self) -> str:
        return f"{self.output.sink.target.name} keeps serving the table it serves now"

    def switch(self, counts: dict[str, int], signature: dict[str, Any],
               manifest: dict[str, Any]) -> dict[str, Any]:
        rows = counts["written"] + counts.get("chunk_rows", 0)  # document + window rows
        return {"pg": self.run.publish(rows, signature, manifest)}

    def close(self) -> None:
        self.run.close()  # drops the load tables; releases the lock
