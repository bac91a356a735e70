"""How many documents a run will read, estimated before it starts (for progress lines).

Parquet files say their row count in their footer; for line formats (JSONL, CSV, TSV, text)
the first ``SAMPLE_BYTES`` of the first file are counted and the rate extrapolated to the
total size. Compressed files give no estimate (their sizes say little), nor does an
unreadable sample: the progress lines then show counts and rates without a total or ETA.
"""

from __future__ import annotations

import logging
from typing import Optional, Sequence

import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from beam_e5.io.reader_validation import InputFile

LOG = logging.getLogger(__name__)
SAMPLE_BYTES = 1 << 20
LINE_FORMATS = ("jsonl", "csv", "tsv", "text")


def extrapolate(total_bytes: int, sample_bytes: int, sample_records: int) -> Optional[int]:
    """Records in ``total_bytes`` at the rate of the sample (None for an empty sample)."""
    if sample_bytes <= 0 or sample_records <= 0:
        return None
    if sample_bytes >= total_bytes:
        return sample_records
    return round(total_bytes * sample_records / sample_bytes)


def estimate_documents(files: Sequence[InputFile]) -> Optional[int]:
    """An estimate of the records in ``files``, or None when there is no good one."""
    if not files or any(f.compressed for f in files):
        return None
    try:
        if all(f.format == "parquet" for f in files):
            total = 0
            for f in files:
                with FileSystems.open(f.path) as fh:
                    total += pq.read_metadata(fh).num_rows
            return total
        if all(f.format in LINE_FORMATS for f in files):
            with FileSystems.open(files[0].path) as fh:
                head = fh.read(SAMPLE_BYTES)
            whole = head if len(head) < SAMPLE_BYTES else head[:head.rfind(b"\n") + 1]
            lines = whole.count(b"\n") + (len(head) < SAMPLE_BYTES and not head.endswith(b"\n"))
            header = 1 if files[0].format in ("csv", "tsv") else 0
            return extrapolate(sum(f.size_bytes for f in files), len(whole), lines - header)
    except (OSError, ValueError) as e:  # the estimate is a nicety: the run reads them anyway
        LOG.info("beam-e5: no estimate of the documents to read (%s)", e)
    return None
