"""gzip input read the way ``gzip -d`` reads it (members, zero padding, trailing garbage)."""

from __future__ import annotations

import gzip
import io
import logging
import shutil
import subprocess
from pathlib import Path

import pytest

from beam_e5.io.compressed import GzipMembers
from beam_e5.io.readers import ReaderConfig, plan_splits, read_split, validate_reader_config

LINES = b"".join(b'{"id": "d%d", "text": "document %d"}\n' % (i, i) for i in range(50))


def members(data: bytes, read_size: int = 7) -> tuple[bytes, GzipMembers]:
    stream = GzipMembers(io.BytesIO(data), "mem.gz")
    out = b""
    while chunk := stream.read(read_size):
        out += chunk
    return out, stream


@pytest.mark.parametrize("tail, garbage", [
    (b"", 0), (b"\x00" * 100, 0), (b"trailing junk \xff\x00", 16), (b"x", 1)])
def test_members_then_padding_or_garbage(tail: bytes, garbage: int) -> None:
    data = gzip.compress(LINES[:300]) + gzip.compress(LINES[300:]) + tail
    out, stream = members(data)
    assert out == LINES
    assert stream.complete and stream.trailing_garbage == garbage


def test_a_member_cut_short_is_not_complete() -> None:
    whole = gzip.compress(LINES)
    out, stream = members(whole[: len(whole) // 2], read_size=-1)
    assert LINES.startswith(out) and len(out) < len(LINES)
    assert not stream.complete


def test_what_gzip_d_keeps_is_what_we_keep(tmp_path: Path) -> None:
    if shutil.which("gzip") is None:
        pytest.skip("no gzip binary")
    path = tmp_path / "t.gz"
    path.write_bytes(gzip.compress(LINES) + b"\x1f junk after the member")
    run = subprocess.run(["gzip", "-dc", str(path)], capture_output=True)
    assert run.returncode == 2 and b"trailing garbage ignored" in run.stderr  # a warning
    assert members(path.read_bytes())[0] == run.stdout == LINES


def test_trailing_garbage_after_a_complete_gzip_is_read_with_a_warning(tmp_path: Path,
                                                                        caplog) -> None:
    path = tmp_path / "c.jsonl.gz"
    path.write_bytes(gzip.compress(LINES) + b"<html>proxy error page</html>\n")
    [f] = validate_reader_config(ReaderConfig(str(path))).files  # not refused any more
    caplog.set_level(logging.WARNING)
    out = [item for s in plan_splits(f) for item in read_split(s)]
    assert [kind for kind, _ in out] == ["doc"] * 50  # every record, no file error
    [warning] = [r.getMessage() for r in caplog.records if "trailing garbage" in r.getMessage()]
    assert str(path) in warning and "30 bytes" in warning
