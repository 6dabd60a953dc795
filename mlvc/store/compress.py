"""Per-object zstd compression, kept only where it pays.

Structured objects (trees, runs, envs) are never compressed, so reading them never loads
the codec. Any other record is compressed when a level-1 trial on its first 64 KiB saves more than 10%, and is
not even tried when its first 1 KiB holds over 200 distinct byte values (random-looking,
about 5 us instead of 70 us for a codec call on a small file); text,
CSV, JSON and code do (about 4-6x here), random-looking float weights do not (1.08x at best),
so they stay raw and reads of them cost nothing extra. Within one large file the trial is
skipped after a run of incompressible chunks and retried now and then, so a 2 GiB weights
file pays for about a dozen trials, not thirty thousand.

The codec is pyarrow's zstd (already a dependency): 350 MB/s compressing CSV and 2.4 GB/s
rejecting random bytes at level 1 on these machines, about what the ``zstandard`` package
does, so no new dependency is needed. pyarrow is imported on first use only.
"""

from __future__ import annotations

import struct
import threading

SAMPLE = 64 << 10  # bytes tried before compressing a whole record
MIN_SIZE = 256  # smaller records never save enough to matter
MIN_SAVING = 0.10  # keep the compressed form only if it is at least 10% smaller
LEVEL = 1
GIVE_UP_AFTER = 8  # consecutive incompressible chunks of one file before trials go sparse
RETRY_EVERY = 64  # then one trial every this many chunks
SIZE = struct.Struct("<Q")  # the raw size, before the zstd frame
# A cheaper first look than any codec call: 1 KiB of random bytes or float weights shows
# ~250 distinct byte values, text and CSV under 100. Past this many, do not even try.
PROBE, RANDOM_LOOKING = 1024, 200
# Trees, runs and envs (msgpack [kind, version, body]) stay raw: every command reads them,
# and decompressing would make each command import pyarrow (0.1-0.8 s here) to save little
# (a tree is mostly random 32-byte ids). A blob that starts with this byte stays raw too.
STRUCTURED = b"\x93"

_local = threading.local()


def _codec():
    codec = getattr(_local, "codec", None)
    if codec is None:
        import pyarrow as pa

        codec = _local.codec = pa.Codec("zstd", compression_level=LEVEL)
    return codec


def compress(data: bytes | memoryview) -> bytes | None:
    """The zstd payload (raw size + frame) if it saves more than 10%, else None."""
    n = len(data)
    if n < MIN_SIZE or bytes(data[:1]) == STRUCTURED:
        return None
    if n >= PROBE and len(set(data[:PROBE])) > RANDOM_LOOKING:
        return None
    codec = _codec()
    if n > SAMPLE:
        trial = codec.compress(data[:SAMPLE], asbytes=True)
        if len(trial) > SAMPLE * (1 - MIN_SAVING):
            return None
    frame = codec.compress(data, asbytes=True)
    if len(frame) + SIZE.size > n * (1 - MIN_SAVING):
        return None
    return SIZE.pack(n) + frame


def decompress(payload: bytes | memoryview, limit: int, asbytes: bool = True) -> bytes:
    """The raw bytes of a zstd payload; raises ValueError if damaged or over ``limit``.
    ``asbytes=False``: as the codec's ``pyarrow.Buffer`` (bytes-like), saving a copy."""
    if len(payload) < SIZE.size:
        raise ValueError("compressed record too short")
    (n,) = SIZE.unpack_from(payload)
    if n > limit:
        raise ValueError(f"compressed record claims {n} bytes, over the {limit} limit")
    try:
        out = _codec().decompress(memoryview(payload)[SIZE.size :], n, asbytes=asbytes)
    except Exception as e:  # pyarrow raises OSError/ArrowInvalid on damaged frames
        raise ValueError(f"zstd frame does not decompress ({e})") from None
    if len(out) != n:
        raise ValueError(f"decompressed to {len(out)} bytes, expected {n}")
    return out


def raw_size(payload: bytes | memoryview) -> int:
    return SIZE.unpack_from(payload)[0]


class Adaptive:
    """Compression decisions for the chunks of one file: stop trying where it never pays."""

    def __init__(self):
        self.misses = 0
        self.seen = 0

    def compress(self, data: bytes | memoryview) -> bytes | None:
        self.seen += 1
        if self.misses >= GIVE_UP_AFTER and self.seen % RETRY_EVERY:
            return None
        out = compress(data)
        self.misses = 0 if out is not None else self.misses + 1
        return out
