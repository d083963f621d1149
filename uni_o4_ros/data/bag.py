"""rosbag2 (MCAP or SQLite) <-> datasets, with `rosbags` (pure Python, no ROS install, CDR only:
nothing is unpickled).

`bag_to_dataset` turns the Transition stream of a bag recorded on the robot with
`ros2 bag record -s mcap /transitions` into the D4RL layout the learning core reads; episodes are
rebuilt from (recorder run, episode_id, step), so a run's messages may arrive in any order and duplicates are
dropped, and a recorder restarted during the recording (its episode ids begin at 1 again) gives episodes of
their own. Messages of a recorder run that started before the one being recorded (an old bag played back while
this one recorded) are left out and counted while that one is heard, as the dataset_logger does. A bag
recorded before Transition named its recorder run is read by the definition it holds (or, if it holds none,
by the layout of then).
A bag its recorder never closed (killed, or the robot's power cut) is salvaged (mcap_salvage.py)
rather than refused, and so is a closed bag damaged since (a bad copy, a failing disk): the chunks
that fail their CRC are left out, said, and the rest is read. `TransitionBagWriter` is what the
dataset_logger uses to keep such a bag beside its HDF5 files; it puts each finished episode on disk,
so a kill loses no more of the bag than of the episode files, and writes each chunk's CRC (rosbags
leaves it empty), so damage shows.
"""

from __future__ import annotations

import functools
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .d4rl import DatasetError, OfflineDataset
from .mcap_salvage import MAGIC, McapSalvage

TRANSITION_TYPE = "uni_o4_ros/msg/Transition"
PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def _msg_dir() -> Path:
    for d in (PACKAGE_ROOT / "msg", PACKAGE_ROOT.parent / "share" / "uni_o4_ros" / "msg"):
        if (d / "Transition.msg").is_file():
            return d
    try:  # an installed (colcon) package
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory("uni_o4_ros")) / "msg"
    except Exception as exc:  # noqa: BLE001 - any failure means the definitions are not installed
        raise DatasetError("uni_o4_ros message definitions (msg/Transition.msg) not found") from exc


def typestore(own: bool = True):
    """ROS 2 Kilted's standard types plus (`own`) this package's messages, from their .msg files."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    if not own:
        return store
    types = {}
    for f in sorted(_msg_dir().glob("*.msg")):
        types.update(get_types_from_msg(f.read_text(), f"uni_o4_ros/msg/{f.stem}"))
    store.register(types)
    return store


def _mcap_files(bag: Path) -> list[Path]:
    if bag.is_file():
        return [bag]
    # rosbag2 splits a long recording into BAG_0.mcap, BAG_1.mcap, ...: in that order, not the string's
    return sorted(bag.glob("*.mcap"), key=lambda f: (len(f.stem), f.stem))


def _closed(f: Path) -> bool:
    """An MCAP that was closed ends with the footer's magic; one cut off by a kill or a power cut does not."""
    with f.open("rb") as fh:
        if fh.seek(0, 2) < 16:
            return False
        fh.seek(-8, 2)
        return fh.read(8) == MAGIC


EXPECTED = "expected a rosbag2: an MCAP file (.mcap) or a bag folder (MCAP, or SQLite with its metadata.yaml)"
_SQLITE_MAGIC, _ROS1_MAGIC = b"SQLite format 3\x00", b"#ROSBAG"


def _not_mcap(f: Path) -> str | None:
    """Why `f` is no MCAP file, in one line saying what it is where its first bytes tell (the bags given for one
    most often: a rosbag2's SQLite .db3, a ROS 1 bag); None for an MCAP file, or one cut off inside its magic (a
    recording killed as it began a file, which the scan reads as holding nothing)."""
    with f.open("rb") as fh:
        head = fh.read(16)
    if head[:8] == MAGIC[:len(head[:8])]:
        return None
    if head.startswith(_SQLITE_MAGIC):
        folder = f"; give its folder ({f.parent}) instead" if (f.parent / "metadata.yaml").is_file() else ""
        return f"{f}: not an MCAP file: an SQLite database (a rosbag2 .db3 file); {EXPECTED}{folder}"
    if head.startswith(_ROS1_MAGIC):
        version = head.split(b"\n", 1)[0].decode("ascii", "replace")
        return (f"{f}: not an MCAP file: a ROS 1 bag ({version}); {EXPECTED} (rosbags-convert --src {f} --dst "
                "FOLDER makes one of a ROS 1 bag)")
    return f"{f}: not an MCAP file (it begins with {head!r}); {EXPECTED}"


def bag_was_closed(bag: str | Path) -> bool:
    """False for a bag its recorder never closed (killed, or the robot lost power): no metadata.yaml,
    or an MCAP file without its footer. `bag_to_dataset` salvages such a bag instead of refusing it."""
    bag = Path(bag)
    if bag.is_dir() and not (bag / "metadata.yaml").is_file():
        return False
    return all(_closed(f) for f in _mcap_files(bag))


def _read_closed(bag: Path, topic: str) -> Iterator[tuple[str, int, bytes]]:
    from rosbags.rosbag2 import Reader

    with Reader(bag) as reader:
        conns = [c for c in reader.connections if c.topic == topic]
        _check_topic(bag, topic, {c.topic for c in reader.connections}, {c.msgtype for c in conns})
        for conn, log_time, raw in reader.messages(connections=conns):
            yield conn.msgdef.data, log_time, raw


def _read_mcap(bag: Path, topic: str, report: dict, closed: bool) -> Iterator[tuple[str, int, bytes]]:
    """Every message on `topic` in the bag's MCAP files, with the definition it was written with and when it was
    recorded (ns), by the salvage scan (front to back; a closed file's index only helps it past damage): it
    reads a bag its recorder never closed, and in any bag leaves out only the chunks that fail their CRC."""
    topics = set()
    for f in _mcap_files(bag):
        scan = McapSalvage(f)
        for channel, log_time, raw in scan.messages():
            if channel.topic == topic:
                if channel.schema != TRANSITION_TYPE:  # raises, naming the type found
                    _check_topic(bag, topic, {topic}, {channel.schema})
                yield channel.definition, log_time, raw
        topics |= {c.topic for c in scan.channels.values()}
        report["damage"] += [f"{f.name}: {d}" for d in scan.report.damaged_chunks]
        if scan.report.orphans:
            report["damage"].append(f"{f.name}: {scan.report.orphans} message(s) whose channel record was lost")
        if closed and not scan.report.closed:  # a closed file whose scan could not go on to its end
            report["damage"].append(f"{f.name}: a damaged record at byte {scan.report.read_to}; nothing after "
                                    f"it was read ({scan.report.size - scan.report.read_to} bytes)")
        report["cut_bytes"] += 0 if closed else scan.report.cut_bytes
    _check_topic(bag, topic, topics, set(), "" if closed else " in what was written out before the recording "
                 "was cut off")


def _check_topic(bag: Path, topic: str, topics: set[str], types: set[str], where: str = "") -> None:
    if topic not in topics:
        raise DatasetError(f"{bag}: no {topic} topic{where} (it has {', '.join(sorted(topics)) or 'no topics'})")
    if types - {TRANSITION_TYPE}:
        raise DatasetError(f"{bag}: {topic} carries {sorted(types)[0]}, expected {TRANSITION_TYPE}")


# Transition before it named its recorder run: what a bag that kept no definition (an SQLite bag of an older
# rosbag2, an MCAP with an empty schema) may hold, tried when today's layout does not read a message.
TRANSITION_BEFORE_RECORDER_RUN = """std_msgs/Header header
uint64 episode_id
uint32 step
float32[] observation
float32[] next_observation
float32[] action
float32 log_prob
float32 reward
bool terminal
bool timeout
uint64 policy_version
"""


def _definition_store(definition: str, stores: dict):
    """The typestore that reads messages written with `definition`: a bag's own Transition (one recorded before
    the message gained recorder_session reads by its own layout)."""
    if definition not in stores:
        from rosbags.typesys import get_types_from_msg

        store = typestore(own=False)
        try:
            store.register({TRANSITION_TYPE: get_types_from_msg(definition, TRANSITION_TYPE)[TRANSITION_TYPE]})
        except Exception as exc:  # noqa: BLE001 - rosbags' parser raises several types for a damaged text
            raise DatasetError(f"the bag's definition of {TRANSITION_TYPE} cannot be read "
                               f"({type(exc).__name__}: {' '.join(str(exc).split())})") from exc
        stores[definition] = store
    return stores[definition]


def _deserialize(definition: str, raw: bytes, stores: dict):
    from rosbags.serde import SerdeError

    if definition.strip():
        return _definition_store(definition, stores).deserialize_cdr(raw, TRANSITION_TYPE)
    try:  # no definition kept: today's layout, else the one before it (rosbags refuses bytes left over or short)
        return _definition_store(_own_definition(), stores).deserialize_cdr(raw, TRANSITION_TYPE)
    except SerdeError as today:
        try:
            return _definition_store(TRANSITION_BEFORE_RECORDER_RUN, stores).deserialize_cdr(raw, TRANSITION_TYPE)
        except SerdeError:
            raise today from None  # neither layout: today's error says more


@functools.cache  # asked once per message of a bag that kept no definition: read from disk once
def _own_definition() -> str:
    return (_msg_dir() / "Transition.msg").read_text()


def _episodes(raws: Iterator[tuple[str, int, bytes]]) -> tuple[dict[tuple[str, int], list[dict]], int, int]:
    """Transition messages grouped by recorder run and episode (a recorder restarted while the bag recorded
    numbers its episodes from 1 again), runs in the order the bag recorded them; and how many messages were left
    out as of a run that started before the one recorded (an old recording played back while this one was made,
    runs.StreamRuns, timed by the bag's own clock: as the dataset_logger leaves them out), and as naming no
    recorder run. Deserialised one by one (not collected first): a day's bag can be gigabytes."""
    from ..robot.episodes import recorder_run, transition_row
    from ..robot.runs import StreamRuns, is_session

    episodes: dict[tuple[str, int], list[dict]] = {}
    runs, earlier, bad, stores = StreamRuns(), 0, 0, {}
    # The silence StreamRuns times, on the bag's clock (when each message arrived): a clock set back while it
    # recorded counts as no time passing, not as time running backwards.
    clock, last = 0.0, None
    for definition, log_time, raw in raws:
        clock, last = clock + (max(0, log_time - last) / 1e9 if last is not None else 0.0), log_time
        m = _deserialize(definition, raw, stores)
        if m.episode_id >= 2**63:  # no recorder counts that far: a bag written without CRCs, damaged since
            raise ValueError(f"episode id {m.episode_id} is no recorder's (a damaged byte?)")
        row = transition_row(m)
        if not is_session(row["recorder_session"]):
            bad += 1
            continue
        if runs.hear(row["recorder_session"], row["recorder_started_ns"], clock) == "earlier":
            earlier += 1
            continue
        episodes.setdefault(recorder_run(row), []).append(row)
    order = {session: k for k, session in enumerate(dict.fromkeys(session for session, _ in episodes))}
    return {key: episodes[key] for key in sorted(episodes, key=lambda key: (order[key[0]], key[1]))}, earlier, bad


def bag_to_dataset(bag: str | Path, topic: str = "/transitions") -> OfflineDataset:
    """The Transition topic of a bag as one dataset. A bag its recorder never closed, or one damaged
    since it was closed, is salvaged: every message of its complete, undamaged records is read; metadata
    salvaged_from_unclosed_bag / salvaged_from_damaged_bag, salvage_cut_bytes and salvage_damage say
    what was not (the bytes cut short at its end; chunks that failed their CRC)."""
    from ..robot.episodes import episode_dataset

    bag = Path(bag)
    if not bag.exists():
        raise FileNotFoundError(f"bag {bag} not found")
    episodes: dict[tuple[str, int], list[dict]] = {}
    if bag.is_dir() and not (bag / "metadata.yaml").is_file() and not _mcap_files(bag):
        raise DatasetError(f"{bag}: no metadata.yaml and no .mcap file (an SQLite bag that was not closed "
                           "needs `ros2 bag reindex` first)")
    for f in _mcap_files(bag):  # before the scan, whose "no MCAP magic" would read as a damaged bag
        if (why := _not_mcap(f)) is not None:
            raise DatasetError(why)
    closed = bag_was_closed(bag)
    salvage = {"cut_bytes": 0, "damage": []}
    try:
        # MCAP (what rosbag2 records by default, and what the dataset_logger writes) is read by the scan, closed or
        # not: it checks each chunk's CRC and needs no index, so damage loses the damaged chunk only, and says so
        # (rosbags refused the whole bag at a failed CRC, and read a damaged index as fewer messages, unsaid).
        raws = _read_mcap(bag, topic, salvage, closed) if _mcap_files(bag) else _read_closed(bag, topic)
        episodes, earlier, bad = _episodes(raws)
    except DatasetError:
        raise
    except Exception as exc:  # noqa: BLE001 - rosbags and the decompressors raise many types for a damaged bag
        # one line: rosbags passes on the YAML parser's several (a metadata.yaml that is no YAML)
        raise DatasetError(f"{bag}: cannot read bag ({type(exc).__name__}: {' '.join(str(exc).split())})") from exc
    damaged = closed and bool(salvage["damage"])
    if not episodes:
        if damaged:
            where = f" in what is not damaged ({'; '.join(salvage['damage'])})"
        else:
            where = "" if closed else " that were written out before the recording was cut off"
        raise DatasetError(f"{bag}: {topic} holds no messages{where}")
    made = [episode_dataset(rows, eid, {"recorder_session": session} if session else None)
            for (session, eid), rows in episodes.items()]
    parts = [ds for ds, _ in made if ds is not None]
    runs = list(dict.fromkeys(p.metadata.get("recorder_session", "") for p in parts))
    if not parts:
        raise DatasetError(f"{bag}: every transition on {topic} has NaN/inf values or malformed arrays")
    first = parts[0]
    if other := [p for p in parts if (p.obs_dim, p.act_dim) != (first.obs_dim, first.act_dim)]:
        raise DatasetError(f"{bag}: episode {other[0].metadata['episode_id']} has observation/action dims "
                           f"{other[0].obs_dim}/{other[0].act_dim}, while episode {first.metadata['episode_id']} has "
                           f"{first.obs_dim}/{first.act_dim}: one topic must hold one recording's transitions")
    ds = OfflineDataset.concatenate(parts)
    ds.infos["episode_id"] = np.concatenate([np.full(len(p), p.metadata["episode_id"], np.int64) for p in parts])
    # Which recorder run each transition is of (0, 1, ... as the bag recorded them): a restarted recorder's ids
    # begin at 1 again, so episode_id alone does not tell its episodes from the run before's.
    ds.infos["recorder_run"] = np.concatenate([
        np.full(len(p), runs.index(p.metadata.get("recorder_session", "")), np.int64) for p in parts])
    ds.metadata = {"source": str(bag), "episodes": len(parts), "recorder_runs": len(runs),
                   "left_out_non_finite": sum(n for _, n in made)}
    if earlier:  # an old recording played back while this bag recorded (ros2 bag play beside the robot)
        ds.metadata["left_out_earlier_run"] = earlier
    if bad:  # a recorder_session that is no recorder's (another publisher on the domain, a damaged message)
        ds.metadata["left_out_bad_session"] = bad
    # Episodes of which no row is usable give no part, and their rows were counted nowhere: a bag with one such
    # episode converted saying nothing of it.
    unusable = [(rows, n) for rows, (part, n) in zip(episodes.values(), made) if part is None]
    if unusable:
        ds.metadata["left_out_episodes"] = len(unusable)
    if malformed := (sum(int(p.metadata.get("left_out_malformed", 0)) for p in parts)
                     + sum(len({int(t["step"]) for t in rows}) - n for rows, n in unusable)):
        # rows of other lengths than most of their episode's (another publisher on the domain, a damaged message)
        ds.metadata["left_out_malformed"] = malformed
    missing = sum(int(p.metadata.get("missing_steps", 0)) for p in parts)
    if missing:  # steps the recorder numbered that the bag never got (a recorder starved past DDS's lease)
        ds.metadata["missing_steps"] = missing
    if not closed or damaged:
        ds.metadata["salvage_cut_bytes"] = salvage["cut_bytes"]
        if salvage["damage"]:  # skipped chunks (CRC, decompression), messages without their channel
            ds.metadata["salvage_damage"] = "; ".join(salvage["damage"])
    if not closed:
        ds.metadata["salvaged_from_unclosed_bag"] = True
    if damaged:
        ds.metadata["salvaged_from_damaged_bag"] = True
    return ds


class TransitionBagWriter:
    """Appends CDR-serialised Transition messages (as received) to an MCAP rosbag2."""

    def __init__(self, path: str | Path, topic: str = "/transitions") -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer

        self.store = typestore()
        self.writer = Writer(Path(path), version=9, storage_plugin=StoragePlugin.MCAP)
        self.writer.open()
        self.conn = self.writer.add_connection(topic, TRANSITION_TYPE, typestore=self.store)
        storage = self.writer.storage  # rosbags' McapWriter (rosbags is pinned; test_bag covers this)
        self._close_chunk = storage.close_chunk
        storage.close_chunk = self._close_chunk_with_crc  # also what rosbags' own close calls

    def _close_chunk_with_crc(self) -> None:
        """rosbags writes each chunk's CRC as 0 (none), so a byte damaged on disk or in a copy was read back
        as another number, unseen. The chunk's CRC field is filled in after rosbags wrote the chunk:
        readers (rosbags, the salvage scan, the MCAP tools) then refuse or skip a damaged chunk."""
        storage = self.writer.storage
        records = storage.chunk.bio.getvalue()
        start = storage.bio.tell()
        self._close_chunk()
        end = storage.bio.tell()
        # chunk record: opcode (1), length (8), message start and end time (8 + 8), uncompressed size (8), CRC
        storage.bio.seek(start + 33)
        storage.bio.write(struct.pack("<I", zlib.crc32(records)))
        storage.bio.seek(end)

    def write(self, cdr: bytes, stamp_ns: int) -> None:
        self.writer.write(self.conn, stamp_ns, cdr)

    def flush(self) -> None:
        """Put every message written so far on disk, as a complete MCAP chunk. rosbags keeps up to 1 MiB
        in memory and writes the index and footer only at close; a logger killed or cut off from
        power between flushes leaves a bag `bag_to_dataset` salvages up to the last flush."""
        storage = self.writer.storage
        if storage.chunk.bio.tell():
            storage.close_chunk()
        storage.bio.flush()
        os.fsync(storage.bio.fileno())

    def close(self) -> None:
        self.writer.close()
