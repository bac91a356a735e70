"""The end-of-run summary: counts, throughput and padding, from the run's Beam metrics."""

from __future__ import annotations

import resource
from dataclasses import dataclass, field
from typing import Any

from apache_beam.metrics.metric import MetricsFilter

from beam_e5.model.hardware import return_large_blocks
from beam_e5.records import METRICS_NAMESPACE
from beam_e5.transforms.semantic_dedupe import is_local_runner

SUMMED_METRICS = ("texts_embedded", "real_tokens", "padded_tokens", "micro_batches",
                  "truncated_texts", "oom_splits", "mostly_unknown_texts")


def counter_values(result: Any, namespace: str = METRICS_NAMESPACE) -> dict[str, int]:
    """Committed counter values (attempted where a runner does not commit)."""
    values: dict[str, int] = {}
    query = result.metrics().query(MetricsFilter().with_namespace(namespace))
    for c in query["counters"]:
        value = c.committed if c.committed is not None else c.attempted
        values[c.key.metric.name] = values.get(c.key.metric.name, 0) + int(value or 0)
    return values


def bound_local_memory(runner: Any) -> None:
    """On the DirectRunner, which holds every materialised PCollection in this process, have
    the C heap return its large blocks when they are freed (:func:`return_large_blocks`)."""
    if is_local_runner(runner):
        return_large_blocks()


def peak_rss_mib() -> float:
    """The peak resident memory so far of this process or of its largest finished child
    (``getrusage``; ``ru_maxrss`` is KiB on Linux), in MiB."""
    peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
               resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return round(peak / 1024, 1)


@dataclass(frozen=True)
class RunSummary:
    counts: dict[str, int]
    seconds: float
    metrics: dict[str, int] = field(default_factory=dict)
    peak_rss_mib: float = 0.0  # peak_rss_mib() when the run ended; 0: not measured

    def stats(self) -> dict[str, float]:
        real = self.metrics.get("real_tokens", 0)
        padded = self.metrics.get("padded_tokens", 0)
        secs = max(self.seconds, 1e-9)
        return {
            "seconds": round(self.seconds, 3),
            "texts_embedded": self.metrics.get("texts_embedded", 0),
            "docs_per_s": round(self.counts.get("embedded", 0) / secs, 2),
            "tokens_per_s": round(real / secs, 1),
            "real_tokens": real,
            "padded_tokens": padded,
            "padding_ratio": round((padded - real) / padded, 4) if padded else 0.0,
            "micro_batches": self.metrics.get("micro_batches", 0),
            "truncated_texts": self.metrics.get("truncated_texts", 0),
            "model_loads": self.metrics.get("model_loads", 0),
            "mostly_unknown_texts": self.metrics.get("mostly_unknown_texts", 0),
            # seconds inside the encoder's calls, summed over worker threads and processes
            "encode_seconds": round(self.metrics.get("encode_ms", 0) / 1000, 3),
            "peak_rss_mib": self.peak_rss_mib,
        }

    def warnings(self) -> list[str]:
        """What the user should look at although the run succeeded."""
        out = []
        if self.counts.get("written", 0) == 0:
            out.append("no document was written: is --input an empty export? (a --publish "
                       "pointer is never moved to an empty run)")
        unknown = self.metrics.get("mostly_unknown_texts", 0)
        if unknown:
            out.append(f"{unknown:,} embedded texts are mostly unknown tokens (the tokenizer's "
                       "[UNK]): their vectors say little. Is the model's vocabulary right for "
                       "this text (language, script)?")
        return out

    def render(self) -> str:
        c, s = self.counts, self.stats()
        secs = max(self.seconds, 1e-9)
        lines = [
            "beam-e5 summary",
            f"  read {c['read']:,} = written {c['written']:,} + exact duplicates "
            f"{c['exact_duplicates']:,} + semantic duplicates {c['semantic_duplicates']:,} + "
            f"invalid {c['invalid']:,}",
        ]
        if s["real_tokens"]:
            lines += [
                f"  embedded {c['embedded']:,} docs, {s['real_tokens']:,} tokens "
                f"({s['truncated_texts']:,} truncated) in {s['seconds']:.1f} s",
                f"  {s['docs_per_s']:,.1f} docs/s, {s['tokens_per_s']:,.0f} tokens/s, "
                f"padding ratio {s['padding_ratio']:.1%}, {s['micro_batches']:,} micro-batches",
                f"  encoder calls {s['encode_seconds']:.1f} s ({s['encode_seconds'] / secs:.0%} "
                "of the job's time, summed over workers; the rest is reading, start-up, "
                "dedupe and writing)",
            ]
        else:
            lines.append(f"  no inference; {s['seconds']:.1f} s")
        if c.get("chunked_documents"):
            lines.append(f"  long documents: {c['chunked_documents']:,} chunked into windows "
                         f"({c.get('chunk_rows', 0):,} chunk vectors beside the document "
                         "vectors)")
        if c.get("truncated_documents") or c.get("tokens_cut"):
            lines.append(f"  WARNING: {c.get('truncated_documents', 0):,} documents truncated, "
                         f"{c.get('tokens_cut', 0):,} tokens cut and not embedded (their rows "
                         "say how many in tokens_cut); --long-text chunk embeds all of them")
        for extra in ("carried", "reembedded", "new", "deleted"):
            if extra in c:
                lines.append(f"  {extra}: {c[extra]:,}")
        if self.peak_rss_mib:
            lines.append(f"  peak memory {self.peak_rss_mib:,.0f} MiB (resident; this process "
                         "or its largest child worker)")
        lines += [f"  warning: {w}" for w in self.warnings()]
        return "\n".join(lines)


def _distribution_total(result: Any, name: str, field: str,
                        namespace: str = METRICS_NAMESPACE) -> int:
    """``field`` (``count`` or ``sum``) of a Beam distribution, over every worker."""
    query = result.metrics().query(MetricsFilter().with_namespace(namespace).with_name(name))
    return sum(getattr(d.committed or d.attempted, field) for d in query["distributions"]
               if (d.committed or d.attempted) is not None)


def model_loads(result: Any, namespace: str = METRICS_NAMESPACE) -> int:
    """How many times a worker loaded the model (RunInference's load-latency distribution)."""
    return _distribution_total(result, "load_model_latency_milli_secs", "count", namespace)


def encode_ms(result: Any, namespace: str = METRICS_NAMESPACE) -> int:
    """Milliseconds spent in the encoder's calls, summed over every worker (the handler's
    ``encode_batch_ms`` distribution)."""
    return _distribution_total(result, "encode_batch_ms", "sum", namespace)


def summarize(result: Any, counts: dict[str, int], seconds: float) -> RunSummary:
    metrics = counter_values(result)
    values = {k: metrics.get(k, 0) for k in SUMMED_METRICS}
    values["model_loads"] = model_loads(result)
    values["encode_ms"] = encode_ms(result)
    return RunSummary(counts, seconds, values, peak_rss_mib())
