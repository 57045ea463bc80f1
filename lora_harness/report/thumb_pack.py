"""Thumbnail packs: the report thumbnails one process made while judging, in one append-only file.

A pytest run makes one JPEG thumbnail per case. Creating one new file per case was most of the plugin's
per-case overhead (0.05-0.5 ms for the `open` of a new file on a loaded disk, against ~0.07 ms to encode a
small JPEG), so each writer process (the controller or an xdist worker) appends its thumbnails to one pack,
`<run>/thumbs/<size>/<run id>.<worker>.thumbs`, named like its score file, so packs of different sessions and
machines never collide and `merge` copies them as they are.

A pack is a sequence of records, each a fixed header, the thumbnail's file name (UTF-8) and the JPEG bytes:

    magic b"LHT1" | name length (u16) | data length (u32) | made at (u64, ns since the epoch) | name | data

little-endian. "Made at" plays the part of a thumbnail file's mtime: an entry is fresh when it is not older
than its image. Records are only appended (one `write` per batch, no fsync: a thumbnail is a cache that the
report can always make again from the image); a reader takes the newest record of each name.

Why not tar or zip: tar (stdlib `tarfile`) costs 35 us of Python per member to write (67 us with the PAX
header that sub-second times need), against ~2 us here, and that time holds the GIL the tests run under;
zip writes its index only when closed, so a killed process would leave a pack nothing can read.

Crash safety: a process killed mid-write leaves a torn last record. Readers stop there with a warning naming
the pack and the byte offset; every record before it is intact and used, and the thumbnails of the torn
tail are made from their images by the report, as for a run without packs.
"""

from __future__ import annotations

import mmap
import os
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

PACK_SUFFIX = ".thumbs"
MAGIC = b"LHT1"
HEADER = struct.Struct("<4sHIQ")


@dataclass(frozen=True)
class PackedThumb:
    """Where one thumbnail's JPEG bytes lie in a pack."""

    pack: Path
    offset: int
    size: int
    made_ns: int

    def read(self) -> bytes:
        with open(self.pack, "rb") as handle:
            handle.seek(self.offset)
            data = handle.read(self.size)
        if len(data) != self.size:
            raise OSError(f"{self.pack}: thumbnail at byte {self.offset} is cut short (the pack changed since it was read)")
        return data


def record(name: str, data: bytes, made_ns: int) -> bytes:
    """One record, ready to append."""
    encoded = name.encode("utf-8")
    return HEADER.pack(MAGIC, len(encoded), len(data), made_ns) + encoded + data


def pack_path(folder: Path, pack_name: str) -> Path:
    return Path(folder) / f"{pack_name}{PACK_SUFFIX}"


def read_pack(path: Path) -> tuple[dict[str, PackedThumb], str | None]:
    """The newest record of each name in one pack, and a problem (a torn or unreadable tail) or None.

    Records before the problem are returned: a pack is only ever appended to, so they are complete."""
    path = Path(path)
    entries: dict[str, PackedThumb] = {}
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size == 0:
            return entries, None
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as view:
            offset = 0
            while offset < size:
                if offset + HEADER.size > size:
                    return entries, f"{path}: torn last record at byte {offset} (a process killed mid-write?); ignored"
                magic, name_len, data_len, made_ns = HEADER.unpack_from(view, offset)
                if magic != MAGIC:
                    return entries, f"{path}: not a thumbnail record at byte {offset}; the rest of the pack is ignored"
                start = offset + HEADER.size + name_len
                end = start + data_len
                if end > size:
                    return entries, f"{path}: torn last record at byte {offset} (a process killed mid-write?); ignored"
                try:
                    name = view[offset + HEADER.size:start].decode("utf-8")
                except UnicodeDecodeError:
                    return entries, f"{path}: unreadable record name at byte {offset}; the rest of the pack is ignored"
                known = entries.get(name)
                if known is None or made_ns >= known.made_ns:
                    entries[name] = PackedThumb(path, start, data_len, made_ns)
                offset = end
    return entries, None


def read_packs(folder: Path) -> dict[str, PackedThumb]:
    """The newest packed thumbnail of each name over every pack in `folder` (none when it does not exist).
    A torn or unreadable tail is a warning, never an error: the report makes those thumbnails again."""
    found: dict[str, PackedThumb] = {}
    try:
        packs = sorted(p for p in Path(folder).iterdir() if p.name.endswith(PACK_SUFFIX))
    except OSError:
        return found
    for path in packs:
        try:
            entries, problem = read_pack(path)
        except OSError as exc:
            warnings.warn(f"{path}: cannot read thumbnail pack ({exc}); its thumbnails are made again", stacklevel=2)
            continue
        if problem:
            warnings.warn(problem, stacklevel=2)
        for name, entry in entries.items():
            known = found.get(name)
            if known is None or entry.made_ns >= known.made_ns:
                found[name] = entry
    return found


class PackAppender:
    """Appends records to one pack (opened on the first write, unbuffered: each `append` is one `write`).

    A failed append (a full disk) is cut off again, so later records never follow a torn one; when even that
    fails, the appender stops (raises on every later append) and readers see a torn tail."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._handle = None
        self._broken: str | None = None

    def append(self, records: bytes) -> None:
        if self._broken:
            raise OSError(self._broken)
        if not records:
            return
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = open(self.path, "ab", buffering=0)
        start = os.fstat(self._handle.fileno()).st_size
        try:
            view = memoryview(records)
            while view:  # a raw write may be partial
                written = self._handle.write(view)
                view = view[written:]
        except OSError as exc:
            try:
                os.ftruncate(self._handle.fileno(), start)
            except OSError:
                self._broken = f"{self.path}: a failed write could not be undone ({exc}); no more thumbnails here"
            raise

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
