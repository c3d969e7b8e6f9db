"""Reading trace files: the lines of a plain or gzip ``traces.json``, salvaging what a
damaged gzip still holds, with a progress bar on long reads.

Read problems are recorded on the ``stats`` object (``load.ParseStats``: ``stream_error``,
``unread_bytes``; ``read_failed`` for an OS read error, which the cache must not keep) instead
of raised.
"""

from __future__ import annotations

import os
import sys
import zlib
from pathlib import Path
from typing import Any, Callable, Iterator

#: Loads of more bytes than this show a progress bar (over files, or over one file's bytes)
#: in an interactive terminal or notebook, unless TQDM_DISABLE is set.
PROGRESS_MIN_BYTES = 4 * 2**20
#: Compressed bytes read per step from a .gz (also the resolution of the salvage search).
GZIP_CHUNK_BYTES = 1 << 16


def show_progress(nbytes: int) -> bool:
    """A bar for a load of ``nbytes``: long enough, someone watching (a terminal or a
    notebook kernel), and not silenced by TQDM_DISABLE (the Makefile, nbval and CI set it)."""
    return (nbytes >= PROGRESS_MIN_BYTES and not os.environ.get("TQDM_DISABLE")
            and (sys.stderr.isatty() or "ipykernel" in sys.modules))


def _progress(path: Path) -> Any:
    size = path.stat().st_size
    if not show_progress(size):
        return None
    from tqdm.auto import tqdm
    return tqdm(total=size, unit="B", unit_scale=True, desc=path.parent.name, leave=False)


def _decode_prefix(d: Any, chunk: bytes) -> tuple[bytes, int]:
    """The output of the longest prefix of ``chunk`` that ``d`` (a zlib decompressor, left
    untouched) decodes without error, and that prefix's length (binary search)."""
    lo, hi, out = 0, len(chunk), b""
    while lo < hi:
        mid = (lo + hi + 1) // 2
        trial = d.copy()
        try:
            data = trial.decompress(chunk[:mid])
        except zlib.error:
            hi = mid - 1
        else:
            lo, out = mid, data
    return out, lo


def _gzip_blocks(fh: Any, stats: Any) -> Iterator[bytes]:
    """Decompressed data of a gzip file (all members), as far as it can be decoded.

    On corrupt data the readable part before the bad byte is kept, stats.stream_error says
    where, stats.unread_bytes counts the compressed bytes left; a stream that ends early
    (truncated file) keeps everything and says so. Zero padding between members is skipped."""
    size = os.fstat(fh.fileno()).st_size
    d, pos = zlib.decompressobj(wbits=31), 0
    while chunk := fh.read(GZIP_CHUNK_BYTES):
        while chunk:
            if d.eof:                                   # next member (or padding)
                rest = chunk.lstrip(b"\0")
                pos, chunk = pos + len(chunk) - len(rest), rest
                if not chunk:
                    break
                d = zlib.decompressobj(wbits=31)
            saved = d.copy()
            try:
                out = d.decompress(chunk)
            except zlib.error as e:
                data, good = _decode_prefix(saved, chunk)
                yield data
                stats.unread_bytes = size - (pos + good)
                stats.stream_error = (f"corrupt gzip data at compressed byte {pos + good} ({e}): "
                                      f"the readable part before it was loaded")
                return
            yield out
            used = len(chunk) - len(d.unused_data) if d.eof else len(chunk)
            pos, chunk = pos + used, (d.unused_data if d.eof else b"")
    if not d.eof:
        stats.stream_error = ("truncated gzip stream: the file ends before the gzip end marker; "
                              "the readable part was loaded")


def _plain_blocks(fh: Any, stats: Any) -> Iterator[bytes]:
    while block := fh.read(GZIP_CHUNK_BYTES * 16):
        yield block


def iter_lines(path: Path, stats: Any, progress: bool = True) -> Iterator[bytes]:
    """The lines of a trace file (newline kept; the last one may lack it), decompressing a
    .gz; read problems are recorded in ``stats`` instead of raised. ``progress``: a bar over
    the file's bytes when it is large (see show_progress)."""
    blocks: Callable[[Any, Any], Iterator[bytes]] = (
        _gzip_blocks if path.suffix == ".gz" else _plain_blocks)
    pending: list[bytes] = []              # pieces of a line longer than a block
    bar = None
    try:
        bar = _progress(path) if progress else None
        with open(path, "rb") as fh:
            for block in blocks(fh, stats):
                if bar is not None:
                    bar.update(len(block))
                if b"\n" not in block:
                    pending.append(block)
                    continue
                parts = block.split(b"\n")
                pending.append(parts[0])
                yield b"".join(pending) + b"\n"
                for p in parts[1:-1]:
                    yield p + b"\n"
                pending = [parts[-1]]
    except OSError as e:
        stats.stream_error = f"read error: {e.strerror or e}"
        stats.read_failed = True
    if last := b"".join(pending):
        yield last
    if bar is not None:
        bar.close()
