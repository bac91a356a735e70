"""Tests for beam_e5.jobs.summary: the end-of-run summary's stats, warnings and rendering from
hand-built counts, and the helpers that read a real pipeline's Beam metrics."""

from __future__ import annotations

from typing import Any

import apache_beam as beam
import pytest
from apache_beam.metrics import Metrics
from apache_beam.metrics.cells import DistributionData, DistributionResult
from apache_beam.metrics.execution import MetricKey, MetricResult
from apache_beam.metrics.metricbase import MetricName

from beam_e5.jobs.summary import (
    SUMMED_METRICS,
    RunSummary,
    counter_values,
    encode_ms,
    model_loads,
    peak_rss_mib,
    summarize,
)

COUNTS = {"read": 12_345, "written": 10_000, "exact_duplicates": 2_000,
          "semantic_duplicates": 300, "invalid": 45, "embedded": 10_300}
METRICS = {"texts_embedded": 10_300, "real_tokens": 1_234_567, "padded_tokens": 1_500_000,
           "micro_batches": 1_024, "truncated_texts": 7, "model_loads": 2,
           "mostly_unknown_texts": 0, "encode_ms": 45_250}


def test_stats_from_counts_and_metrics() -> None:
    stats = RunSummary(COUNTS, 50.0, METRICS, 812.5).stats()
    assert stats == {
        "seconds": 50.0,
        "texts_embedded": 10_300,
        "docs_per_s": 206.0,  # embedded / seconds
        "tokens_per_s": 24_691.3,  # real tokens / seconds
        "real_tokens": 1_234_567,
        "padded_tokens": 1_500_000,
        "padding_ratio": 0.177,  # (1,500,000 - 1,234,567) / 1,500,000 = 0.17695...
        "micro_batches": 1_024,
        "truncated_texts": 7,
        "model_loads": 2,
        "mostly_unknown_texts": 0,
        "encode_seconds": 45.25,
        "peak_rss_mib": 812.5,
    }


def test_stats_without_metrics_are_zero() -> None:
    stats = RunSummary({"read": 3, "written": 3}, 1.23456).stats()
    assert stats == {"seconds": 1.235, "texts_embedded": 0, "docs_per_s": 0.0,
                     "tokens_per_s": 0.0, "real_tokens": 0, "padded_tokens": 0,
                     "padding_ratio": 0.0, "micro_batches": 0, "truncated_texts": 0,
                     "model_loads": 0, "mostly_unknown_texts": 0, "encode_seconds": 0.0,
                     "peak_rss_mib": 0.0}


def test_rates_round_as_documented() -> None:
    s = RunSummary({"embedded": 10}, 3.0, {"real_tokens": 100, "padded_tokens": 300,
                                            "encode_ms": 1234}).stats()
    assert (s["docs_per_s"], s["tokens_per_s"], s["padding_ratio"], s["encode_seconds"]) == (
        3.33, 33.3, 0.6667, 1.234)


def test_zero_seconds_does_not_divide_by_zero() -> None:
    s = RunSummary({"embedded": 0}, 0.0, {"real_tokens": 0}).stats()
    assert (s["seconds"], s["docs_per_s"], s["tokens_per_s"]) == (0.0, 0.0, 0.0)


def test_render_of_an_embedding_run() -> None:
    text = RunSummary(COUNTS, 50.0, METRICS).render()
    assert text.splitlines() == [
        "beam-e5 summary",
        "  read 12,345 = written 10,000 + exact duplicates 2,000 + semantic duplicates 300 + "
        "invalid 45",
        "  embedded 10,300 docs, 1,234,567 tokens (7 truncated) in 50.0 s",
        "  206.0 docs/s, 24,691 tokens/s, padding ratio 17.7%, 1,024 micro-batches",
        "  encoder calls 45.2 s (90% of the job's time, summed over workers; the rest is "
        "reading, start-up, dedupe and writing)",
    ]


def test_render_without_inference() -> None:
    counts = {"read": 5, "written": 4, "exact_duplicates": 0, "semantic_duplicates": 1,
              "invalid": 0, "embedded": 0}
    assert RunSummary(counts, 2.04).render() == (
        "beam-e5 summary\n"
        "  read 5 = written 4 + exact duplicates 0 + semantic duplicates 1 + invalid 0\n"
        "  no inference; 2.0 s")


def test_render_of_a_reembed_run_with_long_documents() -> None:
    counts = {"read": 9, "written": 8, "exact_duplicates": 1, "semantic_duplicates": 0,
              "invalid": 0, "embedded": 3, "chunked_documents": 2, "chunk_rows": 1_500,
              "truncated_documents": 1, "tokens_cut": 4_096,
              # given in another order than the summary prints them
              "deleted": 2, "new": 1, "carried": 5, "reembedded": 2}
    lines = RunSummary(counts, 10.0).render().splitlines()
    assert lines[2:] == [
        "  no inference; 10.0 s",
        "  long documents: 2 chunked into windows (1,500 chunk vectors beside the document "
        "vectors)",
        "  WARNING: 1 documents truncated, 4,096 tokens cut and not embedded (their rows say how "
        "many in tokens_cut); --long-text chunk embeds all of them",
        "  carried: 5",
        "  reembedded: 2",
        "  new: 1",
        "  deleted: 2",
    ]


def test_render_zero_reembed_categories_still_shown() -> None:
    counts = {"read": 1, "written": 1, "exact_duplicates": 0, "semantic_duplicates": 0,
              "invalid": 0, "embedded": 0, "carried": 1, "new": 0, "reembedded": 0, "deleted": 0}
    assert RunSummary(counts, 1.0).render().splitlines()[3:] == [
        "  carried: 1", "  reembedded: 0", "  new: 0", "  deleted: 0"]


def test_tokens_cut_alone_triggers_the_truncation_warning() -> None:
    counts = {"read": 1, "written": 1, "exact_duplicates": 0, "semantic_duplicates": 0,
              "invalid": 0, "embedded": 1, "tokens_cut": 12}
    assert RunSummary(counts, 1.0).render().splitlines()[3] == (
        "  WARNING: 0 documents truncated, 12 tokens cut and not embedded (their rows say how "
        "many in tokens_cut); --long-text chunk embeds all of them")


def test_no_warning_for_a_healthy_run() -> None:
    summary = RunSummary(COUNTS, 50.0, METRICS)
    assert summary.warnings() == []
    assert "warning" not in summary.render().lower()


def test_warnings_for_an_empty_run_and_unknown_tokens() -> None:
    counts = {"read": 0, "written": 0, "exact_duplicates": 0, "semantic_duplicates": 0,
              "invalid": 0, "embedded": 0}
    summary = RunSummary(counts, 1.0, {"mostly_unknown_texts": 1_234})
    empty = ("no document was written: is --input an empty export? (a --publish pointer is "
             "never moved to an empty run)")
    unknown = ("1,234 embedded texts are mostly unknown tokens (the tokenizer's [UNK]): their "
               "vectors say little. Is the model's vocabulary right for this text (language, "
               "script)?")
    assert summary.warnings() == [empty, unknown]
    assert summary.render().splitlines()[-2:] == [f"  warning: {empty}", f"  warning: {unknown}"]


def test_missing_written_count_is_warned_about() -> None:
    [warning] = RunSummary({}, 1.0).warnings()
    assert warning.startswith("no document was written: ")


def test_render_needs_the_balance_counts() -> None:
    with pytest.raises(KeyError, match="exact_duplicates"):
        RunSummary({"read": 1, "written": 1}, 1.0).render()


# ----------------------------------------------------------------- Beam metrics helpers


class _Report(beam.DoFn):
    """Reports metrics as the encoder and RunInference do, one update per element."""

    def __init__(self, step: str) -> None:
        self._step = step

    def process(self, n: int):
        Metrics.counter("beam_e5", "texts_embedded").inc()
        Metrics.counter("beam_e5", "real_tokens").inc(n)
        Metrics.counter("beam_e5", "records_read").inc()  # not a summed metric
        Metrics.counter("elsewhere", "real_tokens").inc(1_000)  # another namespace
        Metrics.distribution("beam_e5", "encode_batch_ms").update(10 * n)
        if self._step == "first":
            Metrics.distribution("beam_e5", "load_model_latency_milli_secs").update(500 + n)
        yield n


@pytest.fixture(scope="module")
def pipeline_result():
    p = beam.Pipeline(runner="DirectRunner")
    nums = p | beam.Create([1, 2, 3, 4])
    _ = nums | "First" >> beam.ParDo(_Report("first"))
    _ = nums | "Second" >> beam.ParDo(_Report("second"))
    result = p.run()
    result.wait_until_finish()
    return result


def test_counter_values_sum_over_steps_in_one_namespace(pipeline_result) -> None:
    assert counter_values(pipeline_result) == {"texts_embedded": 8, "real_tokens": 20,
                                               "records_read": 8}
    assert counter_values(pipeline_result, "elsewhere") == {"real_tokens": 8_000}
    assert counter_values(pipeline_result, "nothing-here") == {}


def test_distribution_helpers(pipeline_result) -> None:
    assert model_loads(pipeline_result) == 4  # count of load-latency updates, only in "First"
    assert encode_ms(pipeline_result) == 200  # sum of 10*n over 1..4, in both steps
    assert (model_loads(pipeline_result, "elsewhere"),
            encode_ms(pipeline_result, "elsewhere")) == (0, 0)


def test_summarize_a_real_pipeline(pipeline_result) -> None:
    counts = {"read": 4, "written": 4, "exact_duplicates": 0, "semantic_duplicates": 0,
              "invalid": 0, "embedded": 4}
    summary = summarize(pipeline_result, counts, 2.0)
    assert summary.counts == counts and summary.seconds == 2.0
    assert summary.metrics == {name: 0 for name in SUMMED_METRICS} | {
        "texts_embedded": 8, "real_tokens": 20, "model_loads": 4, "encode_ms": 200}
    assert summary.stats()["tokens_per_s"] == 10.0
    assert summary.stats()["encode_seconds"] == 0.2


class _FakeResult:
    """A runner that reports only attempted values (committed is None)."""

    def __init__(self, counters: list[MetricResult], distributions: list[MetricResult]) -> None:
        self._query = {"counters": counters, "distributions": distributions, "gauges": []}

    def metrics(self) -> Any:
        return self

    def query(self, _filter: Any) -> dict[str, list[MetricResult]]:
        return self._query


def _result(name: str, committed: Any, attempted: Any, step: str = "s") -> MetricResult:
    return MetricResult(MetricKey(step, MetricName("beam_e5", name)), committed, attempted)


def test_attempted_values_are_used_where_nothing_is_committed() -> None:
    counters = [_result("real_tokens", None, 7), _result("real_tokens", 5, 99, step="t"),
                _result("micro_batches", None, None)]
    dist = DistributionResult(DistributionData(300, 3, 50, 150))
    fake = _FakeResult(counters, [_result("encode_batch_ms", None, dist),
                                  _result("encode_batch_ms", None, None)])
    assert counter_values(fake) == {"real_tokens": 12, "micro_batches": 0}
    assert encode_ms(fake) == 300
    assert model_loads(fake) == 3  # the fake ignores the name filter: same distribution


def test_peak_memory_line_and_measure() -> None:
    counts = {"read": 1, "written": 1, "exact_duplicates": 0, "semantic_duplicates": 0,
              "invalid": 0, "embedded": 0}
    assert RunSummary(counts, 1.0, peak_rss_mib=2048.4).render().splitlines()[-1] == (
        "  peak memory 2,048 MiB (resident; this process or its largest child worker)")
    assert "peak memory" not in RunSummary(counts, 1.0).render()  # not measured
    before = peak_rss_mib()
    ballast = bytearray(64 << 20)  # touched: 64 MiB more resident than before, at least
    ballast[::4096] = b"x" * len(ballast[::4096])
    assert peak_rss_mib() >= before and peak_rss_mib() >= 64
