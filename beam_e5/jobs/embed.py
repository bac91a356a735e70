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
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from beam_e5._version import __version__
from beam_e5.errors import ConfigError
from beam_e5.io.outputs import (
    OutputConfig,
    prepare_output,
    read_counts,
    record_counts,
    write_manifest,
)
from beam_e5.io.readers import (
    ReadCorpus,
    ReaderConfig,
    ResolvedInput,
    validate_reader_config,
)
from beam_e5.io.sinks import WriteDuplicates, WriteErrors, WriteVectors, vectors_schema
from beam_e5.io.snapshots import PreviousSnapshot, load_previous, publish, read_previous
from beam_e5.jobs.summary import RunSummary, summarize
from beam_e5.model.chunking import LongTextConfig
from beam_e5.model.config import EncoderConfig, EncoderSpec
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
from beam_e5.transforms.semantic_dedupe import SemanticDedupe, SemanticDedupeConfig

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

    def __post_init__(self) -> None:
        if not self.exact_dedupe and (self.semantic is not None or self.previous is not None):
            raise ConfigError(
                "semantic dedupe and re-embedding match documents by id, and exact dedupe is "
                "what makes ids unique (it rejects an id used for two texts): drop "
                "--no-exact-dedupe, or drop --dedupe-threshold / use embed instead of reembed")


@dataclass(frozen=True)
class ResolvedJob:
    """What validation found: the encoder spec, its signature, the previous snapshot."""

    spec: EncoderSpec
    signature: dict[str, Any]
    previous: Optional[PreviousSnapshot]
    reader_input: ResolvedInput  # the matched files and resolved field names


@dataclass(frozen=True)
class Streams:
    """The PCollections a run produces, by what happens to each record."""

    written: Any
    duplicates: Any
    errors: Any
    counts: dict[str, Any]
    deleted: Any = None
    sums: dict[str, Any] = field(default_factory=dict)  # streams of ints to total


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
    if job.exact_dedupe:
        exact = docs | "ExactDedupe" >> ExactDedupe()
        docs = exact.unique
        duplicates.append(exact.duplicates)
        errors.append(exact.errors)
        counts.update(exact_duplicates=exact.duplicates, id_conflicts=exact.errors)
    carried = deleted = None
    if resolved.previous is not None:
        split = split_by_previous(
            docs, read.documents | "PresentIds" >> beam.Map(lambda d: d["id"]),
            read_previous(p, resolved.previous), resolved.previous.same_model)
        carried, deleted = split[CARRIED], split[DELETED]
        for category in (NEW, REEMBEDDED):
            counts[category] = split[TO_EMBED] | f"Only_{category}" >> beam.Filter(
                lambda cd, c=category: cd[0] == c)
        counts.update(carried=carried, deleted=deleted)
        docs = split[TO_EMBED] | "DocsToEmbed" >> beam.Map(lambda cd: cd[1])
    embedded, embed_errors = (docs
                              | "PrepareForEmbedding" >> beam.Map(_for_embedding)
                              | "Embed" >> EmbedTexts(spec, with_errors=True,
                                                      long_text=job.long_text))
    errors.append(embed_errors)
    counts.update(embedded=embedded | "EmbeddedDocs" >> beam.Filter(is_document_row),
                  embed_errors=embed_errors)
    if carried is not None:
        counts["carried"] = carried | "CarriedDocs" >> beam.Filter(is_document_row)
        embedded = (embedded, carried) | "WithCarried" >> beam.Flatten()
    written = embedded
    if job.semantic is not None:
        # decided per document, on its document row; its window rows follow it
        semantic = (embedded | "DocumentRows" >> beam.Filter(is_document_row)
                    | "SemanticDedupe" >> SemanticDedupe(job.semantic))
        chunks = embedded | "ChunkRows" >> beam.Filter(is_chunk_row)
        written = ((semantic.kept, keep_chunks_of(semantic.kept, chunks))
                   | "KeptRows" >> beam.Flatten())
        duplicates.append(semantic.duplicates)
        counts["semantic_duplicates"] = semantic.duplicates
    written_docs = written | "WrittenDocs" >> beam.Filter(is_document_row)
    counts["written"] = written_docs
    counts["chunk_rows"] = written | "WrittenChunks" >> beam.Filter(is_chunk_row)
    counts["chunked_documents"] = written_docs | "Chunked" >> beam.Filter(
        lambda r: r.get("chunks", 1) > 1)
    counts["truncated_documents"] = written_docs | "Truncated" >> beam.Filter(
        lambda r: (r.get("tokens_cut") or 0) > 0)
    sums = {"tokens_cut": written_docs | "TokensCut" >> beam.Map(
        lambda r: int(r.get("tokens_cut") or 0))}
    return Streams(
        written=written,
        duplicates=tuple(duplicates) | "AllDuplicates" >> beam.Flatten(pipeline=p),
        errors=tuple(errors) | "AllErrors" >> beam.Flatten(pipeline=p),
        counts=counts, deleted=deleted, sums=sums)


def keep_chunks_of(kept_docs, chunk_rows):
    """The window rows of the documents in ``kept_docs`` (by ``doc_id``)."""
    return ({"kept": kept_docs | "KeptIds" >> beam.Map(lambda r: (r["id"], True)),
             "chunks": chunk_rows | "ChunksByDoc" >> beam.Map(lambda r: (r["doc_id"], r))}
            | "JoinKept" >> beam.CoGroupByKey()
            | "KeptChunks" >> beam.FlatMap(
                lambda kv: kv[1]["chunks"] if kv[1]["kept"] else []))


def write_streams(p: beam.Pipeline, streams: Streams, job: EmbedJob,
                  resolved: ResolvedJob) -> None:
    out = job.output.output
    schema = vectors_schema(resolved.spec.dim, job.output.vector_dtype, job.reader.keep_fields,
                            file_metadata(job, resolved))
    _ = streams.written | "WriteVectors" >> WriteVectors(out, schema)
    _ = streams.duplicates | "WriteDuplicates" >> WriteDuplicates(out)
    _ = streams.errors | "WriteErrors" >> WriteErrors(out)
    if streams.deleted is not None:
        _ = (streams.deleted
             | "DeletedToJson" >> beam.Map(deleted_to_json)
             | "WriteDeleted" >> beam.io.WriteToText(FileSystems.join(out, "deleted"),
                                                     file_name_suffix=".jsonl"))
    record_counts(p, streams.counts, out, streams.sums)


def file_metadata(job: EmbedJob, resolved: ResolvedJob) -> dict[str, str]:
    return {"beam_e5.version": __version__, "beam_e5.normalization": "l2",
            **{f"beam_e5.{k}": str(v) for k, v in resolved.signature.items()}}


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
    balance = (counts["written"] + counts["exact_duplicates"] + counts["semantic_duplicates"]
               + counts["invalid"])
    if counts["read"] != balance:
        raise RuntimeError(f"counts do not balance: read={counts['read']} but written + "
                           f"duplicates + invalid = {balance} ({counts}); this is a bug, "
                           "please report it")
    return counts


def validate_job(job: EmbedJob) -> ResolvedJob:
    """Everything that can be checked before the pipeline starts."""
    reader_input = validate_reader_config(job.reader)
    spec = job.encoder.resolve()
    signature = {**model_signature(spec), "vector_dtype": job.output.vector_dtype,
                 **job.long_text.signature()}
    previous = load_previous(job.previous, signature) if job.previous else None
    if previous is not None and _same_dir(previous.path, job.output.output):
        raise ConfigError("--output must differ from the --previous snapshot; write each run "
                          "to a new directory and move a --publish pointer")
    prepare_output(job.output)
    return ResolvedJob(spec, signature, previous, reader_input)


def _same_dir(a: str, b: str) -> bool:
    return a.rstrip("/") == b.rstrip("/")


def run_embed(job: EmbedJob, beam_args: list[str]) -> RunSummary:
    resolved = validate_job(job)
    options = PipelineOptions(beam_args)
    start = time.time()
    p = beam.Pipeline(options=options)
    streams = build_embed_graph(p, job, resolved)
    write_streams(p, streams, job, resolved)
    result = p.run()
    result.wait_until_finish()
    seconds = time.time() - start
    counts = manifest_counts(read_counts(job.output.output))
    summary = summarize(result, counts, seconds)
    write_manifest(job.output.output, {
        "beam_e5_version": __version__,
        "command": "reembed" if job.previous else "embed",
        "model": resolved.signature,
        "profile": dataclasses.asdict(resolved.spec.profile),
        "previous": resolved.previous.path if resolved.previous else None,
        "previous_model_matched": resolved.previous.same_model if resolved.previous else None,
        "options": job_options(job),
        "counts": counts,
        "stats": summary.stats(),
    })
    if job.publish:
        publish(job.publish, job.output.output)
    return summary


def job_options(job: EmbedJob) -> dict[str, Any]:
    def plain(obj):
        return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj
    return {"reader": plain(job.reader), "encoder": plain(job.encoder),
            "output": plain(job.output), "exact_dedupe": job.exact_dedupe,
            "semantic": plain(job.semantic), "previous": job.previous, "publish": job.publish,
            "long_text": plain(job.long_text)}


__all__ = ["EmbedJob", "build_embed_graph", "run_embed", "validate_job", "ConfigError"]
