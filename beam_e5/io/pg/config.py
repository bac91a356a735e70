"""How a run publishes into PostgreSQL: :class:`PgSinkConfig`, validated before anything connects.

The names it will create (``schema``, ``NAME``) are checked here, through
:func:`~beam_e5.io.pg.uri.parse_pg_uri`: lower-case SQL identifiers short enough for the run
tables' suffixes. Statements still quote every name (``psycopg.sql.Identifier``); the check is
for a clear :class:`ConfigError` before the run starts, not for safety.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Optional

from beam_e5.errors import ConfigError
from beam_e5.io.pg.uri import PgTarget, is_pg_uri, parse_pg_uri
from beam_e5.io.sinks import ARROW_BATCH_ROWS

__all__ = ["INDEX_KINDS", "PgSinkConfig"]

INDEX_KINDS = ("hnsw", "ivfflat", "none")
_MEM = re.compile(r"^\d+\s*(kB|MB|GB|TB)$")
_AT_LEAST_ONE = ("hnsw_m", "hnsw_ef_construction", "batch_rows", "read_shards")


@dataclass(frozen=True)
class PgSinkConfig:
    """How a run publishes into PostgreSQL; validated before anything connects."""

    output: str = field(repr=False)  # the postgresql:// URI with ?table=NAME (password!)
    report_dir: str  # manifest, errors, duplicates, deleted ids (local or gs://)
    index: str = "hnsw"
    hnsw_m: int = 16
    hnsw_ef_construction: int = 64
    ivfflat_lists: int = 0  # 0: rows/1000 (at least 1), sqrt(rows) above a million rows
    store_text: bool = False
    batch_rows: int = ARROW_BATCH_ROWS  # rows per COPY (one transaction)
    maintenance_work_mem: Optional[str] = None  # for the index build, e.g. "1GB"
    read_shards: int = 16  # parallel reads of the published ids for reembed
    target: PgTarget = field(init=False, compare=False)  # its repr is redacted

    def __post_init__(self) -> None:
        object.__setattr__(self, "target", parse_pg_uri(self.output))
        self._check_report_dir()
        if self.index not in INDEX_KINDS:
            raise ConfigError(f"--index must be one of {', '.join(INDEX_KINDS)}, got "
                              f"{self.index!r}")
        self._check_sizes()

    def _check_report_dir(self) -> None:
        if not self.report_dir or not self.report_dir.strip():
            raise ConfigError("a postgresql:// --output needs --report-dir (local or gs://) for "
                              "the run's manifest, errors, duplicates and deleted ids")
        if is_pg_uri(self.report_dir):
            raise ConfigError("--report-dir is a directory (local or gs://), not a database")

    def _check_sizes(self) -> None:
        for name in _AT_LEAST_ONE:
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
        if self.hnsw_m < 2 or self.hnsw_m > 100:
            raise ConfigError("--hnsw-m must be between 2 and 100 (pgvector's limits)")
        if self.hnsw_ef_construction < 2 * self.hnsw_m:
            raise ConfigError("--hnsw-ef-construction must be at least twice --hnsw-m")
        if self.ivfflat_lists < 0:
            raise ConfigError("--ivfflat-lists must be 0 (automatic) or positive")
        if self.maintenance_work_mem is not None and not _MEM.match(self.maintenance_work_mem):
            raise ConfigError("--pg-maintenance-work-mem takes a PostgreSQL memory size such as "
                              "512MB or 2GB")

    def options(self) -> dict[str, Any]:
        """The options for the manifest (the URI redacted)."""
        return {"output": self.target.redacted, "table": self.target.name,
                "schema": self.target.schema, "report_dir": self.report_dir,
                "index": self.index, "hnsw_m": self.hnsw_m,
                "hnsw_ef_construction": self.hnsw_ef_construction,
                "ivfflat_lists": self.ivfflat_lists, "store_text": self.store_text,
                "batch_rows": self.batch_rows}
