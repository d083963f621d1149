"""rosbag2 (MCAP) -> dataset: Transition messages serialised by the real rclpy type support (as
`ros2 bag record` stores them), written with rosbags, converted by `uni-o4 bag2h5`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rclpy.serialization import serialize_message

from uni_o4_ros.data import DatasetError, read_hdf5
from uni_o4_ros.data.bag import TransitionBagWriter, bag_to_dataset
from uni_o4_ros.msg import Transition


def transition(eid: int, step: int, last: str = "") -> Transition:
    m = Transition(episode_id=eid, step=step, log_prob=-1.5 - step, reward=0.01 * step, policy_version=eid,
                   terminal=last == "terminal", timeout=last == "timeout")
    m.header.stamp.sec, m.header.stamp.nanosec = 100 + eid * 10 + step, 0
    m.observation = [float(eid), float(step)] * 3
    m.next_observation = [float(eid), float(step + 1)] * 3
    m.action = [0.1 * step, -0.1 * step]
    return m


def write_bag(path, msgs) -> None:
    w = TransitionBagWriter(path)
    for m in msgs:
        w.write(serialize_message(m), m.header.stamp.sec * 10**9)
    w.close()


def test_bag2h5_rebuilds_episodes_from_an_mcap_bag(tmp_path):
    # episode 1: 3 steps ending in a fall; episode 2: 4 steps, a timeout; messages out of order, one repeated
    msgs = [transition(1, 0), transition(2, 0), transition(1, 2, "terminal"), transition(1, 1), transition(2, 1),
            transition(2, 2), transition(2, 2), transition(2, 3, "timeout")]
    bag = tmp_path / "robot_bag"
    write_bag(bag, msgs)
    assert list(bag.glob("*.mcap")) and (bag / "metadata.yaml").is_file()
    out = tmp_path / "robot.hdf5"
    run = subprocess.run([sys.executable, "-m", "uni_o4_ros.cli", "bag2h5", str(bag), "--out", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "7 transitions in 2 episode(s), 1 terminal, 1 timeouts" in run.stdout
    ds = read_hdf5(out)
    np.testing.assert_array_equal(ds.infos["step"], [0, 1, 2, 0, 1, 2, 3])
    np.testing.assert_array_equal(ds.infos["episode_id"], [1, 1, 1, 2, 2, 2, 2])
    np.testing.assert_array_equal(ds.terminals, [0, 0, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(ds.timeouts, [0, 0, 0, 0, 0, 0, 1])
    np.testing.assert_allclose(ds.observations[:, 1], [0, 1, 2, 0, 1, 2, 3])
    np.testing.assert_allclose(ds.next_observations[:, 1], [1, 2, 3, 1, 2, 3, 4])
    np.testing.assert_allclose(ds.rewards, [0, 0.01, 0.02, 0, 0.01, 0.02, 0.03], rtol=1e-6)
    np.testing.assert_allclose(ds.infos["action_log_probs"], [-1.5, -2.5, -3.5, -1.5, -2.5, -3.5, -4.5])
    np.testing.assert_array_equal(ds.infos["policy_version"], [1, 1, 1, 2, 2, 2, 2])


def test_a_bag_cut_mid_episode_ends_that_episode_with_a_timeout(tmp_path):
    write_bag(tmp_path / "cut", [transition(5, 0), transition(5, 1)])
    ds = bag_to_dataset(tmp_path / "cut")
    assert len(ds) == 2 and ds.timeouts.tolist() == [False, True] and not ds.terminals.any()


def test_wrong_bags_are_clear_errors(tmp_path):
    write_bag(tmp_path / "b", [transition(1, 0, "timeout")])
    with pytest.raises(DatasetError, match="no /odom topic"):
        bag_to_dataset(tmp_path / "b", topic="/odom")
    with pytest.raises(FileNotFoundError):
        bag_to_dataset(tmp_path / "missing")
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "metadata.yaml").write_text("not: a bag\n")
    with pytest.raises(DatasetError, match="cannot read bag"):
        bag_to_dataset(junk)
    run = subprocess.run([sys.executable, "-m", "uni_o4_ros.cli", "bag2h5", str(junk), "--out", str(tmp_path / "o.h5")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "cannot read bag" in run.stderr and "Traceback" not in run.stderr


def test_a_file_that_is_no_mcap_bag_says_what_was_expected_and_what_it_is(tmp_path):
    """A text file, a ROS 1 bag or a rosbag2's SQLite .db3 given to bag2h5 ended in the MCAP scan's "its first
    bytes are not MCAP's magic" (wrapped as a damaged bag), and a folder whose metadata.yaml is no YAML in the
    YAML parser's several lines. Each is one line: what bag2h5 reads, and what the file is where its first
    bytes tell; exit 2, no traceback, no output file."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    from uni_o4_ros.data.bag import typestore

    sqlite_bag = tmp_path / "sqlite_bag"  # a real rosbag2 in SQLite, as `ros2 bag record -s sqlite3` writes it
    w = Writer(sqlite_bag, version=9, storage_plugin=StoragePlugin.SQLITE3)
    w.open()
    conn = w.add_connection("/transitions", "uni_o4_ros/msg/Transition", typestore=typestore())
    for step in range(3):
        m = transition(1, step, "terminal" if step == 2 else "")
        w.write(conn, m.header.stamp.sec * 10**9, serialize_message(m))
    w.close()
    [db3] = sqlite_bag.glob("*.db3")
    text, ros1 = tmp_path / "notes.txt", tmp_path / "day1.bag"
    text.write_text("hello, not a bag\n")
    ros1.write_bytes(b"#ROSBAG V2.0\nE\x00\x00\x00" + bytes(64))  # a ROS 1 bag's header line and first record
    broken = tmp_path / "broken_bag"
    broken.mkdir()
    (broken / "metadata.yaml").write_text("rosbag2_bagfile_information: [\n")

    def bag2h5(bag: Path) -> str:
        out = tmp_path / "out.hdf5"
        run = subprocess.run([sys.executable, "-m", "uni_o4_ros.cli", "bag2h5", str(bag), "--out", str(out)],
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 2 and "Traceback" not in run.stderr and not out.exists(), run.stderr
        [line] = run.stderr.strip().splitlines()
        assert line.startswith(f"uni-o4 bag2h5: error: {bag}: "), line
        return line

    expected = "expected a rosbag2: an MCAP file (.mcap) or a bag folder (MCAP, or SQLite with its metadata.yaml)"
    said = bag2h5(text)
    assert f"not an MCAP file (it begins with b'hello, not a bag'); {expected}" in said, said
    said = bag2h5(ros1)
    assert "not an MCAP file: a ROS 1 bag (#ROSBAG V2.0)" in said and expected in said and "rosbags-convert" in said
    said = bag2h5(db3)
    assert "not an MCAP file: an SQLite database (a rosbag2 .db3 file)" in said and expected in said, said
    assert f"give its folder ({sqlite_bag}) instead" in said, said
    said = bag2h5(broken)
    assert "cannot read bag (ReaderError: Could not load YAML" in said, said
    # the folder the message names is read
    run = subprocess.run([sys.executable, "-m", "uni_o4_ros.cli", "bag2h5", str(sqlite_bag), "--out",
                          str(tmp_path / "sqlite.hdf5")], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "3 transitions in 1 episode(s), 1 terminal" in run.stdout, run.stderr


# --- bags their recorder never closed (killed, power cut) -------------------------------------------

def _killed_copy(src, dst) -> None:
    """What a SIGKILL or power cut leaves on disk: the bytes written so far, no footer, no metadata.yaml."""
    import shutil

    shutil.copytree(src, dst)  # only what the writer handed the kernel; its Python buffers are lost, as in a kill
    assert not (dst / "metadata.yaml").exists()


def test_a_bag_never_closed_is_salvaged_up_to_its_last_finished_episode(tmp_path):
    """The dataset_logger puts each finished episode on disk (flush); the bag of a logger killed in episode
    4 gives episodes 1-3 to `uni-o4 bag2h5`, with a warning. Before, both the logger's bag (1 MiB held in
    memory) and any bag without metadata.yaml were lost: `cannot read bag`."""
    bag = tmp_path / "bag"
    w = TransitionBagWriter(bag)
    for eid in (1, 2, 3):
        for step in range(4):
            m = transition(eid, step, "timeout" if step == 3 else "")
            w.write(serialize_message(m), m.header.stamp.sec * 10**9)
        w.flush()
    w.write(serialize_message(transition(4, 0)), 10**9)  # the episode the kill cut short: not flushed
    _killed_copy(bag, tmp_path / "killed")
    w.close()

    out = tmp_path / "salvaged.hdf5"
    run = subprocess.run([sys.executable, "-m", "uni_o4_ros.cli", "bag2h5", str(tmp_path / "killed"), "--out",
                          str(out)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "was never closed" in run.stderr and "12 transitions in 3 episode(s)" in run.stdout
    ds, whole = read_hdf5(out), bag_to_dataset(bag)
    assert len(whole) == 13 and "salvaged_from_unclosed_bag" not in whole.metadata
    np.testing.assert_array_equal(ds.infos["episode_id"], np.repeat([1, 2, 3], 4))
    np.testing.assert_array_equal(ds.observations, whole.observations[:12])
    np.testing.assert_array_equal(ds.timeouts, whole.timeouts[:12])
    np.testing.assert_allclose(ds.infos["action_log_probs"], whole.infos["action_log_probs"][:12])

    # A power cut can leave the file's last blocks as zeros: the same episodes, the zeros counted as cut.
    mcap = next((tmp_path / "killed").glob("*.mcap"))
    mcap.write_bytes(mcap.read_bytes() + bytes(4096))
    zeros = bag_to_dataset(tmp_path / "killed")
    np.testing.assert_array_equal(zeros.observations, ds.observations)
    assert zeros.metadata["salvage_cut_bytes"] >= 4096


def _independent_mcap(compression: str, episodes: int = 6, chunk_size: int = 700):
    """An MCAP written as `ros2 bag record -s mcap` writes one (schema ros2msg, CDR), by the MCAP
    project's own Python writer (not rosbags, not ours), with small chunks and CRCs. Returns the
    bytes on disk before and after `finish()`, the messages in the order sent, and their CDR bytes (serialised
    once: rclpy leaves CDR's padding bytes uninitialised, so a second serialisation may differ in them)."""
    import io

    from mcap.writer import CompressionType, Writer

    from uni_o4_ros.data.bag import _msg_dir

    stream = io.BytesIO()
    w = Writer(stream, chunk_size=chunk_size, compression=CompressionType[compression.upper()])
    w.start(profile="ros2", library="test")
    schema = w.register_schema("uni_o4_ros/msg/Transition", "ros2msg", (_msg_dir() / "Transition.msg").read_bytes())
    channel = w.register_channel("/transitions", "cdr", schema)
    sent = [transition(e, s, "timeout" if s == 3 else "") for e in range(1, episodes + 1) for s in range(4)]
    raw = [serialize_message(m) for m in sent]
    for i, (m, data) in enumerate(zip(sent, raw)):
        w.add_message(channel, m.header.stamp.sec * 10**9, data, m.header.stamp.sec * 10**9, i)
    unfinished = stream.getvalue()
    w.finish()
    return unfinished, stream.getvalue(), sent, raw


@pytest.mark.parametrize("compression", ["none", "lz4", "zstd"])
def test_an_unclosed_mcap_from_another_writer_is_salvaged_whatever_byte_it_ends_at(tmp_path, compression):
    """Every possible cut of a recording (the MCAP writer killed after any byte) gives the messages of the
    chunks complete before the cut, in order and unaltered, without an error, and more the later the cut."""
    from uni_o4_ros.data.mcap_salvage import McapSalvage

    unfinished, finished, sent, raw = _independent_mcap(compression)
    f = tmp_path / "cut.mcap"
    last = -1
    for cut in range(8, len(finished) + 1):
        f.write_bytes(finished[:cut])
        got = [data for _, _, data in McapSalvage(f).messages()]
        assert got == raw[:len(got)], cut
        assert len(got) >= last, cut
        last = len(got)
    assert last == len(sent)  # the finished file: everything
    # What the killed writer had put out: all but the chunk it was filling, read back through bag2h5's path.
    bag = tmp_path / "rec"
    bag.mkdir()
    (bag / "rec_0.mcap").write_bytes(unfinished)
    ds = bag_to_dataset(bag)
    assert 0 < len(ds) < len(sent) and len(ds) >= len(sent) - 8  # a 700-byte chunk holds under 8 messages
    ids = np.array([m.episode_id for m in sent[:len(ds)]])
    np.testing.assert_array_equal(ds.infos["episode_id"], ids)
    np.testing.assert_array_equal(ds.observations, np.array([m.observation for m in sent[:len(ds)]], np.float32))
    assert ds.metadata["salvage_cut_bytes"] == 0 and "salvage_damage" not in ds.metadata


def test_a_damaged_chunk_is_skipped_and_the_chunks_after_it_are_read(tmp_path):
    """A chunk whose bytes changed (its CRC fails) is left out, with the reason; the scan goes on behind it."""
    from uni_o4_ros.data.mcap_salvage import McapSalvage

    unfinished, _, _, raw = _independent_mcap("none")
    f = tmp_path / "rec.mcap"
    f.write_bytes(unfinished)
    whole = [data for _, _, data in McapSalvage(f).messages()]
    # change one byte inside a message halfway through (its data, not the framing around it)
    second = unfinished.index(raw[len(whole) // 2])
    damaged = bytearray(unfinished)
    damaged[second + 20] ^= 0xFF
    f.write_bytes(bytes(damaged))
    scan = McapSalvage(f)
    got = [data for _, _, data in scan.messages()]
    assert len(scan.report.damaged_chunks) == 1 and "CRC" in scan.report.damaged_chunks[0]
    assert 0 < len(got) < len(whole) and set(got) <= set(whole)
    assert got[-1] == whole[-1]  # the chunks after the damaged one are read


def test_unreadable_unclosed_bags_are_clear_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="no metadata.yaml and no .mcap file"):
        bag_to_dataset(empty)
    junk = tmp_path / "junk.mcap"
    junk.write_bytes(b"not an mcap at all")
    with pytest.raises(DatasetError, match="not an MCAP file"):
        bag_to_dataset(junk)
    split = tmp_path / "split"  # a split recording killed as it opened its next file: that file holds nothing
    split.mkdir()
    (split / "split_0.mcap").write_bytes(_independent_mcap("none")[0])
    (split / "split_1.mcap").write_bytes(b"\x89MC")
    assert len(bag_to_dataset(split)) > 0
    header_only = tmp_path / "header.mcap"
    header_only.write_bytes(_independent_mcap("none")[0][:40])
    with pytest.raises(DatasetError, match="no /transitions topic in what was written out before"):
        bag_to_dataset(header_only)


def test_a_bag_given_as_a_dataset_says_to_convert_it(tmp_path):
    """A recording's bag passed straight to the learner: one line naming the command that converts it."""
    write_bag(tmp_path / "day1", [transition(1, 0, "timeout")])
    for given in (tmp_path / "day1", next((tmp_path / "day1").glob("*.mcap"))):
        run = subprocess.run([sys.executable, "-m", "uni_o4_ros.cli", "offline", "--dataset", str(given), "--run-dir",
                              str(tmp_path / "run")], capture_output=True, text=True, timeout=120)
        assert run.returncode == 2 and f"uni-o4 bag2h5 {given} --out" in run.stderr, run.stderr
        assert not (tmp_path / "run").exists()


# --- bags damaged after they were closed (a bad copy, a failing disk) --------------------------------

def _logger_bag(path, episodes: int = 6, steps: int = 50):
    """A bag as the dataset_logger writes it: each finished episode put on disk as its own chunk."""
    w = TransitionBagWriter(path)
    for e in range(episodes):
        for s in range(steps):
            m = transition(e, s, "timeout" if s == steps - 1 else "")
            w.write(serialize_message(m), m.header.stamp.sec * 10**9)
        w.flush()
    w.close()


def test_every_damaged_byte_of_a_closed_bag_is_left_out_and_said_never_read_as_other_data(tmp_path):
    """Seen: the dataset_logger's bags had no chunk CRCs (rosbags writes 0), so most single flipped bytes were
    read back as other numbers, unsaid (76 of 120 positions tried), and a damaged index lost messages unsaid.
    Now, wherever one byte changes, the bag reads as the same data, or as whole episodes of it with the
    damage said, or is a clear error."""
    _logger_bag(tmp_path / "good")
    good = next((tmp_path / "good").glob("*.mcap"))
    data = good.read_bytes()
    ref = bag_to_dataset(tmp_path / "good")
    assert len(ref) == 300 and "salvaged_from_damaged_bag" not in ref.metadata
    from mcap.reader import make_reader  # the MCAP project's reader checks the CRCs the logger now writes

    with good.open("rb") as f:
        assert sum(1 for _ in make_reader(f, validate_crcs=True).iter_messages()) == 300
    episode = {e: ref.observations[ref.infos["episode_id"] == e] for e in range(6)}
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "metadata.yaml").write_bytes((tmp_path / "good" / "metadata.yaml").read_bytes())
    outcomes = {"same": 0, "episodes left out, said": 0, "error": 0}
    for pos in range(8, len(data), 149):  # headers, chunks (their framing and messages), indexes, summary, footer
        b = bytearray(data)
        b[pos] ^= 0xFF
        (damaged / good.name).write_bytes(bytes(b))
        try:
            ds = bag_to_dataset(damaged)
        except DatasetError as exc:
            assert "damaged" in str(exc) or "cannot read bag" in str(exc), (pos, exc)
            outcomes["error"] += 1
            continue
        ids = sorted(set(ds.infos["episode_id"].tolist()))
        for e in ids:  # every episode read is the one written, whole
            np.testing.assert_array_equal(ds.observations[ds.infos["episode_id"] == e], episode[e], err_msg=str(pos))
        if len(ds) == len(ref):
            outcomes["same"] += 1
        else:
            said = ds.metadata.get("salvage_damage", "")
            assert ds.metadata.get("salvaged_from_damaged_bag") and "chunk at byte" in said, pos
            assert "missing_steps" not in ds.metadata, pos  # a lost chunk is whole episodes, not steps
            outcomes["episodes left out, said"] += 1
    assert outcomes["episodes left out, said"] > outcomes["same"] > 0, outcomes  # most bytes are message data
    # One bit of a record's opcode or a chunk's length (a chunk read as a message index, a footer: all after it
    # lost, unsaid, before the chunk index was used): every chunk still read, or its loss said.
    import struct

    at, framing = 8, []
    while data[at] != 0x0F:  # the data section, up to its DataEnd record
        framing += range(at, at + 9) if data[at] == 0x06 else [at]
        at += 9 + struct.unpack("<Q", data[at + 1:at + 9])[0]
    assert len(framing) > 6 * 9
    for pos in framing:
        for bit in range(8):
            b = bytearray(data)
            b[pos] ^= 1 << bit
            (damaged / good.name).write_bytes(bytes(b))
            ds = bag_to_dataset(damaged)
            assert len(ds) == len(ref) or ds.metadata.get("salvaged_from_damaged_bag"), (pos, bit)
            np.testing.assert_array_equal(ds.observations, ref.observations[np.isin(ref.infos["episode_id"],
                                                                                    ds.infos["episode_id"])])


def test_bag2h5_reads_a_closed_bag_around_its_damaged_chunk(tmp_path):
    """A bag `ros2 bag record` closed (the MCAP project's writer, chunk CRCs), one byte changed in a message
    since: rosbags refused the whole bag ("Chunk checksum mismatch"); bag2h5 now writes every other chunk's
    episodes and says which chunk it left out."""
    _, finished, sent, raw = _independent_mcap("none")
    bag = tmp_path / "copied.mcap"
    b = bytearray(finished)
    b[finished.index(raw[10]) + 20] ^= 0xFF  # inside message 10's data, not the framing around it
    bag.write_bytes(bytes(b))
    out = tmp_path / "copied.hdf5"
    run = subprocess.run([sys.executable, "-m", "uni_o4_ros.cli", "bag2h5", str(bag), "--out", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "was damaged after it was written" in run.stderr and "does not match its size and CRC" in run.stderr
    ds = read_hdf5(out)
    assert 0 < len(ds) < len(sent)
    by_key = {(m.episode_id, m.step): m for m in sent}
    for e, s, o in zip(ds.infos["episode_id"], ds.infos["step"], ds.observations):
        np.testing.assert_array_equal(o, np.asarray(by_key[(int(e), int(s))].observation, np.float32))


def test_a_chunk_that_inflates_out_of_all_proportion_is_damage_said_not_decompressed(tmp_path):
    """Seen: a 4 KB chunk of zstd zeros declaring 128 MiB took 21 s (the scan decompressed it whole, then walked
    the zeros 9 bytes at a time as records of opcode 0), and one of 65 KB declaring 2 GiB never finished. Now a
    chunk declaring implausibly more than it holds is not decompressed, one whose output would pass its declared
    size is stopped there, and records no chunk holds (opcode 0) end the chunk's parse: each is damage, said,
    and the bag's other chunks are read."""
    import struct

    from backports import zstd
    from lz4.frame import compress as lz4_compress

    from uni_o4_ros.data.mcap_salvage import CHUNK

    def chunk(compression: str, declared: int, data: bytes) -> bytes:
        content = (struct.pack("<QQQI", 0, 0, declared, 0) + struct.pack("<I", len(compression)) +
                   compression.encode() + struct.pack("<Q", len(data)) + data)
        return bytes([CHUNK]) + struct.pack("<Q", len(content)) + content

    zeros = bytes(64 << 20)
    packed = zstd.compress(zeros, level=1)
    bombs = [chunk("zstd", len(zeros), packed),  # 64 MiB from ~2 KB: refused as declared
             chunk("lz4", 1 << 20, lz4_compress(zeros)),  # declares 1 MiB, inflates to 64: stopped after 1 MiB
             chunk("zstd", 16 << 20, zstd.compress(zeros[:16 << 20], level=1))]  # as declared, but zeros
    unfinished, _, _, _ = _independent_mcap("zstd")
    starts, at = [], 8
    while at + 9 <= len(unfinished):  # the records the writer put out before it was killed
        starts.append(at)
        at += 9 + struct.unpack("<Q", unfinished[at + 1:at + 9])[0]
    chunks = [s for s in starts if unfinished[s] == CHUNK]
    middle = chunks[len(chunks) // 2]
    (tmp_path / "clean").mkdir()
    (tmp_path / "clean" / "rec_0.mcap").write_bytes(unfinished)
    (tmp_path / "bombed").mkdir()
    bombed = tmp_path / "bombed" / "rec_0.mcap"
    bombed.write_bytes(unfinished[:middle] + b"".join(bombs) + unfinished[middle:])
    assert bombed.stat().st_size < len(unfinished) + 400_000

    clean, ds = bag_to_dataset(tmp_path / "clean"), bag_to_dataset(tmp_path / "bombed")
    np.testing.assert_array_equal(ds.observations, clean.observations)  # every other chunk read
    np.testing.assert_array_equal(ds.infos["episode_id"], clean.infos["episode_id"])
    said = ds.metadata["salvage_damage"]
    first, second, third = middle, middle + len(bombs[0]), middle + len(bombs[0]) + len(bombs[1])
    assert said == "; ".join([
        f"rec_0.mcap: chunk at byte {first}: it declares {64 << 20} bytes uncompressed from {len(packed)} compressed "
        f"({(64 << 20) // len(packed)} times as many; no recording compresses more than 1000 times): not decompressed",
        f"rec_0.mcap: chunk at byte {second}: its content decompresses to more than the {1 << 20} bytes it declares",
        f"rec_0.mcap: chunk at byte {third}: a record with opcode 0x00 at byte 0 of its content, which no chunk holds",
    ])


def test_a_bag_whose_episodes_have_other_dimensions_is_one_clear_error(tmp_path):
    """Episodes of two observation layouts on one topic (another robot's publisher on the domain): one line
    naming both, where bag2h5 raised numpy's concatenation error."""
    odd = [transition(2, s, "timeout" if s == 1 else "") for s in range(2)]
    for m in odd:
        m.observation, m.next_observation = [1.0] * 3, [2.0] * 3
    write_bag(tmp_path / "mixed", [transition(1, 0), transition(1, 1, "timeout"), *odd])
    with pytest.raises(DatasetError, match="episode 2 has observation/action dims 3/2, while episode 1 has 6/2: "
                                           "one topic must hold one recording's transitions"):
        bag_to_dataset(tmp_path / "mixed")


def test_an_episode_none_of_whose_transitions_is_usable_is_said_not_dropped_unsaid(tmp_path):
    """An episode whose every message has an empty action (a damaged publisher) gives no rows, and bag2h5 said
    '3 transitions in 1 episode(s)' and nothing of it; rows of episodes it keeps were counted, its were not."""
    broken = [transition(2, s, "timeout" if s == 2 else "") for s in range(3)]
    for m in broken:
        m.action = []
    bag, out = tmp_path / "bag", tmp_path / "out.hdf5"
    write_bag(bag, [transition(1, s, "timeout" if s == 2 else "") for s in range(3)] + broken)
    run = subprocess.run([sys.executable, "-m", "uni_o4_ros.cli", "bag2h5", str(bag), "--out", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "3 transitions in 1 episode(s)" in run.stdout and "; 3 left out for other dimensions" in run.stdout
    assert "; 1 episode(s) left out whole, no transition of them usable" in run.stdout
    ds = read_hdf5(out)
    assert ds.infos["episode_id"].tolist() == [1, 1, 1] and ds.metadata["left_out_episodes"] == 1


def _run(m: Transition, session: str, started_ns: int) -> Transition:
    m.recorder_session, m.recorder_started_ns = session, started_ns
    return m


def test_bag2h5_keeps_a_restarted_recorders_episodes_apart_and_leaves_out_an_old_recording_played_back(tmp_path):
    """`ros2 bag record /transitions` through a recorder restart (its episode ids begin at 1 again) and beside
    `ros2 bag play` of Monday's bag. Before, bag2h5 merged both runs' episode 1 step by step into one episode,
    and wrote Monday's transitions in with today's."""
    today, restarted, monday = ("a" * 32, 2 * 10**18), ("b" * 32, 3 * 10**18), ("c" * 32, 10**18)
    msgs = [_run(transition(1, 0), *today), _run(transition(1, 1), *today),
            _run(transition(1, 0), *monday), _run(transition(1, 1, "timeout"), *monday),  # played back
            _run(transition(1, 2, "timeout"), *today), _run(transition(2, 0), *today),
            _run(transition(1, 0), *restarted), _run(transition(1, 1), *restarted),
            _run(transition(1, 2), *restarted), _run(transition(1, 3, "terminal"), *restarted),
            _run(transition(1, 4), "not a recorder's", 4 * 10**18)]  # another publisher on the domain
    for m in msgs[6:10]:
        m.reward = 5.0  # the restarted run's: told apart from today's by value
    bag = tmp_path / "restart_bag"
    write_bag(bag, msgs)
    out = tmp_path / "restart.hdf5"
    run = subprocess.run([sys.executable, "-m", "uni_o4_ros.cli", "bag2h5", str(bag), "--out", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert ("8 transitions in 3 episode(s) of 2 recorder runs (infos/recorder_run), 1 terminal, 2 timeouts; 1 left "
            "out for a recorder_session that is no recorder's; 2 left out as a recorder run's that started before "
            "one already recorded") in run.stdout, run.stdout
    ds = read_hdf5(out)
    np.testing.assert_array_equal(ds.infos["recorder_run"], [0, 0, 0, 0, 1, 1, 1, 1])
    np.testing.assert_array_equal(ds.infos["episode_id"], [1, 1, 1, 2, 1, 1, 1, 1])
    np.testing.assert_array_equal(ds.infos["step"], [0, 1, 2, 0, 0, 1, 2, 3])
    np.testing.assert_allclose(ds.rewards, [0, 0.01, 0.02, 0, 5, 5, 5, 5])
    assert ds.timeouts.tolist() == [0, 0, 1, 1, 0, 0, 0, 0] and ds.terminals.tolist() == [0] * 7 + [1]
    assert ds.metadata["recorder_runs"] == 2 and ds.metadata["left_out_earlier_run"] == 2
    assert ds.metadata["left_out_bad_session"] == 1


def test_bag2h5_takes_a_recorder_restarted_with_its_clock_set_back_after_ten_seconds_of_the_bags_own_time(tmp_path):
    """The robot's clock set back 60 s, then the recorder restarted: its run seems to start before the one it
    follows, and its messages are stamped before that one's. bag2h5 counts the jump back as no time passing, so the
    new run is left out for 10 s of the bag's time (runs.QUIET_S), as the logger did, then read."""
    before, after = ("d" * 32, 2000 * 10**9), ("e" * 32, 1950 * 10**9)
    msgs = [_run(transition(1, k, "timeout" if k == 4 else ""), *before) for k in range(5)]  # stamped 110-114 s
    later = [_run(transition(1, k, "timeout" if k == 19 else ""), *after) for k in range(20)]
    for k, m in enumerate(later):
        m.header.stamp.sec = 54 + k  # one a second from 54 s: 60 s before the first run's last, plus the restart
    write_bag(tmp_path / "set_back", msgs + later)
    ds = bag_to_dataset(tmp_path / "set_back")
    assert ds.metadata["recorder_runs"] == 2 and ds.metadata["left_out_earlier_run"] == 10  # 54 .. 63 s
    np.testing.assert_array_equal(ds.infos["recorder_run"], [0] * 5 + [1] * 10)
    np.testing.assert_array_equal(ds.infos["step"], [*range(5), *range(10, 20)])
    assert ds.metadata["missing_steps"] == 10  # and the file says which steps of the new run it lacks


# Transition as it was before it named its recorder run (bags recorded then hold this definition); written out
# here, not taken from bag.py, so the test stands for the bags of then whatever the reader assumes.
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


@pytest.mark.parametrize("kept", [True, False], ids=["definition kept", "no definition"])
def test_a_bag_recorded_before_transitions_named_their_recorder_run_still_reads(tmp_path, kept):
    """A robot's bags from before the message grew two fields: read with today's definition, every message
    failed to deserialise (the bytes end where the new fields would begin). A bag's own definition reads them;
    a bag that kept none (an older rosbag2's SQLite bag, an MCAP with an empty schema) is read by the layout of
    then when today's does not fit."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    store.register(get_types_from_msg(TRANSITION_BEFORE_RECORDER_RUN, "uni_o4_ros/msg/Transition"))
    Old = store.types["uni_o4_ros/msg/Transition"]
    Header, Time = store.types["std_msgs/msg/Header"], store.types["builtin_interfaces/msg/Time"]
    bag = tmp_path / "old_bag"
    with Writer(bag, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        conn = (w.add_connection("/transitions", "uni_o4_ros/msg/Transition", typestore=store) if kept else
                w.add_connection("/transitions", "uni_o4_ros/msg/Transition", msgdef="", rihs01="RIHS01_" + "00" * 32))
        for k in range(3):
            m = Old(header=Header(stamp=Time(sec=k, nanosec=0), frame_id=""), episode_id=4, step=k,
                    observation=np.full(6, k, np.float32), next_observation=np.full(6, k + 1, np.float32),
                    action=np.zeros(2, np.float32), log_prob=-1.0, reward=0.5, terminal=k == 2, timeout=False,
                    policy_version=3)
            w.write(conn, k * 10**9, store.serialize_cdr(m, "uni_o4_ros/msg/Transition"))
    ds = bag_to_dataset(bag)
    assert len(ds) == 3 and ds.terminals.tolist() == [0, 0, 1] and ds.metadata["recorder_runs"] == 1
    np.testing.assert_array_equal(ds.observations[:, 0], [0, 1, 2])
    np.testing.assert_array_equal(ds.infos["episode_id"], [4, 4, 4])
    np.testing.assert_array_equal(ds.infos["policy_version"], [3, 3, 3])
