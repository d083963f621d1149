"""A recorded bag as the odometry source: nav_msgs/Odometry from a rosbag2 (MCAP or SQLite),
replayed at the rate it was recorded (no ROS import; `rosbags`, CDR only)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .t265 import DeviceError, PoseSample

ODOMETRY_TYPE = "nav_msgs/msg/Odometry"


@dataclass
class TimedPose:
    t: float  # seconds since the bag's first odometry message
    sample: PoseSample


def read_odometry_bag(bag: str | Path, topic: str = "/odom") -> list[TimedPose]:
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    if not str(bag).strip():  # Path("") is ".", and "odometry bag . has no ..." named no mistake
        raise DeviceError("no odometry bag named: set bag_path to a rosbag2 folder")
    bag = Path(bag)
    if not bag.exists():
        raise DeviceError(f"odometry bag {bag} not found")
    store = get_typestore(Stores.ROS2_KILTED)
    out: list[TimedPose] = []
    try:
        with Reader(bag) as reader:
            conns = [c for c in reader.connections if c.topic == topic and c.msgtype == ODOMETRY_TYPE]
            if not conns:
                raise DeviceError(f"{bag}: no {ODOMETRY_TYPE} on {topic}")
            t0 = None
            for conn, stamp_ns, raw in reader.messages(connections=conns):
                m = store.deserialize_cdr(raw, conn.msgtype)
                t0 = stamp_ns if t0 is None else t0
                p, o, tw = m.pose.pose.position, m.pose.pose.orientation, m.twist.twist
                out.append(TimedPose((stamp_ns - t0) * 1e-9, PoseSample(
                    position=np.array([p.x, p.y, p.z]), quaternion=np.array([o.w, o.x, o.y, o.z]),
                    linear_velocity=np.array([tw.linear.x, tw.linear.y, tw.linear.z]),
                    angular_velocity=np.array([tw.angular.x, tw.angular.y, tw.angular.z]), confidence=3,
                    pose_covariance=np.asarray(m.pose.covariance, float).reshape(6, 6),
                    twist_covariance=np.asarray(m.twist.covariance, float).reshape(6, 6))))
    except DeviceError:
        raise
    except Exception as exc:  # noqa: BLE001 - rosbags raises many types for a damaged bag
        raise DeviceError(f"{bag}: cannot read bag ({type(exc).__name__}: {exc})") from exc
    return out


class BagReplay:
    """Hands out the poses whose recorded time has come, relative to the first `due` call."""

    def __init__(self, poses: list[TimedPose], loop: bool = False) -> None:
        self.poses, self.loop = poses, loop
        self.i, self.start = 0, None

    def due(self, now: float) -> Iterator[PoseSample]:
        if self.start is None:
            self.start = now
        while self.i < len(self.poses) and self.poses[self.i].t <= now - self.start:
            yield self.poses[self.i].sample
            self.i += 1
        if self.loop and self.i >= len(self.poses) and self.poses:
            self.i, self.start = 0, now

    @property
    def finished(self) -> bool:
        return self.i >= len(self.poses) and not self.loop
