"""rosbag2 (MCAP or SQLite) <-> datasets, with `rosbags` (pure Python, no ROS install, CDR only:
nothing is unpickled).

`bag_to_dataset` turns the Transition stream of a bag recorded on the robot with
`ros2 bag record -s mcap /transitions` into the D4RL layout the learning core reads; episodes are
rebuilt from (episode_id, step), so messages may arrive in any order and duplicates are dropped.
`TransitionBagWriter` is what the dataset_logger uses to keep such a bag beside its HDF5 files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .d4rl import DatasetError, OfflineDataset

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


def typestore():
    """ROS 2 Kilted's standard types plus this package's messages, from their .msg files."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    types = {}
    for f in sorted(_msg_dir().glob("*.msg")):
        types.update(get_types_from_msg(f.read_text(), f"uni_o4_ros/msg/{f.stem}"))
    store.register(types)
    return store


def bag_to_dataset(bag: str | Path, topic: str = "/transitions") -> OfflineDataset:
    from rosbags.rosbag2 import Reader

    from ..robot.episodes import episode_dataset

    bag = Path(bag)
    if not bag.exists():
        raise FileNotFoundError(f"bag {bag} not found")
    store = typestore()
    episodes: dict[int, list[dict]] = {}
    try:
        with Reader(bag) as reader:
            conns = [c for c in reader.connections if c.topic == topic]
            if not conns:
                have = ", ".join(sorted({c.topic for c in reader.connections})) or "no topics"
                raise DatasetError(f"{bag}: no {topic} topic (it has {have})")
            if any(c.msgtype != TRANSITION_TYPE for c in conns):
                raise DatasetError(f"{bag}: {topic} carries {conns[0].msgtype}, expected {TRANSITION_TYPE}")
            for conn, _, raw in reader.messages(connections=conns):
                m = store.deserialize_cdr(raw, conn.msgtype)
                episodes.setdefault(int(m.episode_id), []).append({
                    "step": int(m.step), "observation": np.asarray(m.observation),
                    "next_observation": np.asarray(m.next_observation), "action": np.asarray(m.action),
                    "log_prob": float(m.log_prob), "reward": float(m.reward), "terminal": bool(m.terminal),
                    "timeout": bool(m.timeout), "policy_version": int(m.policy_version)})
    except DatasetError:
        raise
    except Exception as exc:  # noqa: BLE001 - rosbags raises many types for a damaged bag
        raise DatasetError(f"{bag}: cannot read bag ({type(exc).__name__}: {exc})") from exc
    if not episodes:
        raise DatasetError(f"{bag}: {topic} holds no messages")
    made = [episode_dataset(rows, eid) for eid, rows in sorted(episodes.items())]
    parts = [ds for ds, _ in made if ds is not None]
    if not parts:
        raise DatasetError(f"{bag}: every transition on {topic} has NaN/inf values")
    ds = OfflineDataset.concatenate(parts)
    ds.infos["episode_id"] = np.concatenate([np.full(len(p), p.metadata["episode_id"], np.int64) for p in parts])
    ds.metadata = {"source": str(bag), "episodes": len(parts), "left_out_non_finite": sum(n for _, n in made)}
    return ds


class TransitionBagWriter:
    """Appends CDR-serialised Transition messages (as received) to an MCAP rosbag2."""

    def __init__(self, path: str | Path, topic: str = "/transitions") -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer

        self.store = typestore()
        self.writer = Writer(Path(path), version=9, storage_plugin=StoragePlugin.MCAP)
        self.writer.open()
        self.conn = self.writer.add_connection(topic, TRANSITION_TYPE, typestore=self.store)

    def write(self, cdr: bytes, stamp_ns: int) -> None:
        self.writer.write(self.conn, stamp_ns, cdr)

    def close(self) -> None:
        self.writer.close()
