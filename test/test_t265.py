"""The T265 source through a stand-in device that speaks pyrealsense2's pose API in the T265's own
axis convention (X right, Y up, Z back): conversions to REP-103 odometry and the clear errors."""

from __future__ import annotations

import re
from contextlib import contextmanager
from types import SimpleNamespace as NS

import numpy as np
import pytest

from uni_o4_ros.hardware.t265 import DeviceError, MountExtrinsic, T265Source, convert
from uni_o4_ros.robot.go1 import rotation_matrix, yaw


def ros_to_t265(v):
    x, y, z = v
    return NS(x=-y, y=z, z=-x)


class StandInRealSense:
    """pyrealsense2-shaped module: a T265 on a base moving in the plane (ground truth in ROS axes)."""

    def __init__(self, version="2.53.1", devices=("Intel RealSense T265",), mount=(0.2, 0.0, 0.1)):
        self.__version__ = version
        self.devices, self.mount = devices, np.array(mount)
        self.camera_info = NS(name="name")
        self.stream = NS(pose="pose")
        self.option = NS(enable_pose_jumping="enable_pose_jumping")
        self.t, self.v, self.yaw_rate = 0.0, 0.5, 0.2
        self.frames = 0  # numbered as the device numbers its frames

    def context(self):
        return NS(query_devices=lambda: [NS(get_info=lambda _k, n=n: n) for n in self.devices])

    def config(self):
        sensor = NS(set_option=lambda key, value: None)
        return NS(enable_stream=lambda s: None, resolve=lambda pipe: NS(get_device=lambda: NS(
            first_pose_sensor=lambda: sensor)))

    def truth(self):
        yaw = self.yaw_rate * self.t
        base = np.array([self.v * self.t, 0.0, 0.3])  # straight line in x, turning on the spot in yaw
        q = np.array([np.cos(yaw / 2), 0, 0, np.sin(yaw / 2)])
        return base, q, yaw

    def pipeline(self):
        rs = self

        def wait_for_frames(_timeout):
            rs.t += 0.005
            base, q, _ = rs.truth()
            r = rotation_matrix(q)
            cam = base + r @ rs.mount
            w = np.array([0, 0, rs.yaw_rate])
            v_cam = np.array([rs.v, 0, 0]) + np.cross(w, r @ rs.mount)
            vec = ros_to_t265(q[1:])
            pose = NS(translation=ros_to_t265(cam), rotation=NS(w=q[0], x=vec.x, y=vec.y, z=vec.z),
                      velocity=ros_to_t265(v_cam), angular_velocity=ros_to_t265(w), tracker_confidence=3)
            rs.frames += 1
            return NS(get_pose_frame=lambda n=rs.frames: NS(get_pose_data=lambda: pose, get_frame_number=lambda: n))

        return NS(start=lambda cfg: None, stop=lambda: None,
                  try_wait_for_frames=lambda t: (True, wait_for_frames(t)))


def test_pose_stream_becomes_base_odometry_in_ros_axes():
    rs = StandInRealSense()
    src = T265Source(rs)
    mount = MountExtrinsic.from_config([0.2, 0.0, 0.1], [0.0, 0.0, 0.0])
    for _ in range(200):
        s = convert(src.read(), mount)
    base, q, yaw = rs.truth()
    np.testing.assert_allclose(s.position, base, atol=1e-9)
    np.testing.assert_allclose(np.abs(s.quaternion @ q), 1.0, atol=1e-9)
    # twist in base_link: forward speed rotated into the turning body frame, yaw rate about z
    np.testing.assert_allclose(s.linear_velocity, [0.5 * np.cos(yaw), -0.5 * np.sin(yaw), 0], atol=1e-9)
    np.testing.assert_allclose(s.angular_velocity, [0, 0, 0.2], atol=1e-9)
    assert s.confidence == 3 and s.pose_covariance[0, 0] == pytest.approx(0.01)


def test_lower_confidence_inflates_covariance():
    rs = StandInRealSense()
    pose = T265Source(rs).read()
    pose.tracker_confidence = 1
    s = convert(pose, MountExtrinsic.from_config([0, 0, 0], [0, 0, 0]))
    assert s.pose_covariance[0, 0] == pytest.approx(0.01 * 100) and s.twist_covariance[0, 0] == pytest.approx(0.01)


@pytest.mark.parametrize("rs, message", [
    (StandInRealSense(version="2.55.1"), "has no T265 support"),
    (StandInRealSense(devices=("Intel RealSense D435",)), "no RealSense T265 found"),
    (StandInRealSense(devices=()), "no RealSense T265 found"),
])
def test_missing_or_unsupported_device_gives_a_clear_error(rs, message):
    with pytest.raises(DeviceError, match=message):
        T265Source(rs)


def test_odometry_node_without_a_device_exits_with_one_line(ros_env):
    import subprocess
    import sys

    from conftest import ROOT

    proc = subprocess.run([sys.executable, "-m", "uni_o4_ros.nodes.odometry_node"], env=ros_env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("odometry: error: pyrealsense2 is not installed")
    assert "Traceback" not in proc.stderr


def test_odometry_node_replays_a_recorded_bag_in_order_and_in_time(ros_env, tmp_path):
    """source:=bag: nav_msgs/Odometry recorded into an MCAP bag (real CDR from rclpy) comes out of the
    node again over DDS, every pose in order, spread over the recorded duration."""
    import subprocess
    import sys
    import time

    import rclpy
    from nav_msgs.msg import Odometry
    from rclpy.serialization import serialize_message
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore
    from tf2_msgs.msg import TFMessage

    from conftest import ROOT, start_node, stop_nodes, wait_until
    from uni_o4_ros.nodes.qos import SENSOR
    from uni_o4_ros.nodes.tf import TF, TF_STATIC

    bag = tmp_path / "odom_bag"
    w = Writer(bag, version=9, storage_plugin=StoragePlugin.MCAP)
    w.open()
    conn = w.add_connection("/odom", "nav_msgs/msg/Odometry", typestore=get_typestore(Stores.ROS2_KILTED))
    for i in range(50):  # 1 s of poses at 50 Hz, walking forward at 0.5 m/s
        m = Odometry()
        m.pose.pose.position.x, m.pose.pose.orientation.w, m.twist.twist.linear.x = 0.01 * i, 1.0, 0.5
        w.write(conn, 10**9 + i * 20_000_000, serialize_message(m))
    w.close()

    rclpy.init()
    node = rclpy.create_node("odom_watcher")
    got: list[tuple[float, float]] = []
    node.create_subscription(Odometry, "odom", lambda m: got.append((time.monotonic(), m.pose.pose.position.x)),
                             SENSOR)
    tf, tf_static = [], []
    node.create_subscription(TFMessage, "/tf", lambda m: tf.extend(m.transforms), TF)
    node.create_subscription(TFMessage, "/tf_static", lambda m: tf_static.extend(m.transforms), TF_STATIC)
    proc = start_node("uni_o4_ros.nodes.odometry_node", ros_env, "source:=bag", f"bag_path:={bag}",
                      "mount_xyz:=[0.3, 0.0, 0.1]")
    try:
        wait_until(rclpy, node, lambda: (got and got[-1][1] >= 0.49 - 1e-9) or proc.poll() is not None, 60)
        assert proc.poll() is None, proc.stderr.read()
        xs = [x for _, x in got]
        assert xs == sorted(xs) and xs[-1] == pytest.approx(0.49)  # in order, through the last pose
        assert got[-1][0] - got[0][0] > 0.5 * 0.98 * len(xs) / 50  # replayed in time, not as one burst
        # TF (REP-105): odom -> base_link follows the poses; base_link -> camera mount is latched
        wait_until(rclpy, node, lambda: tf_static and tf and tf[-1].transform.translation.x >= 0.49 - 1e-9, 30)
        assert (tf[-1].header.frame_id, tf[-1].child_frame_id) == ("odom", "base_link")
        s = tf_static[0]
        assert (s.header.frame_id, s.child_frame_id) == ("base_link", "t265_pose_frame")
        assert (s.transform.translation.x, s.transform.translation.z) == pytest.approx((0.3, 0.1))
    finally:
        stop_nodes(proc)
        node.destroy_node()
        rclpy.shutdown()
    missing = subprocess.run([sys.executable, "-m", "uni_o4_ros.nodes.odometry_node", "--ros-args", "-p",
                              "source:=bag", "-p", f"bag_path:={tmp_path / 'none'}"], env=ros_env, cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "not found" in missing.stderr and "Traceback" not in missing.stderr


def standin_pyrealsense2():
    """The pyrealsense2 the odometry node imports when the stand-in's folder leads PYTHONPATH."""
    import importlib.util

    from uni_o4_ros.sim.t265_standin import STANDIN_MODULES

    spec = importlib.util.spec_from_file_location("pyrealsense2", STANDIN_MODULES / "pyrealsense2" / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_stand_in_t265_reports_the_simulated_trunk_as_the_device_would(monkeypatch):
    """Camera truth from the simulated robot -> the stand-in's pose frames (T265 axes, in the frame where
    tracking started) -> convert(): the trunk's pose relative to its start and its body-frame twist,
    while it turns, pitches and moves. Without its feed there is no T265; a silent feed is a late frame."""
    import socket

    from uni_o4_ros.hardware.t265 import quat_conj, quat_mul
    from uni_o4_ros.sim.go1_udp_robot import free_udp_ports
    from uni_o4_ros.sim.t265_standin import FEED_ENV, camera_truth

    rs = standin_pyrealsense2()
    monkeypatch.delenv(FEED_ENV, raising=False)
    with pytest.raises(DeviceError, match="no RealSense T265 found"):
        T265Source(rs)
    [port] = free_udp_ports()
    monkeypatch.setenv(FEED_ENV, f"127.0.0.1:{port}")
    src = T265Source(rs)
    mount = MountExtrinsic.from_config([0.25, 0.02, 0.05], [0.0, 0.1, 0.0])
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def yaw_pitch(yaw, pitch):
        return quat_mul(np.array([np.cos(yaw / 2), 0, 0, np.sin(yaw / 2)]),
                        np.array([np.cos(pitch / 2), 0, np.sin(pitch / 2), 0]))

    def seen(p, q, v_world, w_body):
        tx.sendto(camera_truth(p, q, v_world, w_body, mount.translation, mount.quaternion), ("127.0.0.1", port))
        return convert(src.read(timeout_ms=2000), mount)

    try:
        p0, q0 = np.array([1.0, 2.0, 0.3]), yaw_pitch(0.7, 0.0)
        start = seen(p0, q0, np.zeros(3), np.zeros(3))
        p1, q1 = p0 + [0.3, 0.4, -0.02], yaw_pitch(1.0, 0.1)
        v_body, w_body = np.array([0.4, 0.1, -0.05]), np.array([0.05, -0.1, 0.3])
        s = seen(p1, q1, rotation_matrix(q1) @ v_body, w_body)
        # Pose relative to the start: displacement in the start heading's frame, rotation since the start.
        np.testing.assert_allclose(s.position - start.position, rotation_matrix(q0).T @ (p1 - p0), atol=1e-9)
        np.testing.assert_allclose(np.abs(s.quaternion @ quat_mul(quat_conj(q0), q1)), 1.0, atol=1e-9)
        np.testing.assert_allclose(s.linear_velocity, v_body, atol=1e-9)
        np.testing.assert_allclose(s.angular_velocity, w_body, atol=1e-9)
        assert src.read(timeout_ms=20) is None  # no frame: late, not an exception
        with pytest.raises(RuntimeError, match="didn't arrive"):
            src.pipe.wait_for_frames(20)  # as librealsense's own call fails
    finally:
        tx.close()
        src.close()


@pytest.mark.parametrize("pose_jumping", [False, True])
def test_a_relocalisation_leaves_odom_continuous_unless_pose_jumping_is_asked_for(monkeypatch, pose_jumping):
    """The T265 jumps its pose back by the drift it learns at a relocalisation, unless enable_pose_jumping
    is off, which must be set before streaming. T265Source sets it off by default (REP-105: odom is
    continuous), so a robot standing still keeps its odom pose; asked for, the pose jumps by the drift."""
    import socket

    from uni_o4_ros.sim.go1_udp_robot import free_udp_ports
    from uni_o4_ros.sim.t265_standin import FEED_ENV, camera_truth

    rs = standin_pyrealsense2()
    [port] = free_udp_ports()
    monkeypatch.setenv(FEED_ENV, f"127.0.0.1:{port}")
    src = T265Source(rs, pose_jumping=pose_jumping) if pose_jumping else T265Source(rs)
    assert src.pose_jumping_error == ""
    mount = MountExtrinsic.from_config([0.25, 0.0, 0.05], [0.0, 0.0, 0.0])
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    still, upright, drift = np.zeros(3), np.array([1.0, 0.0, 0.0, 0.0]), np.array([0.3, -0.1, 0.0])

    def seen(relocalizations: int):
        tx.sendto(camera_truth(still, upright, still, still, mount.translation, mount.quaternion, 3, drift,
                               relocalizations), ("127.0.0.1", port))
        return convert(src.read(timeout_ms=2000), mount)

    try:
        before = seen(0)
        after = seen(1)  # the camera recognises where it is and learns its drift
        assert seen(1).position == pytest.approx(after.position)  # one jump, not one per frame
        with pytest.raises(RuntimeError, match="read-only while streaming"):  # as the device refuses it
            rs.config().resolve(src.pipe).get_device().first_pose_sensor().set_option(rs.option.enable_pose_jumping, 1)
    finally:
        tx.close()
        src.close()
    jump = after.position - before.position
    if pose_jumping:
        np.testing.assert_allclose(jump, -drift, atol=1e-9)
    else:
        np.testing.assert_allclose(jump, 0.0, atol=1e-9)
    np.testing.assert_allclose(after.linear_velocity, 0.0, atol=1e-9)  # the velocity is the same either way


def test_a_t265_unplugged_and_back_is_restarted_with_its_settings_and_odom_goes_on_from_its_last_pose(monkeypatch):
    """A T265 that leaves USB mid-stream and re-enumerates (a cable knocked) left librealsense's pipeline
    stopped: every read raised "cannot be called before start()" for good, and odometry stopped until someone
    restarted the node. Reads failing for RESTART_AFTER_S now restart the pipeline (again every
    RESTART_EVERY_S while the device is away), pose jumping is set off again on the device that came back (it
    comes back with its defaults), and OdomAnchor puts the new tracking origin where odom was, not back at 0."""
    import socket

    from uni_o4_ros.hardware.t265 import RESTART_AFTER_S, RESTART_EVERY_S, OdomAnchor
    from uni_o4_ros.sim.go1_udp_robot import free_udp_ports
    from uni_o4_ros.sim.t265_standin import FEED_ENV, camera_truth, replugged, unplugged

    rs = standin_pyrealsense2()
    [port] = free_udp_ports()
    monkeypatch.setenv(FEED_ENV, f"127.0.0.1:{port}")
    src, anchor = T265Source(rs), OdomAnchor()
    jumping = rs.option.enable_pose_jumping
    assert src.pipe.options[jumping] == 0.0
    mount = MountExtrinsic.from_config([0.25, 0.0, 0.05], [0.0, 0.0, 0.0])
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    upright, still = np.array([1.0, 0.0, 0.0, 0.0]), np.zeros(3)
    turned = np.array([np.cos(0.3), 0.0, 0.0, np.sin(0.3)])  # heading 0.6 rad

    def seen(x: float, y: float = 0.0, q=upright, now: float = 0.0):
        """(the device's pose as converted, odom's), as the odometry node reads and anchors them"""
        tx.sendto(camera_truth(np.array([x, y, 0.3]), q, still, still, mount.translation, mount.quaternion),
                  ("127.0.0.1", port))
        raw = convert(src.read(timeout_ms=2000, now=now), mount)
        if src.restarted:
            src.restarted = False
            anchor.restart()
        return raw, anchor.apply(raw)

    try:
        start = seen(2.0)[1]
        before = seen(3.0, q=turned)[1]  # 1 m on, turned 0.6 rad
        np.testing.assert_allclose(before.position - start.position, [1.0, 0.0, 0.0], atol=1e-9)
        tx.sendto(unplugged(), ("127.0.0.1", port))
        with pytest.raises(RuntimeError, match="Device disconnected"):
            src.read(timeout_ms=2000, now=10.0)
        assert src.pipe.options[jumping] == 1.0  # the device back on USB has its defaults
        with pytest.raises(RuntimeError, match="cannot be called before start"):
            src.read(now=10.0 + RESTART_AFTER_S / 2)  # stopped for good, as librealsense leaves it
        monkeypatch.delenv(FEED_ENV)  # not back on USB yet: the restart fails, and is tried again later
        with pytest.raises(RuntimeError, match="No device connected"):
            src.read(now=10.0 + RESTART_AFTER_S)
        with pytest.raises(RuntimeError, match="cannot be called before start"):
            src.read(now=10.0 + RESTART_AFTER_S + RESTART_EVERY_S / 2)  # not tried at every read
        monkeypatch.setenv(FEED_ENV, f"127.0.0.1:{port}")
        assert src.restarts == 0
        now = 10.0 + RESTART_AFTER_S + RESTART_EVERY_S
        assert src.read(timeout_ms=20, now=now) is None  # restarted, and listening again: no frame yet
        assert src.restarts == 1 and src.pipe.options[jumping] == 0.0
        raw, after = seen(3.5, 0.2, q=turned, now=now)  # the robot moved on meanwhile, unseen
        # The new tracking starts at its own origin, heading 0; odom carries on from its last pose and heading.
        assert np.linalg.norm(raw.position - before.position) > 0.9 and abs(yaw(raw.quaternion)) < 1e-9
        np.testing.assert_allclose(after.position, before.position, atol=1e-9)
        assert yaw(after.quaternion) == pytest.approx(0.6)
        moved = seen(3.5 + np.cos(0.6), 0.2 + np.sin(0.6), q=turned, now=now)[1]  # 1 m straight ahead
        np.testing.assert_allclose(moved.position - after.position, [np.cos(0.6), np.sin(0.6), 0.0], atol=1e-9)
        np.testing.assert_allclose(moved.linear_velocity, 0.0, atol=1e-9)

        # Back within one read: librealsense restarts the pipeline itself, without an error, with the device's
        # default options and a new origin. Its frame numbers begin again: restarted here, option set again.
        tx.sendto(replugged(), ("127.0.0.1", port))
        assert src.read(timeout_ms=20, now=now) is None and src.pipe.options[jumping] == 1.0  # librealsense's own
        tx.sendto(camera_truth(np.array([5.0, 0.2, 0.3]), turned, still, still, mount.translation,
                               mount.quaternion), ("127.0.0.1", port))
        assert src.read(timeout_ms=2000, now=now) is None  # the new session's first frame: the restart's turn
        assert src.restarts == 2 and src.restarted and src.pipe.options[jumping] == 0.0
        later = seen(5.0, 0.2, q=turned, now=now)[1]
        np.testing.assert_allclose(later.position, moved.position, atol=1e-9)  # where odom was, not 0
    finally:
        tx.close()
        src.close()


@contextmanager
def _odometry_node_fed(ros_env, tmp_path):
    """The odometry node behind the stand-in pyrealsense2, fed as the stand-in Go1 feeds it. Yields
    send(datagrams, until) (one datagram per spin, the same or the next of an iterable, until `until()`), the
    forward velocity of every Odometry published, the node's log file, and each Odometry's (x, y)."""
    import itertools
    import os
    import socket
    import subprocess

    import rclpy
    from nav_msgs.msg import Odometry

    from conftest import ROOT, stop_nodes, wait_until
    from uni_o4_ros.nodes.processes import node_command
    from uni_o4_ros.nodes.qos import SENSOR
    from uni_o4_ros.sim.go1_udp_robot import free_udp_ports
    from uni_o4_ros.sim.t265_standin import FEED_ENV, STANDIN_MODULES

    [port] = free_udp_ports()
    env = ros_env | {FEED_ENV: f"127.0.0.1:{port}",
                     "PYTHONPATH": os.pathsep.join(p for p in (str(STANDIN_MODULES), ros_env.get("PYTHONPATH")) if p)}
    log = tmp_path / "odometry.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(node_command("odometry_node", []), env=env, cwd=ROOT, stdout=out,
                                stderr=subprocess.STDOUT)
    rclpy.init()
    node = rclpy.create_node("watch_odom")
    got: list[float] = []  # forward velocity of every Odometry published
    positions: list[tuple[float, float]] = []  # and its (x, y)

    def heard(m: Odometry) -> None:
        got.append(m.twist.twist.linear.x)
        positions.append((m.pose.pose.position.x, m.pose.pose.position.y))

    node.create_subscription(Odometry, "odom", heard, SENSOR)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def send(datagrams, until) -> None:
        source = itertools.repeat(datagrams) if isinstance(datagrams, bytes) else iter(datagrams)

        def step() -> bool:  # one pose per spin, as a camera streams them
            assert proc.poll() is None, "the odometry node ended: " + log.read_text()[-2000:]
            tx.sendto(next(source), ("127.0.0.1", port))
            return until()
        wait_until(rclpy, node, step, 60)

    try:
        yield send, got, log, positions
    finally:
        tx.close()
        stop_nodes(proc)
        node.destroy_node()
        rclpy.shutdown()


def test_odometry_node_publishes_nothing_while_the_tracker_has_failed(ros_env, tmp_path):
    """A T265 whose tracking failed (confidence 0) still sends poses, with a velocity that is not the
    robot's; rewards computed from it would be noise recorded as truth. The odometry node leaves such
    poses out (so the recorder's odom_timeout ends the episode), says so once, and resumes when the
    confidence does. Through the stand-in pyrealsense2, fed as the stand-in Go1 feeds it."""
    from uni_o4_ros.sim.t265_standin import camera_truth

    zero, mount = np.zeros(3), MountExtrinsic.from_config([0.25, 0.0, 0.05], [0.0, 0.0, 0.0])

    def pose(vx: float, confidence: int) -> bytes:
        return camera_truth(zero, np.array([1.0, 0, 0, 0]), np.array([vx, 0, 0]), zero, mount.translation,
                            mount.quaternion, confidence)

    with _odometry_node_fed(ros_env, tmp_path) as (send, got, log, _):
        send(pose(0.5, 3), lambda: any(abs(v - 0.5) < 1e-6 for v in got))  # tracking: published
        send(pose(5.0, 0), lambda: "T265: tracking confidence 0" in log.read_text())  # failed: read, left out
        send(pose(1.0, 2), lambda: any(abs(v - 1.0) < 1e-6 for v in got))  # recovered
    assert not any(abs(v - 5.0) < 1e-3 for v in got)  # no velocity of the failed tracker reached anyone
    text = log.read_text()
    assert text.count("below min_tracker_confidence 1): no odometry until it recovers") == 1
    assert "T265: tracking confidence 2 again: odometry resumes" in text


def test_pose_samples_that_are_no_pose_are_ignored_not_the_end_of_the_odometry_node(ros_env, tmp_path):
    """Seen through the stand-in T265's feed: a NaN tracker confidence ended the node (ValueError), one of
    -400 too (OverflowError in the covariance), and a zero quaternion was published as NaN positions. Such
    samples are now ignored like lost ones: counted, said in the log, not published; the node goes on."""
    import itertools
    import math

    from uni_o4_ros.sim.t265_standin import camera_truth

    zero, mount = np.zeros(3), MountExtrinsic.from_config([0.25, 0.0, 0.05], [0.0, 0.0, 0.0])

    def pose(vx: float, confidence: float = 3, quaternion=(1.0, 0, 0, 0)) -> bytes:
        return camera_truth(zero, np.array(quaternion), np.array([vx, 0, 0]), zero, mount.translation,
                            mount.quaternion, confidence)

    bad = [pose(5.0, math.nan), pose(6.0, -400), pose(7.0, quaternion=(0.0, 0, 0, 0)), pose(math.nan)]
    with _odometry_node_fed(ros_env, tmp_path) as (send, got, log, _):
        send(pose(0.5), lambda: any(abs(v - 0.5) < 1e-6 for v in got))
        # each kind in turn, until the node has ignored 100 (it says the first and every 100th)
        send(itertools.cycle(bad), lambda: "(100 so far)" in log.read_text())
        send(pose(1.0), lambda: any(abs(v - 1.0) < 1e-6 for v in got))  # the node still runs, and publishes
    assert all(math.isfinite(v) and v < 4.0 for v in got)  # none of the samples that are no pose
    text = log.read_text()
    assert re.search(r"T265: ignored a pose sample: (tracker confidence|NaN|its rotation).* \(1 so far\)", text), text


def test_a_device_read_that_raises_is_a_stall_said_with_its_type_not_the_end_of_the_odometry_node(ros_env, tmp_path):
    """Seen in the code: poll() caught only RuntimeError, librealsense's word for a device gone, so an OSError
    from USB (or any other exception of the read) ended the node. Through the stand-in T265, whose read raises
    as told by its feed: each failure is a stall, said once with the exception's type and message (a bug in a
    driver must show as one), said again when the cause changes, and odometry resumes when poses do."""
    from uni_o4_ros.sim.t265_standin import camera_truth, read_failure

    zero, mount = np.zeros(3), MountExtrinsic.from_config([0.25, 0.0, 0.05], [0.0, 0.0, 0.0])

    def pose(vx: float) -> bytes:
        return camera_truth(zero, np.array([1.0, 0, 0, 0]), np.array([vx, 0, 0]), zero, mount.translation,
                            mount.quaternion)

    usb = "OSError: [Errno 19] No such device"
    with _odometry_node_fed(ros_env, tmp_path) as (send, got, log, _):
        send(pose(0.5), lambda: any(abs(v - 0.5) < 1e-6 for v in got))
        # the read raises on every spin until the log says so (send() checks the node is still running)
        send(read_failure("OSError", "[Errno 19] No such device"), lambda: usb in log.read_text())
        send(pose(1.0), lambda: any(abs(v - 1.0) < 1e-6 for v in got))  # back: published again
        send(read_failure("OSError", "[Errno 19] No such device"), lambda: log.read_text().count(usb) == 2)
        send(read_failure("ValueError", "frame of 0 bytes"), lambda: "ValueError: frame of 0 bytes" in log.read_text())
        send(pose(1.5), lambda: any(abs(v - 1.5) < 1e-6 for v in got))
    text = log.read_text()
    # once per stall (each was read on many spins), with the type; the second stall's change of cause said too
    assert text.count(f"T265: reading the device failed: {usb}; no odometry until poses come back") == 2, text
    assert text.count("T265: reading the device failed: ValueError: frame of 0 bytes") == 1, text
    assert text.count("T265: poses again after") == 2, text


def test_the_odometry_node_restarts_a_t265_unplugged_and_back_and_odom_goes_on_from_where_it_was(ros_env, tmp_path):
    """The node behind the stand-in T265, which leaves USB and comes back as librealsense's pipeline meets it:
    before, the node said the first error and stalled for good (every later read raised). It restarts the
    pipeline once reads have failed for a second, says so, and publishes again, from the last pose."""
    from uni_o4_ros.sim.t265_standin import camera_truth, unplugged

    zero, mount = np.zeros(3), MountExtrinsic.from_config([0.25, 0.0, 0.05], [0.0, 0.0, 0.0])

    def at(x: float) -> bytes:
        return camera_truth(np.array([x, 0.0, 0.3]), np.array([1.0, 0, 0, 0]), np.array([0.5, 0, 0]), zero,
                            mount.translation, mount.quaternion)

    with _odometry_node_fed(ros_env, tmp_path) as (send, got, log, positions):
        send(at(1.0), lambda: len(positions) >= 1)
        x0 = positions[0][0]
        send(at(2.0), lambda: positions[-1][0] - x0 > 0.99)  # 1 m from where tracking began
        walked = len(positions)
        send(unplugged(), lambda: "Device disconnected" in log.read_text())
        send(at(2.5), lambda: "its pipeline restarted (restart 1)" in log.read_text() and len(positions) > walked)
        send(at(3.0), lambda: positions[-1][0] - x0 > 1.49)
    assert "T265: reading the device failed: RuntimeError: Device disconnected" in log.read_text()
    after = [x - x0 for x, _ in positions[walked:]]
    # from the last pose on: 1 m (not back at the start), then the 0.5 m walked since the camera came back
    assert after[0] == pytest.approx(1.0, abs=1e-6) and after[-1] == pytest.approx(1.5, abs=1e-6), after


def test_each_kind_of_sample_that_is_no_pose_is_judged_before_conversion():
    """The decision lives in the ROS-free core: which samples are no pose, and what the log says of them."""
    from uni_o4_ros.hardware.t265 import PoseCheck

    def pose(conf=3, q=(1.0, 0.0, 0.0, 0.0), v=(0.5, 0.0, 0.0)):
        vec = NS(x=0.0, y=0.0, z=0.0)
        return NS(translation=vec, rotation=NS(w=q[0], x=q[1], y=q[2], z=q[3]), velocity=NS(x=v[0], y=v[1], z=v[2]),
                  angular_velocity=vec, tracker_confidence=conf)

    check, mount = PoseCheck(), MountExtrinsic.from_config([0.25, 0.0, 0.05], [0.0, 0.0, 0.0])
    assert check.check(pose()) == (True, None) and np.isfinite(convert(pose(), mount).position).all()
    assert check.check(pose(conf=float("nan"))) == (
        False, "T265: ignored a pose sample: tracker confidence nan (0 failed .. 3 high) (1 so far)")
    for bad in (pose(conf=-400), pose(conf=4), pose(conf=2.5), pose(conf=None), pose(q=(0.0, 0.0, 0.0, 0.0)),
                pose(q=(float("nan"), 0.0, 0.0, 0.0)), pose(v=(float("inf"), 0.0, 0.0))):
        assert check.check(bad) == (False, None)
    assert check.ignored == 8
    for _ in range(91):
        check.check(pose(q=(0.0, 0.0, 0.0, 0.0)))
    assert check.check(pose(q=(0.0, 0.0, 0.0, 0.0))) == (
        False, "T265: ignored a pose sample: its rotation is no unit quaternion (norm 0) (100 so far)")
    assert check.check(pose(conf=0)) == (True, None)  # a failed tracker's sample is a pose: TrackingWatch judges it


def test_a_camera_mount_must_be_three_finite_numbers_each():
    with pytest.raises(ValueError, match=r"mount_xyz: must be 3 finite numbers, got \[0.25, 0.0\]"):
        MountExtrinsic.from_config([0.25, 0.0], [0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="mount_rpy: must be 3 finite numbers"):
        MountExtrinsic.from_config([0.25, 0.0, 0.05], [0.0, float("nan"), 0.0])
