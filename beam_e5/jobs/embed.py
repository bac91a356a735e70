"""The embed pipeline: read -> exact dedupe -> embed (chunked) -> semantic dedupe -> write.

One stage function per step builds the Beam graph; :func:`run_embed` validates everything
before the pipeline starts, runs it, then writes ``manifest.json`` last (atomically), with
counts that must balance::

    read == written + exact_duplicates + semantic_duplicates + invalid

in documents. A long document embedded in several windows is one document there; its window
rows are counted beside (``chunk_rows``, ``chunked_documents``), and semantic dedupe decides
on its document row and keeps or drops all of its rows together.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from beam_e5._version import __version__
from beam_e5.errors import ConfigError, RunFailed
from beam_e5.io.outputs import (
    OutputClaim,
    OutputConfig,
    prepare_output,
    read_counts,
    read_problems,
    record_counts,
    record_problems,
    write_manifest,
)
from beam_e5.io.pg.config import PgSinkConfig
from beam_e5.io.pg.run import PgRun
from beam_e5.io.pg.uri import is_pg_uri, redact
from beam_e5.io.readers import (
    ReadCorpus,
    ReaderConfig,
    ResolvedInput,
    validate_reader_config,
)
from beam_e5.io.sinks import WriteDuplicates, WriteErrors, WriteVectors, vectors_schema
from beam_e5.io.snapshots import (
    PreviousSnapshot,
    check_min_ratio,
    check_not_live,
    check_pointer_location,
    check_guards,
    check_publishable,
    load_previous,
    publish,
    read_previous,
    same_signature,
)
from beam_e5.jobs.summary import RunSummary, summarize
from beam_e5.model.chunking import LongTextConfig
from beam_e5.model.config import EncoderConfig, EncoderSpec, check_device_here
from beam_e5.model.fingerprint import model_signature
from beam_e5.records import is_chunk_row, is_document_row
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
from beam_e5.transforms.semantic_dedupe import SemanticDedupeConfig, dedupe_documents

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbedJob:
    """Everything one ``beam-e5 embed`` run needs; each part validates itself."""

    reader: ReaderConfig
    encoder: EncoderConfig
    output: OutputConfig
    exact_dedupe: bool = True
    semantic: Optional[SemanticDedupeConfig] = None
    previous: Optional[str] = None  # a snapshot dir or publish pointer: re-embed incrementally
    publish: Optional[str] = None  # pointer file moved to this run's output after success
    long_text: LongTextConfig = field(default_factory=LongTextConfig)
    # --output postgresql://...?table=NAME: vectors go to PostgreSQL, and ``output`` above is
    # the --report-dir (manifest, errors, duplicates, deleted ids)
    pg: Optional[PgSinkConfig] = None
    # refuse to publish fewer documents than this fraction of the snapshot it replaces
    publish_min_ratio: float = 0.5

    def __post_init__(self) -> None:
        check_min_ratio(self.publish_min_ratio)
        if self.pg is not None:
            _check_pg_job(self)
        elif is_pg_uri(self.previous):
            raise ConfigError("--previous is a postgresql:// URI: --output must be the same URI "
                              "(a run re-embeds into the table it reads)")
        if not self.exact_dedupe and (self.semantic is not None or self.previous is not None):
            raise ConfigError(
                "semantic dedupe and re-embedding match documents by id, and exact dedupe is "
                "what makes ids unique (it rejects an id used for two texts): drop "
                "--no-exact-dedupe, or drop --dedupe-threshold / use embed instead of reembed")


def _check_pg_job(job: EmbedJob) -> None:
    pg = job.pg
    if job.publish:
        raise ConfigError("--publish moves a pointer file; with a postgresql:// --output the run "
                          "publishes by swapping the table behind table=NAME: drop --publish")
    if job.previous is not None:
        if not is_pg_uri(job.previous):
            raise ConfigError("with a postgresql:// --output, --previous must be the same URI "
                              "(reembed reads what that table publishes)")
        same = PgSinkConfig(job.previous, pg.report_dir).target
        if (same.dsn, same.name, same.schema) != (pg.target.dsn, pg.target.name,
                                                  pg.target.schema):
            raise ConfigError(f"--previous {redact(job.previous)} differs from --output "
                              f"{pg.target.redacted}: reembed into a table publishes under the "
                              "name it read; pass the same URI to both")
        if job.semantic is not None:
            raise ConfigError("--dedupe-threshold needs every vector in the workers, but a "
                              "postgresql:// reembed keeps unchanged vectors in the database: "
                              "drop it, or reembed to files")
    if pg.store_text and "text" in job.reader.keep_fields:
        raise ConfigError("--store-text adds a 'text' column, and --keep-fields names 'text' "
                          "too: drop one of them")


@dataclass(frozen=True)
class ResolvedJob:
    """What validation found: the encoder spec, its signature, the previous snapshot."""

    spec: EncoderSpec
    signature: dict[str, Any]
    previous: Optional[PreviousSnapshot]
    reader_input: ResolvedInput  # the matched files and resolved field names
    claim: Optional[OutputClaim] = None  # this run's hold on the output directory
    pg_run: Optional[PgRun] = None  # holds the lock on the published name; close() it


@dataclass(frozen=True)
class Streams:
    """The PCollections a run produces, by what happens to each record."""

    written: Any
    duplicates: Any
    errors: Any
    counts: dict[str, Any]
    deleted: Any = None
    sums: dict[str, Any] = field(default_factory=dict)  # streams of ints to total
    # postgresql:// reembed: documents whose rows (all their windows) stay in the database
    carried: Any = None


def _with_text_field(doc: dict) -> dict:
    return {**doc, "fields": {**(doc.get("fields") or {}), "text": doc["text"]}}


def _for_embedding(doc: dict) -> dict:
    return {"id": doc["id"], "text": doc["text"], "text_sha256": doc["text_sha256"],
            "source": doc["source"], "fields": doc.get("fields") or {}}


def build_embed_graph(p: beam.Pipeline, job: EmbedJob, resolved: ResolvedJob) -> Streams:
    """Wire the stages; return the output streams and the counts to record."""
    spec = resolved.spec
    read = p | "Read" >> ReadCorpus(resolved.reader_input)
    counts = {"documents": read.documents, "reader_errors": read.errors}
    errors = [read.errors]
    duplicates = []
    docs = read.documents
    pg_run = resolved.pg_run
    if pg_run is not None and job.pg.store_text:
        docs = docs | "StoreText" >> beam.Map(_with_text_field)
    # without exact dedupe, ids are still made unique (an id used twice is one document)
    exact = docs | "ExactDedupe" >> ExactDedupe(by_text=job.exact_dedupe)
    docs = exact.unique
    duplicates.append(exact.duplicates)
    errors.append(exact.errors)
    counts.update(exact_duplicates=exact.duplicates, id_conflicts=exact.errors)
    carried = deleted = None
    if resolved.previous is not None:
        previous = (p | "ReadPublished" >> pg_run.read_published() if pg_run is not None
                    else read_previous(p, resolved.previous))
        split = split_by_previous(
            docs, read.documents | "PresentIds" >> beam.Map(lambda d: d["id"]),
            previous, resolved.previous.same_model)
        carried, deleted = split[CARRIED], split[DELETED]
        for category in (NEW, REEMBEDDED):
            counts[category] = split[TO_EMBED] | f"Only_{category}" >> beam.Filter(
                lambda cd, c=category: cd[0] == c)
        counts.update(carried=carried | "CarriedDocs" >> beam.Filter(is_document_row),
                      deleted=deleted)
        docs = split[TO_EMBED] | "DocsToEmbed" >> beam.Map(lambda cd: cd[1])
    embedded, embed_errors = (docs
                              | "PrepareForEmbedding" >> beam.Map(_for_embedding)
                              | "Embed" >> EmbedTexts(spec, with_errors=True,
                                                      long_text=job.long_text))
    errors.append(embed_errors)
    counts.update(embedded=embedded | "EmbeddedDocs" >> beam.Filter(is_document_row),
                  embed_errors=embed_errors)
    in_db = carried if pg_run is not None else None  # carried inside the database
    if carried is not None and in_db is None:
        embedded = (embedded, carried) | "WithCarried" >> beam.Flatten()
    written = embedded
    if job.semantic is not None:
        semantic = dedupe_documents(embedded, job.semantic)
        written = (semantic.kept, semantic.kept_chunks) | "KeptRows" >> beam.Flatten()
        duplicates.append(semantic.duplicates)
        counts["semantic_duplicates"] = semantic.duplicates
    written_docs = written | "WrittenDocs" >> beam.Filter(is_document_row)
    chunk_rows = written | "WrittenChunks" >> beam.Filter(is_chunk_row)
    sums = {}
    if in_db is not None:
        # one record per carried document stands for all its rows, which stay in the table
        written_docs = (written_docs, in_db | "CarriedInDbDocs" >> beam.Filter(is_document_row)
                        ) | "WrittenWithCarried" >> beam.Flatten()
        sums["carried_chunk_rows"] = in_db | "CarriedChunkRows" >> beam.Map(carried_chunk_rows)
    sums["tokens_cut"] = written_docs | "TokensCut" >> beam.Map(
        lambda r: int(r.get("tokens_cut") or 0))
    counts["written"] = written_docs
    counts["chunk_rows"] = chunk_rows
    counts["chunked_documents"] = written_docs | "Chunked" >> beam.Filter(
        lambda r: (r.get("chunks") or 1) > 1)
    counts["truncated_documents"] = written_docs | "Truncated" >> beam.Filter(
        lambda r: (r.get("tokens_cut") or 0) > 0)
    return Streams(
        written=written,
        duplicates=tuple(duplicates) | "AllDuplicates" >> beam.Flatten(pipeline=p),
        errors=tuple(errors) | "AllErrors" >> beam.Flatten(pipeline=p),
        counts=counts, deleted=deleted, sums=sums, carried=in_db)


def carried_chunk_rows(doc: dict) -> int:
    """Window rows a document carried inside the database has besides its document row."""
    chunks = int(doc.get("chunks") or 1)
    return chunks if chunks > 1 else 0


def write_streams(p: beam.Pipeline, streams: Streams, job: EmbedJob,
                  resolved: ResolvedJob) -> None:
    out = job.output.output
    schema = job_vectors_schema(job, resolved.spec, resolved.signature)
    if resolved.pg_run is not None:
        _ = streams.written | "WriteVectorsToPg" >> resolved.pg_run.write_vectors(schema)
        if streams.carried is not None:
            _ = streams.carried | "WriteCarriedToPg" >> resolved.pg_run.write_carried(schema)
    else:
        _ = streams.written | "WriteVectors" >> WriteVectors(out, schema)
    _ = streams.duplicates | "WriteDuplicates" >> WriteDuplicates(out)
    _ = streams.errors | "WriteErrors" >> WriteErrors(out)
    if streams.deleted is not None:
        _ = (streams.deleted
             | "DeletedToJson" >> beam.Map(deleted_to_json)
             | "WriteDeleted" >> beam.io.WriteToText(FileSystems.join(out, "deleted"),
                                                     file_name_suffix=".jsonl"))
    record_counts(p, streams.counts, out, streams.sums)
    record_problems(streams.errors, out)


def job_vectors_schema(job: EmbedJob, spec: EncoderSpec, signature: dict[str, Any]):
    """The vectors' columns: Parquet files, or the PostgreSQL table (plus ``text`` with
    ``--store-text``)."""
    keep = tuple(job.reader.keep_fields)
    if job.pg is not None and job.pg.store_text:
        keep += ("text",)
    return vectors_schema(spec.dim, job.output.vector_dtype, keep, file_metadata(signature))


def file_metadata(signature: dict[str, Any]) -> dict[str, str]:
    return {"beam_e5.version": __version__, "beam_e5.normalization": "l2",
            **{f"beam_e5.{k}": str(v) for k, v in signature.items()}}


def manifest_counts(raw: dict[str, int]) -> dict[str, int]:
    """The manifest's counts from the per-stream counts; raises if they do not balance."""
    counts = {
        "read": raw["documents"] + raw["reader_errors"],
        "invalid": raw["reader_errors"] + raw.get("id_conflicts", 0) + raw["embed_errors"],
        "exact_duplicates": raw.get("exact_duplicates", 0),
        "semantic_duplicates": raw.get("semantic_duplicates", 0),
        "embedded": raw["embedded"],
        "written": raw["written"],
    }
    for name in ("carried", "new", "reembedded", "deleted", "chunk_rows", "chunked_documents",
                 "truncated_documents", "tokens_cut"):
        if name in raw:
            counts[name] = raw[name]
    if "carried_chunk_rows" in raw:  # postgresql:// reembed: window rows kept in the table
        counts["chunk_rows"] = counts.get("chunk_rows", 0) + raw["carried_chunk_rows"]
    balance = (counts["written"] + counts["exact_duplicates"] + counts["semantic_duplicates"]
               + counts["invalid"])
    if counts["read"] != balance:
        raise RuntimeError(f"counts do not balance: read={counts['read']} but written + "
                           f"duplicates + invalid = {balance} ({counts}); this is a bug, "
                           "please report it")
    return counts


def validate_job(job: EmbedJob, beam_args: Optional[list[str]] = None) -> ResolvedJob:
    """Everything that can be checked before the pipeline starts; claims the output last
    (release the returned ``claim``, close the returned ``pg_run``)."""
    reader_input = validate_reader_config(job.reader)
    spec = job.encoder.resolve()
    check_device_here(job.encoder, beam_runner(beam_args or []))
    signature = {**model_signature(spec), "vector_dtype": job.output.vector_dtype,
                 **job.long_text.signature()}
    if job.pg is not None:
        claim = prepare_output(job.output)  # the --report-dir
        try:
            run = PgRun.open(job.pg, job_vectors_schema(job, spec, signature))
        except BaseException:
            claim.abandon()
            raise
        previous = None
        if job.previous:
            if run.published is None:
                run.close()
                claim.abandon()
                raise ConfigError(f"nothing is published under {job.pg.target.name} yet: run "
                                  "`beam-e5 embed` with this --output first")
            previous = PreviousSnapshot(f"{run.schema}.{run.published.table}",
                                        same_signature(run.published.signature, signature))
        return ResolvedJob(spec, signature, previous, reader_input, claim, pg_run=run)
    previous = load_previous(job.previous, signature) if job.previous else None
    if previous is not None and _same_dir(previous.path, job.output.output):
        raise ConfigError("--output must differ from the --previous snapshot; write each run "
                          "to a new directory and move a --publish pointer")
    if job.publish:
        check_pointer_location(job.publish, job.output.output)
    if job.output.overwrite:
        check_not_live(job.output.output, (job.publish, job.previous))
    claim = prepare_output(job.output)
    return ResolvedJob(spec, signature, previous, reader_input, claim)


def beam_runner(beam_args: list[str]) -> Optional[str]:
    """The ``--runner`` among Beam's arguments (None: the default DirectRunner)."""
    runner = PipelineOptions(beam_args).view_as(StandardOptions).runner
    return runner if isinstance(runner, str) or runner is None else type(runner).__name__


def _same_dir(a: str, b: str) -> bool:
    def norm(path: str) -> str:
        return (path if "://" in path else os.path.abspath(path)).rstrip("/")
    return norm(a) == norm(b)


def run_embed(job: EmbedJob, beam_args: list[str]) -> RunSummary:
    """Validate, run, write the manifest, then publish; raises RunFailed (after the manifest)
    when an input file could not be read to its end or a publish guard refuses."""
    resolved = validate_job(job, beam_args)
    try:
        try:
            summary, problems, manifest = _run_and_record(job, resolved, beam_args)
        except BaseException:
            if resolved.claim is not None:
                resolved.claim.abandon()  # no partial files left to refuse the corrected rerun
            raise
        if resolved.claim is not None:
            resolved.claim.release()
        try:
            _check_and_publish(job, resolved, summary, problems, manifest)
        except RunFailed as e:
            e.summary = summary  # type: ignore[attr-defined]  (the CLI still prints it)
            raise
        return summary
    finally:
        if resolved.pg_run is not None:
            resolved.pg_run.close()  # drops the load tables; releases the lock


def _check_and_publish(job: EmbedJob, resolved: ResolvedJob, summary: RunSummary,
                       problems: list[dict], manifest: dict[str, Any]) -> None:
    target = (f"the table behind {job.pg.target.name} was not swapped" if job.pg is not None
              else f"{job.publish} was not moved" if job.publish else "")
    if problems:
        raise RunFailed(
            f"{len(problems)} input file(s) could not be read to their end, so records may be "
            f"missing ({problems[0]['source']}: {problems[0]['reason']}); the run in "
            f"{job.output.output} lists them in errors-*.jsonl and its manifest"
            + (f", and {target}" if target else ""))
    written = summary.counts["written"]
    if resolved.pg_run is not None:
        # documents against documents (a chunked document is several rows in the table)
        check_guards(written, resolved.pg_run.published_documents(), job.publish_min_ratio,
                     f"{job.pg.target.name} keeps serving the table it serves now")
        rows = written + summary.counts.get("chunk_rows", 0)  # document rows + window rows
        manifest["pg"] = resolved.pg_run.publish(rows, resolved.signature, manifest)
        write_manifest(job.output.output, manifest)  # again, with the load and index figures
    elif job.publish:
        check_publishable(job.publish, written, job.publish_min_ratio)
        publish(job.publish, job.output.output)


def _run_and_record(job: EmbedJob, resolved: ResolvedJob, beam_args: list[str]
                    ) -> tuple[RunSummary, list[dict], dict[str, Any]]:
    options = PipelineOptions(beam_args)
    start = time.time()
    p = beam.Pipeline(options=options)
    streams = build_embed_graph(p, job, resolved)
    write_streams(p, streams, job, resolved)
    result = p.run()
    result.wait_until_finish()
    seconds = time.time() - start
    problems = read_problems(job.output.output)
    counts = manifest_counts(read_counts(job.output.output))
    summary = summarize(result, counts, seconds)
    manifest = {
        "beam_e5_version": __version__,
        "command": "reembed" if job.previous else "embed",
        "model": resolved.signature,
        "profile": dataclasses.asdict(resolved.spec.profile),
        "previous": resolved.previous.path if resolved.previous else None,
        "previous_model_matched": resolved.previous.same_model if resolved.previous else None,
        "options": job_options(job),
        "counts": counts,
        "stats": summary.stats(),
        "incomplete_inputs": problems,
        "warnings": summary.warnings(),
    }
    if resolved.pg_run is not None:
        manifest["output"] = job.pg.target.redacted
    write_manifest(job.output.output, manifest)
    return summary, problems, manifest


def job_options(job: EmbedJob) -> dict[str, Any]:
    def plain(obj):
        return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj
    return {"reader": plain(job.reader), "encoder": plain(job.encoder),
            "output": plain(job.output), "exact_dedupe": job.exact_dedupe,
            "semantic": plain(job.semantic), "previous": redact(job.previous) or None,
            "publish": job.publish, "publish_min_ratio": job.publish_min_ratio,
            "pg": job.pg.options() if job.pg else None, "long_text": plain(job.long_text)}


__all__ = ["EmbedJob", "build_embed_graph", "run_embed", "validate_job", "ConfigError"]
