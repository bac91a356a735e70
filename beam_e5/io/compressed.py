"""Opening input files: gzip read the way ``gzip -d`` reads it.

Beam's ``CompressedFile`` treats whatever follows a complete gzip member as the start of
another and fails on it ("incorrect header check"), so a download with a few stray bytes
appended (a proxy's padding, a concatenated log line) lost the whole file. ``gzip -d``
decompresses every member, ignores zero padding after the last one, and ignores other
trailing bytes with a warning ("decompression OK, trailing garbage ignored");
:class:`GzipMembers` does the same, and logs the warning with the file's name. Other
compressions (bzip2, xz, zstd, deflate) are read by Beam as before.
"""

from __future__ import annotations

import logging
import zlib
from typing import BinaryIO

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

__all__ = ["GzipMembers", "open_input"]

LOG = logging.getLogger(__name__)
_GZIP_MAGIC = b"\x1f\x8b"
_IN_CHUNK = 1 << 20
_OUT_CHUNK = 8 << 20  # decompressed bytes per step: a small bomb is never held whole


class GzipMembers:
    """A read-only binary stream over gzip data: members one after another; after the last,
    zero padding is ignored and other bytes are ignored with a warning (``gzip -d``).

    ``complete``: the data ended at the end of a member (False for a file cut short);
    ``trailing_garbage``: how many bytes were ignored after the last member.
    """

    def __init__(self, raw: BinaryIO, name: str, warn: bool = True) -> None:
        self._raw = raw
        self._name = name
        self._warn = warn
        self._d = zlib.decompressobj(31)
        self._out = bytearray()
        self._done = False
        self.trailing_garbage = 0

    @property
    def complete(self) -> bool:
        return self._d.eof

    def read(self, n: int = -1) -> bytes:
        while not self._done and (n < 0 or len(self._out) < n):
            self._step()
        n = len(self._out) if n < 0 else min(n, len(self._out))
        chunk = bytes(self._out[:n])
        del self._out[:n]
        return chunk

    def _step(self) -> None:
        d = self._d
        if d.unconsumed_tail:
            self._out += d.decompress(d.unconsumed_tail, _OUT_CHUNK)
        elif d.eof:
            self._after_member(d.unused_data)
        else:
            data = self._raw.read(_IN_CHUNK)
            if data:
                self._out += d.decompress(data, _OUT_CHUNK)
            else:  # the end of the file: a cut-off member gives what it has (complete False)
                self._out += d.flush()
                self._done = True

    def _after_member(self, rest: bytes) -> None:
        while len(rest) < len(_GZIP_MAGIC):
            more = self._raw.read(_IN_CHUNK)
            if not more:
                break
            rest += more
        if rest.startswith(_GZIP_MAGIC):
            self._d = zlib.decompressobj(31)
            self._out += self._d.decompress(rest, _OUT_CHUNK)
            return
        self._done = True
        zeros = not rest.strip(b"\x00")
        size = len(rest)
        while more := self._raw.read(_IN_CHUNK):
            zeros = zeros and not more.strip(b"\x00")
            size += len(more)
        if size and not zeros:
            self.trailing_garbage = size
            if self._warn:
                LOG.warning("beam-e5: %s: %d bytes after the end of its gzip data are not gzip; "
                            "they were ignored and the data before them read, as gzip -d "
                            "does ('trailing garbage ignored')", self._name, size)

    def close(self) -> None:
        self._raw.close()

    def __enter__(self) -> "GzipMembers":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_input(path: str, warn: bool = True):
    """Open an input file for reading, decompressed by its extension (gzip: GzipMembers)."""
    if CompressionTypes.detect_compression_type(path) == CompressionTypes.GZIP:
        raw = FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
        return GzipMembers(raw, path, warn)
    return FileSystems.open(path, compression_type=CompressionTypes.AUTO)
