"""Whether two beam-e5 output folders hold the same result (an optimisation must not change it).

    python bench/compare_outputs.py out-main/out-10000 out-branch/out-10000
    python bench/compare_outputs.py old new --min-cosine 0.999999 --similarity-atol 1e-6

Compares the vectors and duplicates Parquet files row by row keyed by ``(id, chunk)``, the
manifest's counts and the error lines. By default every column is compared exactly (the
embedding as float32 bytes, so bit for bit). With ``--min-cosine`` an embedding matches where
its cosine to the other side's is at least that, and with ``--similarity-atol`` a duplicate's
``similarity`` where it is within that of the other's: for a change that moves the float
rounding (another summation order) but must not move anything else; every other column,
the keys, the counts and the errors must still be equal. Prints what differs, the lowest
cosine seen, and exits 1 unless everything matches.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

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
            row["embedding"] = np.asarray(row["embedding"], dtype=np.float32)
        rows[key] = row
    return rows


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    return float(a @ b) / (na * nb) if na and nb else float(np.array_equal(a, b))


def rows_match(a: dict, b: dict, min_cosine: Optional[float], similarity_atol: float,
               lowest: list[float]) -> bool:
    """Every column equal, but the embedding (bit for bit, or within ``min_cosine``) and
    the similarity (within ``similarity_atol``); ``lowest[0]`` keeps the lowest cosine."""
    if a.keys() != b.keys():
        return False
    for name in a:
        x, y = a[name], b[name]
        if name == "embedding" and x is not None and y is not None:
            if min_cosine is None:
                if x.tobytes() != y.tobytes():
                    return False
                continue
            c = cosine(x, y)
            lowest[0] = min(lowest[0], c)
            if c < min_cosine:
                return False
        elif name == "similarity" and x is not None and y is not None:
            if abs(x - y) > similarity_atol:
                return False
        elif x != y:
            return False
    return True


def error_lines(folder: str) -> list[str]:
    return sorted(line for f in sorted(Path(folder).glob("errors-*.jsonl"))
                  for line in f.read_text().splitlines())


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--min-cosine", type=float, default=None,
                    help="embeddings match at this cosine or above (default: bit for bit)")
    ap.add_argument("--similarity-atol", type=float, default=0.0,
                    help="duplicates' similarity may differ by this much (default 0)")
    args = ap.parse_args(argv)
    same = True
    lowest = [1.0]
    for prefix in ("vectors", "duplicates"):
        ra, rb = rows_by_key(args.a, prefix), rows_by_key(args.b, prefix)
        differing = sum(not rows_match(ra[k], rb[k], args.min_cosine, args.similarity_atol,
                                       lowest) for k in ra.keys() & rb.keys())
        print(f"{prefix}: {len(ra)} vs {len(rb)} rows, same keys {ra.keys() == rb.keys()}, "
              f"rows differing {differing}")
        same &= ra.keys() == rb.keys() and not differing
    if args.min_cosine is not None:
        print(f"lowest embedding cosine {lowest[0]:.9f} (at least {args.min_cosine} asked)")
    counts = [json.loads((Path(d) / "manifest.json").read_text())["counts"]
              for d in (args.a, args.b)]
    print("counts", "equal" if counts[0] == counts[1] else "DIFFER", counts[0], counts[1])
    errors = [error_lines(d) for d in (args.a, args.b)]
    print("errors", len(errors[0]), len(errors[1]), "equal" if errors[0] == errors[1] else "DIFFER")
    same &= counts[0] == counts[1] and errors[0] == errors[1]
    exact = args.min_cosine is None and args.similarity_atol == 0
    print(("IDENTICAL" if exact else "MATCH within tolerance") if same
          else ("NOT IDENTICAL" if exact else "DIFFER beyond tolerance"))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
