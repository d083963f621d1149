"""odometry node: T265 pose stream -> nav_msgs/Odometry (odom -> base_link, REP-105), covariance from
tracker confidence. With the simulated Go1, pd_controller's sim backend publishes `odom` itself.
Publishes TF too: odom -> base_link per pose, and the static base_link -> camera mount.
Parameters: source (t265 | bag), mount_xyz, mount_rpy (base_link -> camera), frame ids,
min_tracker_confidence (T265 poses below it, 0 failed .. 3 high, are not published: 1 by default,
so a failed tracker's velocities never become rewards; 0: all), pose_jumping (false: the T265's
pose stays continuous through a relocalisation, as REP-105 asks of odom; true: the device's default,
the pose jumps back by the drift it learnt); for source bag: bag_path,
bag_topic, bag_loop (replays a recorded nav_msgs/Odometry stream in real time).
A missing device, a missing pyrealsense2 or a librealsense without T265 support ends the node with
one clear line. Once running, the node outlives a camera that stops sending (a USB drop-out) or whose
read raises (any exception, said with its type and message; after a second of failing reads the pipeline
is restarted, every 2 s until the camera is back, and odom goes on from its last pose): it says so once
(each cause once), publishes nothing meanwhile (the recorder's odom_timeout ends the episode) and says again
when poses come back; likewise while the tracker's confidence is below min_tracker_confidence.
A sample that is no pose (NaN, a confidence outside 0..3, a zero quaternion) is ignored, counted and said
in the log (t265.PoseCheck), as a lost one: it neither ends the node nor becomes a NaN pose."""

from __future__ import annotations

import sys
import time
from typing import Any

from nav_msgs.msg import Odometry
from rclpy.node import Node

from uni_o4_ros.hardware.t265 import (
    RESTART_AFTER_S,
    DeviceError,
    MountExtrinsic,
    OdomAnchor,
    PoseCheck,
    T265Source,
    TrackingWatch,
    convert,
)

from .params import Doc, declare_read_only, require_vector
from .qos import RELIABLE_STREAM
from .run import run_node
from .tf import OdomTfBroadcaster, publish_static
from .timers import steady_timer

PARAMETERS = {
    "source": Doc("t265 | bag; where poses come from: the RealSense T265, or a recorded nav_msgs/Odometry bag "
                  "replayed in real time"),
    "mount_xyz": Doc("m, [x, y, z]; the T265's position in base_frame: measure it on your mount"),
    "mount_rpy": Doc("rad, [roll, pitch, yaw]; the T265's orientation in base_frame"),
    "odom_frame": Doc("frame id; the odometry's parent frame (REP-105 odom)"),
    "base_frame": Doc("frame id; the robot body: the odometry's child frame and the camera mount's parent"),
    "camera_frame": Doc("frame id; the T265, published as a static transform from base_frame"),
    "bag_path": Doc("path; source bag only: the rosbag2 to replay"),
    "bag_topic": Doc("topic; source bag only: the nav_msgs/Odometry topic in the bag"),
    "bag_loop": Doc("source bag only: replay the bag again from its start when it ends"),
    "min_tracker_confidence": Doc("0 failed .. 3 high; T265 poses tracked below this are not published, so a lost "
                                  "tracker's velocities never become rewards; 0: all", "[0,3]"),
    "pose_jumping": Doc("false: the pose stays continuous through a T265 relocalisation (REP-105 odom); true: the "
                        "device's default, the pose jumps back by the drift it learnt"),
}


class OdometryNode(Node):
    def __init__(self) -> None:
        super().__init__("odometry")
        p = declare_read_only(self, PARAMETERS, {
            "source": "t265", "mount_xyz": [0.25, 0.0, 0.05], "mount_rpy": [0.0, 0.0, 0.0],
            "odom_frame": "odom", "base_frame": "base_link", "camera_frame": "t265_pose_frame", "bag_path": "",
            "bag_topic": "/odom", "bag_loop": False, "min_tracker_confidence": 1, "pose_jumping": False})
        self.tracking = TrackingWatch(int(p["min_tracker_confidence"]))
        self.poses = PoseCheck()
        self.mount = MountExtrinsic.from_config(require_vector(p, "mount_xyz", 3), require_vector(p, "mount_rpy", 3))
        self.frames = (p["odom_frame"], p["base_frame"])
        self.pub = self.create_publisher(Odometry, "odom", RELIABLE_STREAM)
        self.tf = OdomTfBroadcaster(self)
        self.static_tf = publish_static(self, self.get_clock().now().to_msg(), p["base_frame"], p["camera_frame"],
                                        self.mount.translation, self.mount.quaternion)
        self.source = self.replay = None
        self.stalled_since: float | None = None  # monotonic time the camera stopped sending
        self.stall_causes: set[str] = set()  # what the log said stops it ("" no frame in time, else a type)
        self.anchor = OdomAnchor()  # odom continuous across a restart of the T265's pipeline
        if p["source"] == "t265":
            self.source = T265Source(pose_jumping=bool(p["pose_jumping"]))
            if self.source.pose_jumping_error:
                self.get_logger().warning(f"T265: could not set pose jumping {'on' if p['pose_jumping'] else 'off'} "
                                          f"({self.source.pose_jumping_error}): the device's own setting holds")
            steady_timer(self, 0.005, self.poll)
        elif p["source"] == "bag":
            from uni_o4_ros.hardware.odometry_bag import BagReplay, read_odometry_bag

            # Poses in the bag are already in odom / base_link: no mount transform again.
            self.replay = BagReplay(read_odometry_bag(p["bag_path"], p["bag_topic"]), loop=bool(p["bag_loop"]))
            steady_timer(self, 0.005, self.poll_bag)
        else:
            raise DeviceError(f"unknown source {p['source']!r} (t265 | bag; the simulator publishes odom itself)")

    def close(self) -> None:
        if self.source is not None:
            self.source.close()

    def poll_bag(self) -> None:
        if self.replay.start is None and self.pub.get_subscription_count() == 0:
            return  # replay starts when someone listens: samples sent before reach nobody (volatile)
        for s in self.replay.due(time.monotonic()):
            self._publish(s)

    def _read(self) -> tuple[Any | None, str, str]:
        """(pose or None, why none: the exception's type or "" for no frame in time, the line to say)."""
        try:
            return self.source.read(), "", "no pose frame within 100 ms"
        except Exception as exc:  # noqa: BLE001 - see below
            # librealsense says a device gone mid-stream with RuntimeError, but a USB error can come as OSError
            # and a driver's odd frame as ValueError: each is a stall, not the node's end. Its type is said
            # with its message, so that a bug (an AttributeError, say) shows as one and is not a silent stall.
            return None, type(exc).__name__, f"reading the device failed: {type(exc).__name__}: {exc}"

    def poll(self) -> None:
        pose, cause, error = self._read()
        now = time.monotonic()
        if self.source.restarted:
            self.source.restarted = False
            self.anchor.restart()
            src = self.source
            jumping = f", pose jumping not set: {src.pose_jumping_error}" if src.pose_jumping_error else ""
            self.get_logger().warning(f"T265: its pipeline restarted (restart {src.restarts}) after reads failed for "
                                      f"{RESTART_AFTER_S:g} s{jumping}; odometry goes on from its last pose, without "
                                      "what the robot moved while no pose came")
        if pose is None:
            if self.stalled_since is None:
                self.stalled_since = now
            if cause not in self.stall_causes:  # each cause once per stall: a read failing 200 times a second
                self.stall_causes.add(cause)    # must not flood the log, nor a second cause go unsaid
                self.get_logger().warning(f"T265: {error}; no odometry until poses come back")
            return
        if self.stalled_since is not None:
            self.get_logger().info(f"T265: poses again after {now - self.stalled_since:.2f} s")
            self.stalled_since = None
            self.stall_causes.clear()
        usable, said = self.poses.check(pose)
        if said:
            self.get_logger().warning(said)
        if not usable:
            return
        sample = convert(pose, self.mount)
        usable, change = self.tracking.check(sample.confidence)
        if change and usable:  # (rclpy refuses two severities from one call site)
            self.get_logger().info(change)
        elif change:
            self.get_logger().warning(change)
        if usable:
            self._publish(self.anchor.apply(sample))

    def _publish(self, s) -> None:
        m = Odometry()
        m.header.stamp = self.get_clock().now().to_msg()
        m.header.frame_id, m.child_frame_id = self.frames
        pp, o = m.pose.pose.position, m.pose.pose.orientation
        pp.x, pp.y, pp.z = (float(v) for v in s.position)
        o.w, o.x, o.y, o.z = (float(v) for v in s.quaternion)
        t = m.twist.twist
        t.linear.x, t.linear.y, t.linear.z = (float(v) for v in s.linear_velocity)
        t.angular.x, t.angular.y, t.angular.z = (float(v) for v in s.angular_velocity)
        m.pose.covariance = s.pose_covariance.reshape(-1).tolist()
        m.twist.covariance = s.twist_covariance.reshape(-1).tolist()
        self.pub.publish(m)
        self.tf.send(m)


def main(args: list[str] | None = None) -> int:
    return run_node(OdometryNode, "odometry", args, errors=(DeviceError,))


if __name__ == "__main__":
    sys.exit(main())
