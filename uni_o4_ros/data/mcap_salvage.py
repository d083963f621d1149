"""Read what an MCAP file that was never closed still holds.

A recorder killed or cut off from power (`ros2 bag record`, or our dataset_logger on a Go1 whose
battery died) leaves an MCAP without its summary and footer, and a bag folder without
metadata.yaml: `rosbags` (like `ros2 bag play`) refuses both. Yet every record written before the
cut is intact. This scans the data section front to back, record by record (MCAP spec,
mcap.dev/spec), and yields each message of every complete record; it stops at the first record that
runs past the end of the file or has an impossible opcode (a power cut can leave zeros), and keeps
count of what it could not read. A chunk whose content does not match its CRC or does not
decompress is skipped as a whole: its length is still known, so the scan goes on behind it. So is a
chunk that would decompress out of all proportion to the file (its declared size is checked before
decompressing, and decompression stops at it) or holds records no chunk holds (zeros: opcode 0).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

MAGIC = b"\x89MCAP0\r\n"
HEADER, FOOTER, SCHEMA, CHANNEL, MESSAGE, CHUNK, CHUNK_INDEX, DATA_END = 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x08, 0x0F
LAST_OPCODE = 0x0F  # opcodes above are reserved or private; below 0x01 is invalid


class McapDamaged(ValueError):
    """The file is not MCAP at all (its start is wrong), as opposed to cut short at its end."""


@dataclass(frozen=True)
class Channel:
    topic: str
    schema: str  # the message type, e.g. uni_o4_ros/msg/Transition ("" without a schema)
    encoding: str  # "cdr" for ROS 2
    definition: str = ""  # the schema's text (ros2msg: the .msg the bag was written with, then its dependencies)


@dataclass
class SalvageReport:
    """What a scan read and what it had to leave."""

    size: int = 0  # bytes in the file
    read_to: int = 0  # offset just past the last complete record read
    closed: bool = False  # the data section ended properly (DataEnd or footer record)
    damaged_chunks: list[str] = field(default_factory=list)  # why each skipped chunk was skipped
    orphans: int = 0  # messages whose channel record was lost (in a damaged chunk): not decodable

    @property
    def cut_bytes(self) -> int:
        return 0 if self.closed else self.size - self.read_to


class _Cursor:
    """Little-endian fields of one record's content."""

    def __init__(self, data: bytes | memoryview) -> None:
        self.data, self.at = memoryview(data), 0

    def take(self, n: int) -> memoryview:
        if n < 0 or self.at + n > len(self.data):
            raise struct.error("field runs past its record")
        out = self.data[self.at:self.at + n]
        self.at += n
        return out

    def u16(self) -> int:
        return struct.unpack("<H", self.take(2))[0]

    def u32(self) -> int:
        return struct.unpack("<I", self.take(4))[0]

    def u64(self) -> int:
        return struct.unpack("<Q", self.take(8))[0]

    def string(self) -> str:
        return bytes(self.take(self.u32())).decode()

    def rest(self) -> bytes:
        return bytes(self.take(len(self.data) - self.at))


# A chunk's declared uncompressed size is believed up to this many times its compressed size, or up to
# PLAUSIBLE_ANY_RATIO whatever it compresses to: recorded messages (floats, images) compress a few times, while a
# few KB of zstd can declare (and hold) gigabytes of zeros. Chunks are ~1 MiB (rosbags, rosbag2: 768 KiB), larger
# only for a single large message, which compresses as such data does.
PLAUSIBLE_RATIO = 1000
PLAUSIBLE_ANY_RATIO = 16 << 20
# Records a chunk may hold (MCAP spec: "a collection of Schemas, Channels, and Messages")
IN_CHUNK = (SCHEMA, CHANNEL, MESSAGE)


def _check_declared(size: int, compressed: int) -> None:
    """Refuse a declared uncompressed size no recording has: decompressing it would take memory and time out of
    all proportion to the file (a 65 KB file declaring 2 GiB), so it is damage, said, not something to try."""
    if size > max(PLAUSIBLE_ANY_RATIO, PLAUSIBLE_RATIO * compressed):
        raise ValueError(f"it declares {size} bytes uncompressed from {compressed} compressed "
                         f"({size // max(1, compressed)} times as many; no recording compresses more than "
                         f"{PLAUSIBLE_RATIO} times): not decompressed")
    from .memory import available_memory

    free = available_memory()
    if free is not None and 2 * size > free:  # its records, and the messages parsed from them
        raise ValueError(f"it declares {size} bytes uncompressed, more than the memory available ({free} bytes) "
                         "can hold twice: not decompressed")


def _decompress(data: bytes, compression: str, size: int) -> bytes:
    """The chunk's records, decompressed to at most `size` (+1, to tell a chunk whose output would exceed it):
    a frame that inflates past what the chunk declares is damage, found after `size` bytes, not after all of it."""
    if compression == "":
        return data
    if compression == "zstd":
        try:
            from compression.zstd import ZstdDecompressor  # Python 3.14
        except ImportError:
            from backports.zstd import ZstdDecompressor
        make = ZstdDecompressor
    elif compression == "lz4":
        from lz4.frame import LZ4FrameDecompressor as make
    else:
        raise ValueError(f"unknown chunk compression {compression!r}")
    out = bytearray()
    rest = data
    while rest:  # one frame after another, as zstd.decompress and lz4.frame.decompress read them
        d = make()
        out += d.decompress(rest, max_length=size + 1 - len(out))
        if len(out) > size:
            raise ValueError(f"its content decompresses to more than the {size} bytes it declares")
        if not d.eof:
            raise ValueError("its compressed content ends mid-frame")
        rest = d.unused_data
    return bytes(out)


class McapSalvage:
    """`for channel, log_time_ns, data in McapSalvage(path).messages()`; then `.report`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.report = SalvageReport()
        self.schemas: dict[int, tuple[str, str]] = {}  # id -> (name, definition)
        self.channels: dict[int, Channel] = {}
        # From a closed file's chunk index: where each chunk starts and how long its record is, so that damage
        # to a record's opcode or length costs nothing, and the scan reads on past any other damage.
        self.chunk_index: dict[int, int] = {}

    def messages(self) -> Iterator[tuple[Channel, int, bytes]]:
        with self.path.open("rb") as f:
            self.report.size = self.path.stat().st_size
            magic = f.read(8)
            if magic != MAGIC[:len(magic)]:
                raise McapDamaged(f"{self.path}: not an MCAP file (its first bytes are not MCAP's magic)")
            if len(magic) < 8:
                return  # cut before its magic was out (e.g. the newest file of a split bag): holds nothing
            self.report.read_to = 8
            self._summary(f)
            f.seek(8)
            yield from self._scan(f)

    def _summary(self, f: BinaryIO) -> None:
        """A closed file repeats its schemas and channels in its summary, and indexes its chunks: read first,
        they decode the messages of every chunk even when the chunk that defined them is damaged, and say where
        the next chunk starts when a record's length is damaged. Any doubt about the footer or the summary
        leaves it unused (the scan needs neither)."""
        size = self.report.size
        end = size - 29 - 8  # footer record (opcode, length 20, summary start and offset start, CRC), magic
        if end < 8:
            return
        f.seek(end)
        tail = f.read(29 + 8)
        if tail[-8:] != MAGIC or tail[0] != FOOTER or struct.unpack("<Q", tail[1:9])[0] != 20:
            return
        start = struct.unpack("<Q", tail[9:17])[0]
        if not 8 < start < end:
            return
        f.seek(start)
        summary = f.read(end - start)
        at = 0
        try:
            while at + 9 <= len(summary):
                op, length = summary[at], struct.unpack("<Q", summary[at + 1:at + 9])[0]
                if at + 9 + length > len(summary):
                    return
                if op in (SCHEMA, CHANNEL):
                    list(self._record(op, summary[at + 9:at + 9 + length]))
                elif op == CHUNK_INDEX and length >= 32:  # message start and end time, chunk offset and length
                    offset, record = struct.unpack("<QQ", summary[at + 9 + 16:at + 9 + 32])
                    if 8 <= offset and 9 <= record <= start - offset:
                        self.chunk_index[offset] = record
                at += 9 + length
        except (struct.error, UnicodeDecodeError):
            return

    def _next_chunk(self, start: int) -> int | None:
        """Where the index says the first chunk after `start` begins (None: no index, or no chunk after)."""
        return min((c for c in self.chunk_index if c > start), default=None)

    def _read_on(self, f: BinaryIO, start: int, why: str) -> bool:
        """After damage at `start`: go to the next indexed chunk, saying what was skipped; False if none."""
        if (nxt := self._next_chunk(start)) is None:
            return False
        self.report.damaged_chunks.append(f"record at byte {start}: {why}; read on from the next chunk, at byte "
                                          f"{nxt}")
        f.seek(nxt)
        return True

    def _scan(self, f: BinaryIO) -> Iterator[tuple[Channel, int, bytes]]:
        while True:
            start = f.tell()
            head = f.read(9)
            if len(head) < 9:
                return
            op, length = head[0], struct.unpack("<Q", head[1:])[0]
            if start in self.chunk_index:  # the index knows this record: a damaged opcode or length costs nothing
                op, length = CHUNK, self.chunk_index[start] - 9
            if not HEADER <= op <= LAST_OPCODE or length > self.report.size - start - 9:
                # Cut mid-record, or zeros / garbage from a power cut: nothing after is trusted, unless a closed
                # file's chunk index says where its next chunk starts.
                if self._read_on(f, start, "its opcode or length is damaged"):
                    continue
                return
            content = f.read(length)
            self.report.read_to = start + 9 + length
            if op in (DATA_END, FOOTER):
                if self._read_on(f, start, "the data section cannot end before chunks the index lists"):
                    continue
                self.report.closed = True
                return
            if op == CHUNK:
                damaged = len(self.report.damaged_chunks)
                yield from self._chunk(content, start)
                if len(self.report.damaged_chunks) > damaged and (nxt := self._next_chunk(start)) is not None:
                    f.seek(nxt)  # its length may be the damaged field: the index says where the next one is
                continue
            # Outside a chunk nothing is covered by a CRC: a record that does not parse, a channel that would
            # redefine one already known, or a message in a file whose index says it keeps them in chunks (a
            # message index whose opcode changed) is damage, said and left out.
            if op == MESSAGE and self.chunk_index:
                self.report.damaged_chunks.append(f"record at byte {start}: a message outside the file's chunks "
                                                  "(a damaged opcode?); left out")
                continue
            try:
                known = dict(self.channels)
                found = list(self._record(op, content))
            except (struct.error, UnicodeDecodeError) as exc:
                self.report.damaged_chunks.append(f"record at byte {start}: {exc}")
                continue
            if any(cid in known and self.channels[cid] != known[cid] for cid in self.channels):
                self.channels = known
                self.report.damaged_chunks.append(f"record at byte {start}: redefines a channel (damaged?); left out")
                continue
            yield from found

    def _record(self, op: int, content: bytes) -> Iterator[tuple[Channel, int, bytes]]:
        c = _Cursor(content)
        if op == SCHEMA:
            sid, name = c.u16(), c.string()
            c.string()  # the schema's encoding: ros2msg
            self.schemas[sid] = (name, bytes(c.take(c.u32())).decode("utf-8", "replace"))
        elif op == CHANNEL:
            cid, sid = c.u16(), c.u16()
            topic, encoding = c.string(), c.string()
            name, definition = self.schemas.get(sid, ("", ""))
            self.channels[cid] = Channel(topic, name, encoding, definition)
        elif op == MESSAGE:
            cid = c.u16()
            c.u32()  # sequence
            log_time = c.u64()
            c.u64()  # publish time
            channel = self.channels.get(cid)
            if channel is None:
                self.report.orphans += 1
            else:
                yield channel, log_time, c.rest()

    def _chunk(self, content: bytes, offset: int) -> Iterator[tuple[Channel, int, bytes]]:
        try:
            c = _Cursor(content)
            c.u64(), c.u64()  # message start and end time
            size, crc = c.u64(), c.u32()
            compression = c.string()
            compressed = c.take(c.u64())
            if compression:
                _check_declared(size, len(compressed))
            records = _decompress(bytes(compressed), compression, size)
            if len(records) != size or (crc and zlib.crc32(records) != crc):
                raise ValueError("its content does not match its size and CRC")
            found = []  # parsed in full before any is yielded, so a damaged chunk gives all or nothing
            inner = _Cursor(records)
            while inner.at < len(records):
                at, op, length = inner.at, inner.take(1)[0], inner.u64()
                if op not in IN_CHUNK:  # e.g. zeros: not walked 9 bytes at a time to the end of a huge chunk
                    raise ValueError(f"a record with opcode {op:#04x} at byte {at} of its content, which no chunk "
                                     "holds")
                found.extend(self._record(op, inner.take(length)))
        except Exception as exc:  # noqa: BLE001 - zstd and lz4 raise their own error types
            self.report.damaged_chunks.append(f"chunk at byte {offset}: {exc}")
            return
        yield from found
