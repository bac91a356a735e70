"""The vector-output interface: what a run asks of the place its vectors are published.

A run drives its output through these steps (all on the launching machine but the Beam
write, which runs on the workers):

1. :meth:`VectorOutput.check_job`, when the job is configured: refuse what this store
   cannot honour, before anything is touched.
2. :meth:`VectorOutput.open`, before the pipeline starts: checks, the claim of the run
   directory, locks, and the previous snapshot for ``reembed``. It returns an
   :class:`OutputRun`, a context manager: leaving it releases what the run holds, and a
   run that fails before :meth:`OutputRun.mark_complete` leaves nothing behind.
3. :meth:`OutputRun.read_previous` and :meth:`OutputRun.write` add the store's Beam
   read and write to the graph, and :meth:`OutputRun.record_rule` the store's rule for
   values it cannot hold.
4. :meth:`OutputRun.publish`, after the pipeline and the manifest: the publish guards,
   then the store's atomic switch to the new snapshot.

Rows the store cannot hold go to errors, for every output, in two steps: a document whose
values (id, kept fields, stored text) the store can never hold is refused by
:meth:`OutputRun.record_rule` before it is embedded (all its rows together), and a row the
store still refuses while loading comes back from :meth:`OutputRun.write`; the job writes
both to ``errors-*.jsonl`` and counts them as invalid, so the counts balance.

Every output also has a run directory (:mod:`beam_e5.io.rundir`) for the manifest,
errors, duplicates and deleted ids. A new store is one module beside ``parquet.py`` and
``pgvector.py`` with a subclass of each class here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Optional

import apache_beam as beam
import pyarrow as pa

from beam_e5.io.rundir import OutputClaim, OutputConfig
from beam_e5.io.snapshots import PreviousSnapshot, check_guards

__all__ = ["JobShape", "OutputRun", "RecordRule", "VectorOutput"]

#: a document -> why the store cannot hold its values, or None when it can
RecordRule = Callable[[dict], Optional[str]]


@dataclass(frozen=True)
class JobShape:
    """What an output may refuse about the job that writes to it."""

    previous: Optional[str]  # reembed's --previous, as given
    semantic_dedupe: bool
    keep_fields: tuple[str, ...]  # the output columns of the kept fields


class OutputRun(ABC):
    """One run's hold on a :class:`VectorOutput`, from ``open`` to the end of the ``with``."""

    #: reembed: documents whose vectors stay inside the store reach :meth:`write` apart
    #: (``carried``) instead of being written again with the new vectors
    carries_in_store: bool = False

    def __init__(self, claim: OutputClaim, previous: Optional[PreviousSnapshot]) -> None:
        self.claim = claim
        self.previous = previous

    def __enter__(self) -> "OutputRun":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self.close()
        finally:
            self.claim.__exit__(exc_type, exc, tb)  # the claim's own rule: release or abandon

    def mark_complete(self) -> None:
        """The run directory holds a finished run (its manifest): keep it from here on."""
        self.claim.mark_complete()

    @abstractmethod
    def read_previous(self, p: beam.Pipeline) -> beam.PCollection:
        """(doc_id, row or None) for every row the previous snapshot has; None marks an id
        that snapshot holds as a duplicate."""

    def record_rule(self) -> Optional[RecordRule]:
        """What this store can never hold, as a picklable rule over one document (its ``id``
        and ``fields``, which hold the text when the output stores it); checked before the
        document is embedded, so all its rows are kept or refused together. None (the
        default): the store holds any value."""
        return None

    @abstractmethod
    def write(self, written: beam.PCollection, carried: Optional[beam.PCollection],
              schema: pa.Schema) -> Optional[beam.PCollection]:
        """Add the store's write of this run's rows to the graph; ``carried`` only when
        :attr:`carries_in_store` (one row per carried document). Returns the rows the store
        refused while loading (error records with ``doc_id`` and ``chunks``; the store
        leaves out every row of their documents), or None when it refuses none."""

    @abstractmethod
    def published_documents(self) -> Optional[int]:
        """Documents the output serves now (None: nothing published, or unknown)."""

    @abstractmethod
    def switch(self, counts: dict[str, int], signature: dict[str, Any],
               manifest: dict[str, Any]) -> dict[str, Any]:
        """Make this run the published one, atomically; returns sections to add to the
        manifest (empty when none). Called only after :meth:`publish`'s guards passed."""

    @abstractmethod
    def unpublished(self) -> str:
        """What a refused publish leaves as it is, for messages ("" when the run has
        nothing to publish)."""

    def publish(self, counts: dict[str, int], signature: dict[str, Any],
                manifest: dict[str, Any], min_ratio: float) -> dict[str, Any]:
        """The publish guards (never an empty run, never a sudden shrink), then
        :meth:`switch`. Raises :class:`~beam_e5.errors.RunFailed` when a guard refuses."""
        kept = self.unpublished()
        if not kept:
            return {}
        check_guards(counts["written"], self.published_documents(), min_ratio, kept)
        return self.switch(counts, signature, manifest)

    def close(self) -> None:
        """Release what the store holds (connections, locks, load tables)."""
        return None


class VectorOutput(ABC):
    """A configured place for vectors; frozen, checked when built."""

    @property
    @abstractmethod
    def run_dir(self) -> OutputConfig:
        """The run directory: manifest, errors, duplicates, deleted ids."""

    @property
    @abstractmethod
    def label(self) -> str:
        """How logs and the manifest name this output (never with a secret)."""

    @property
    def stores_text(self) -> bool:
        """Whether each row keeps the embedded text in a ``text`` column."""
        return False

    def check_job(self, shape: JobShape) -> None:
        """Refuse (ConfigError) a job this output cannot serve; the default serves all."""
        return None

    def options(self) -> dict[str, Any]:
        """This output's options for the manifest (never with a secret)."""
        return {"output": self.label}

    def redact(self, reference: Optional[str]) -> Optional[str]:
        """``reference`` (a ``--previous``) as logs and the manifest may show it."""
        return reference or None

    @abstractmethod
    def open(self, schema: pa.Schema, signature: dict[str, Any],
             previous: Optional[str]) -> OutputRun:
        """Check, claim and lock before the pipeline starts; resolve ``previous``.
        Raises ConfigError having undone what it did."""
