"""Small helpers for running real Beam pipelines in tests."""

from __future__ import annotations

from apache_beam.metrics.metric import MetricsFilter


def metric_counter(result, name: str, namespace: str = "beam_e5") -> int:
    res = result.metrics().query(MetricsFilter().with_namespace(namespace).with_name(name))
    return sum(c.committed for c in res["counters"])


def metric_distribution_count(result, name: str, namespace: str = "beam_e5") -> int:
    res = result.metrics().query(MetricsFilter().with_namespace(namespace).with_name(name))
    return sum(d.committed.count for d in res["distributions"] if d.committed is not None)
