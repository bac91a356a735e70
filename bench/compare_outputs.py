"""Whether two beam-e5 output folders hold the same result (an optimisation must not change it).

    python bench/compare_outputs.py out-main/out-10000 out-branch/out-10000

Compares the vectors and duplicates Parquet files row by row keyed by ``(id, chunk)``
(every column; the embedding as float32 bytes, so bit for bit), the manifest's counts and
the error lines. Prints what differs and exits 1 unless everything is equal.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq


def rows_by_key(folder: str, prefix: str) -> dict[tuple, dict]:
    files = sorted(Path(folder).glob(f"{prefix}-*.parquet"))
    rows: dict[tuple, dict] = {}
    for row in (pq.read_table(files).to_pylist() if files else []):
        key = (row.get("id"), row.get("chunk"))
        if key in rows:
            raise SystemExit(f"{folder}: {prefix} holds {key} twice")
        if row.get("embedding") is not None:
            row["embedding"] = np.asarray(row["embedding"], dtype=np.float32).tobytes()
        rows[key] = row
    return rows


def error_lines(folder: str) -> list[str]:
    return sorted(line for f in sorted(Path(folder).glob("errors-*.jsonl"))
                  for line in f.read_text().splitlines())


def main() -> None:
    a, b = sys.argv[1:3]
    same = True
    for prefix in ("vectors", "duplicates"):
        ra, rb = rows_by_key(a, prefix), rows_by_key(b, prefix)
        differing = sum(ra[k] != rb[k] for k in ra.keys() & rb.keys())
        print(f"{prefix}: {len(ra)} vs {len(rb)} rows, same keys {ra.keys() == rb.keys()}, "
              f"rows differing {differing}")
        same &= ra.keys() == rb.keys() and not differing
    counts = [json.loads((Path(d) / "manifest.json").read_text())["counts"] for d in (a, b)]
    print("counts", "equal" if counts[0] == counts[1] else "DIFFER", counts[0], counts[1])
    errors = [error_lines(d) for d in (a, b)]
    print("errors", len(errors[0]), len(errors[1]), "equal" if errors[0] == errors[1] else "DIFFER")
    same &= counts[0] == counts[1] and errors[0] == errors[1]
    print("IDENTICAL" if same else "NOT IDENTICAL")
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
