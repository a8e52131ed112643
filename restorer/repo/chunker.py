"""Content-defined chunking with the compiled FastCDC; the pure-Python fallback is refused."""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

from restorer.errors import RepositoryError

try:  # the Cython build; importing `pyfastcdc` alone could silently give the 10 MB/s fallback
    from pyfastcdc.cy import FastCDC
except ImportError as _e:  # pragma: no cover - depends on the wheel
    raise RepositoryError(
        "the compiled FastCDC chunker (pyfastcdc's Cython extension) is not importable",
        hint="reinstall with `pip install --force-reinstall pyfastcdc` on a supported platform",
    ) from _e

# FastCDC's mean chunk is avg_size + min_size (cut-point skipping), so these give ~1 MiB.
AVG_SIZE = 512 * 1024
MIN_SIZE = 512 * 1024
MAX_SIZE = 8 * 1024 * 1024


class Chunker:
    def __init__(self, seed: int, avg: int = AVG_SIZE, min_: int = MIN_SIZE,
                 max_: int = MAX_SIZE) -> None:
        self.min_size = min_
        self._cdc = FastCDC(avg, min_size=min_, max_size=max_, seed=seed)

    def chunks(self, stream: BinaryIO) -> Iterator[bytes]:
        """Chunks of `stream` as independent byte strings (safe to hand to other threads)."""
        for c in self._cdc.cut_stream(stream):
            yield bytes(c.data)
