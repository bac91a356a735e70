"""The embed pipeline: read -> exact dedupe -> embed (chunked) -> semantic dedupe -> write.

One stage function per step builds the Beam graph; :func:`run_embed` validates everything
before the pipeline starts, opens the output (:mod:`beam_e5.io.targets`: Parquet snapshots,
PostgreSQL, ...), runs, writes ``manifest.json`` last (atomically) with counts that balance
(:mod:`beam_e5.jobs.counts`), then lets the output publish. Semantic dedupe decides on a
long document's document row and keeps or drops all of its window rows together.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from beam_e5._version import __version__
from beam_e5.errors import ConfigError, RunFailed
from beam_e5.io.readers import (
    ReadCorpus,
    ReaderConfig,
    ResolvedInput,
    validate_reader_config,
)
from beam_e5.io.rundir import (
    read_counts,
    read_problems,
    record_counts,
    record_problems,
    write_manifest,
)
from beam_e5.io.sinks import WriteDuplicates, WriteErrors, vectors_schema
from beam_e5.io.snapshots import DEFAULT_MIN_RATIO, check_min_ratio
from beam_e5.io.targets import JobShape, OutputRun, VectorOutput
from beam_e5.jobs.counts import manifest_counts
from beam_e5.jobs.progress import estimate_documents
from beam_e5.jobs.summary import RunSummary, bound_local_memory, summarize
from beam_e5.model.chunking import LongTextConfig, window_budget
from beam_e5.model.config import EncoderConfig, EncoderSpec, check_device_here
from beam_e5.model.fingerprint import model_signature
from beam_e5.records import TEXT_COLUMN, is_chunk_row, is_document_row
from beam_e5.transforms import with_worker_imports
from beam_e5.transforms.chunk_ids import SeparateIdCollisions
from beam_e5.transforms.embed_texts import EmbedTexts
from beam_e5.transforms.exact_dedupe import ExactDedupe
from beam_e5.transforms.reembed_split import (
    CARRIED,
    DELETED,
    NEW,
    REEMBEDDED,
    TO_EMBED,
    deleted_to_json,
    split_by_previous,
)
from beam_e5.transforms.semantic_dedupe import (
    SemanticDedupeConfig,
    dedupe_documents,
    for_runner,
)
from beam_e5.transforms.store_refusals import RefusedDocuments, RefuseUnstorable

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbedJob:
    """Everything one ``beam-e5 embed`` run needs; each part validates itself."""

    reader: ReaderConfig
    encoder: EncoderConfig
    output: VectorOutput  # where vectors go; its run directory holds manifest, errors, ...
    exact_dedupe: bool = True
    semantic: Optional[SemanticDedupeConfig] = None
    previous: Optional[str] = None  # what the output published before: re-embed incrementally
    long_text: LongTextConfig = field(default_factory=LongTextConfig)
    # refuse to publish fewer documents than this fraction of the snapshot it replaces
    publish_min_ratio: float = DEFAULT_MIN_RATIO

    def __post_init__(self) -> None:
        check_min_ratio(self.publish_min_ratio)
        self.output.check_job(JobShape(self.previous, self.semantic is not None,
                                       self.reader.kept_columns))
        if not self.exact_dedupe and (self.semantic is not None or self.previous is not None):
            raise ConfigError(
                "semantic dedupe and re-embedding match documents by id, and exact dedupe is "
                "what makes ids unique (it rejects an id used for two texts): drop "
                "--no-exact-dedupe, or drop --dedupe-threshold / use embed instead of reembed")

    @property
    def run_dir(self) -> str:
        """Where the manifest, errors, duplicates and deleted ids are written."""
        return self.output.run_dir.output


@dataclass(frozen=True)
class ResolvedJob:
    """What validation found: the encoder spec, its signature, the input files, the schema."""

    spec: EncoderSpec
    signature: dict[str, Any]
    reader_input: ResolvedInput  # the matched files and resolved field names
    schema: pa.Schema  # the vectors' columns


@dataclass
class Streams:
    """The PCollections a run produces, by what happens to each record."""

    counts: dict[str, Any] = field(default_factory=dict)  # streams to count
    sums: dict[str, Any] = field(default_factory=dict)  # streams of ints to total
    errors: list = field(default_factory=list)
    duplicates: list = field(default_factory=list)
    written: Any = None
    deleted: Any = None
    carried: Any = None  # reembed: documents whose rows stay inside the output store
    present_ids: Any = None  # ids of every document read (reembed lists the deleted ones)


def _with_text_field(doc: dict) -> dict:
    return {**doc, "fields": {**(doc.get("fields") or {}), "text": doc["text"]}}


def _for_embedding(doc: dict) -> dict:
    return {"id": doc["id"], "text": doc["text"], "text_sha256": doc["text_sha256"],
            "source": doc["source"], "fields": doc.get("fields") or {}}


def build_embed_graph(p: beam.Pipeline, job: EmbedJob, resolved: ResolvedJob,
                      run: OutputRun) -> Streams:
    """Wire the stages: read -> exact dedupe -> (reembed split) -> embed -> semantic dedupe;
    return the output streams and the streams to count."""
    streams = Streams()
    docs = read_stage(p, job, resolved, streams)
    docs = store_rule_stage(docs, run, streams)
    docs = exact_stage(docs, job, streams)
    if run.previous is not None:
        docs = previous_stage(p, docs, run, streams)
    embedded = embed_stage(docs, job, resolved, streams)
    if streams.carried is not None and not run.carries_in_store:
        embedded = (embedded, streams.carried) | "WithCarried" >> beam.Flatten()
    embedded = collision_stage(embedded, run, streams)
    written = embedded
    if job.semantic is not None:
        semantic = dedupe_documents(
            embedded, for_runner(job.semantic, p.options.view_as(StandardOptions).runner))
        written = (semantic.kept, semantic.kept_chunks) | "KeptRows" >> beam.Flatten()
        streams.duplicates.append(semantic.duplicates)
        streams.counts["semantic_duplicates"] = semantic.duplicates
    streams.written = written
    if not run.carries_in_store:
        streams.carried = None  # written again with the new vectors
    count_written(written, streams)
    return streams


def read_stage(p: beam.Pipeline, job: EmbedJob, resolved: ResolvedJob,
               streams: Streams) -> beam.PCollection:
    read = p | "Read" >> ReadCorpus(resolved.reader_input)
    streams.counts.update(documents=read.documents, reader_errors=read.errors)
    streams.errors.append(read.errors)
    streams.present_ids = read.documents | "PresentIds" >> beam.Map(lambda d: d["id"])
    docs = read.documents
    if job.output.stores_text:
        docs = docs | "StoreText" >> beam.Map(_with_text_field)
    return docs


def store_rule_stage(docs: beam.PCollection, run: OutputRun,
                     streams: Streams) -> beam.PCollection:
    """Documents whose values the output cannot store go to errors before they are
    embedded (and before exact dedupe, so a duplicate is never kept for one of them)."""
    rule = run.record_rule()
    if rule is None:
        return docs
    kept, refused = docs | "StoreRule" >> RefuseUnstorable(rule)
    streams.errors.append(refused)
    streams.counts["unstorable"] = refused
    return kept


def refused_stage(refused_rows: beam.PCollection, streams: Streams) -> None:
    """Rows the output refused while loading: one error per document, counted invalid
    instead of written (the output left every row of those documents out)."""
    refused = refused_rows | "RefusedDocuments" >> RefusedDocuments()
    streams.errors.append(refused.errors)
    streams.counts["refused_at_write"] = refused.errors
    streams.sums["refused_window_rows"] = refused.window_rows


def exact_stage(docs: beam.PCollection, job: EmbedJob, streams: Streams) -> beam.PCollection:
    """Without exact dedupe, ids are still made unique (an id used twice is one document)."""
    exact = docs | "ExactDedupe" >> ExactDedupe(by_text=job.exact_dedupe)
    streams.duplicates.append(exact.duplicates)
    streams.errors.append(exact.errors)
    streams.counts.update(exact_duplicates=exact.duplicates, id_conflicts=exact.errors)
    return exact.unique


def previous_stage(p: beam.Pipeline, docs: beam.PCollection, run: OutputRun,
                   streams: Streams) -> beam.PCollection:
    """Reembed: carry unchanged documents, list deleted ids, pass the rest on to embed."""
    split = split_by_previous(docs, streams.present_ids, run.read_previous(p),
                              run.previous.same_model)
    streams.carried, streams.deleted = split[CARRIED], split[DELETED]
    for category in (NEW, REEMBEDDED):
        streams.counts[category] = split[TO_EMBED] | f"Only_{category}" >> beam.Filter(
            lambda cd, c=category: cd[0] == c)
    streams.counts.update(carried=split[CARRIED] | "CarriedDocs" >> beam.Filter(is_document_row),
                          deleted=split[DELETED])
    return split[TO_EMBED] | "DocsToEmbed" >> beam.Map(lambda cd: cd[1])


def embed_stage(docs: beam.PCollection, job: EmbedJob, resolved: ResolvedJob,
                streams: Streams) -> beam.PCollection:
    embedded, embed_errors = (docs
                              | "PrepareForEmbedding" >> beam.Map(_for_embedding)
                              | "Embed" >> EmbedTexts(
                                  resolved.spec, with_errors=True, long_text=job.long_text,
                                  expected_documents=estimate_documents(
                                      resolved.reader_input.files) or 0))
    streams.errors.append(embed_errors)
    streams.counts.update(embedded=embedded | "EmbeddedDocs" >> beam.Filter(is_document_row),
                          embed_errors=embed_errors)
    return embedded


def collision_stage(embedded: beam.PCollection, run: OutputRun,
                    streams: Streams) -> beam.PCollection:
    """A document whose id is another document's window id goes to errors (see
    :mod:`beam_e5.transforms.chunk_ids`), also when either of them is carried in the store."""
    in_store = streams.carried if run.carries_in_store else None
    rows, carried, errors = embedded | "IdCollisions" >> SeparateIdCollisions(in_store)
    if in_store is not None:
        streams.carried = carried
    streams.errors.append(errors)
    streams.counts["id_collisions"] = errors
    return rows


def count_written(written: beam.PCollection, streams: Streams) -> None:
    """Written documents and window rows; a document carried inside the store counts as
    written, its window rows as chunk rows."""
    written_docs = written | "WrittenDocs" >> beam.Filter(is_document_row)
    if streams.carried is not None:
        in_store = streams.carried | "CarriedInStoreDocs" >> beam.Filter(is_document_row)
        written_docs = (written_docs, in_store) | "WrittenWithCarried" >> beam.Flatten()
        streams.sums["carried_chunk_rows"] = streams.carried | "CarriedChunkRows" >> beam.Map(
            carried_chunk_rows)
    streams.sums["tokens_cut"] = written_docs | "TokensCut" >> beam.Map(
        lambda r: int(r.get("tokens_cut") or 0))
    streams.counts["written"] = written_docs
    streams.counts["chunk_rows"] = written | "WrittenChunks" >> beam.Filter(is_chunk_row)
    streams.counts["chunked_documents"] = written_docs | "Chunked" >> beam.Filter(
        lambda r: (r.get("chunks") or 1) > 1)
    streams.counts["truncated_documents"] = written_docs | "Truncated" >> beam.Filter(
        lambda r: (r.get("tokens_cut") or 0) > 0)


def carried_chunk_rows(doc: dict) -> int:
    """Window rows a document carried inside the database has besides its document row."""
    chunks = int(doc.get("chunks") or 1)
    return chunks if chunks > 1 else 0


def write_streams(p: beam.Pipeline, streams: Streams, job: EmbedJob, resolved: ResolvedJob,
                  run: OutputRun) -> None:
    out = job.run_dir
    refused_rows = run.write(streams.written, streams.carried, resolved.schema)
    if refused_rows is not None:
        refused_stage(refused_rows, streams)
    _ = (tuple(streams.duplicates) | "AllDuplicates" >> beam.Flatten(pipeline=p)
         | "WriteDuplicates" >> WriteDuplicates(out))
    errors = tuple(streams.errors) | "AllErrors" >> beam.Flatten(pipeline=p)
    _ = errors | "WriteErrors" >> WriteErrors(out)
    if streams.deleted is not None:
        _ = (streams.deleted
             | "DeletedToJson" >> beam.Map(deleted_to_json)
             | "WriteDeleted" >> beam.io.WriteToText(FileSystems.join(out, "deleted"),
                                                     file_name_suffix=".jsonl"))
    record_counts(p, streams.counts, out, streams.sums)
    record_problems(errors, out)


def job_vectors_schema(job: EmbedJob, spec: EncoderSpec, signature: dict[str, Any]) -> pa.Schema:
    """The vectors' columns (plus ``text`` where the output stores it)."""
    keep = job.reader.kept_columns + ((TEXT_COLUMN,) if job.output.stores_text else ())
    return vectors_schema(spec.dim, job.output.run_dir.vector_dtype, keep,
                          file_metadata(signature))


def file_metadata(signature: dict[str, Any]) -> dict[str, str]:
    return {"beam_e5.version": __version__, "beam_e5.normalization": "l2",
            **{f"beam_e5.{k}": str(v) for k, v in signature.items()}}


def validate_job(job: EmbedJob, beam_args: Optional[list[str]] = None) -> ResolvedJob:
    """Everything that can be checked before the output is opened (no side effect)."""
    reader_input = validate_reader_config(job.reader)
    spec = job.encoder.resolve()
    job.long_text.check_budget(window_budget(spec.profile.max_length))
    check_device_here(job.encoder, beam_runner(beam_args or []))
    signature = {**model_signature(spec), "vector_dtype": job.output.run_dir.vector_dtype,
                 **job.long_text.signature()}
    return ResolvedJob(spec, signature, reader_input, job_vectors_schema(job, spec, signature))


def beam_runner(beam_args: list[str]) -> Optional[str]:
    """The ``--runner`` among Beam's arguments (None: the default DirectRunner)."""
    runner = PipelineOptions(beam_args).view_as(StandardOptions).runner
    return runner if isinstance(runner, str) or runner is None else type(runner).__name__


def run_embed(job: EmbedJob, beam_args: list[str]) -> RunSummary:
    """Validate, open the output, run, write the manifest, then publish; raises RunFailed
    (after the manifest) when an input file could not be read to its end or a publish guard
    refuses. A run that fails before its manifest leaves no partial files behind."""
    resolved = validate_job(job, beam_args)
    with job.output.open(resolved.schema, resolved.signature, job.previous) as run:
        summary, problems, manifest = _run_and_record(job, resolved, run, beam_args)
        run.mark_complete()
        try:
            _check_and_publish(job, resolved, run, summary, problems, manifest)
        except RunFailed as e:
            e.summary = summary  # type: ignore[attr-defined]  (the CLI still prints it)
            raise
    return summary


def _check_and_publish(job: EmbedJob, resolved: ResolvedJob, run: OutputRun,
                       summary: RunSummary, problems: list[dict],
                       manifest: dict[str, Any]) -> None:
    if problems:
        kept = run.unpublished()
        raise RunFailed(
            f"{len(problems)} input file(s) could not be read to their end, so records may be "
            f"missing ({problems[0]['source']}: {problems[0]['reason']}); the run in "
            f"{job.run_dir} lists them in errors-*.jsonl and its manifest"
            + (f", and {kept}" if kept else ""))
    sections = run.publish(summary.counts, resolved.signature, manifest, job.publish_min_ratio)
    if sections:
        write_manifest(job.run_dir, {**manifest, **sections})  # with the store's figures


def _run_and_record(job: EmbedJob, resolved: ResolvedJob, run: OutputRun,
                    beam_args: list[str]) -> tuple[RunSummary, list[dict], dict[str, Any]]:
    start = time.time()
    p = beam.Pipeline(options=PipelineOptions(with_worker_imports(beam_args)))
    bound_local_memory(p.options.view_as(StandardOptions).runner)
    streams = build_embed_graph(p, job, resolved, run)
    write_streams(p, streams, job, resolved, run)
    result = p.run()
    result.wait_until_finish()
    seconds = time.time() - start
    problems = read_problems(job.run_dir)
    counts = manifest_counts(read_counts(job.run_dir))
    summary = summarize(result, counts, seconds)
    manifest = {
        "beam_e5_version": __version__,
        "command": "reembed" if job.previous else "embed",
        "model": resolved.signature,
        "profile": dataclasses.asdict(resolved.spec.profile),
        "previous": run.previous.path if run.previous else None,
        "previous_model_matched": run.previous.same_model if run.previous else None,
        "output": job.output.label,
        "options": job_options(job),
        "counts": counts,
        "stats": summary.stats(),
        "incomplete_inputs": problems,
        "warnings": summary.warnings(),
    }
    write_manifest(job.run_dir, manifest)
    return summary, problems, manifest


def job_options(job: EmbedJob) -> dict[str, Any]:
    def plain(obj):
        return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj
    return {"reader": plain(job.reader), "encoder": plain(job.encoder),
            "output": plain(job.output.run_dir), "exact_dedupe": job.exact_dedupe,
            "semantic": plain(job.semantic), "previous": job.output.redact(job.previous),
            "publish_min_ratio": job.publish_min_ratio, "target": job.output.options(),
            "long_text": plain(job.long_text)}


__all__ = ["EmbedJob", "build_embed_graph", "run_embed", "validate_job", "ConfigError"]
