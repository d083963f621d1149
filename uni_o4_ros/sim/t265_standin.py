"""A stand-in T265 on the simulated Go1: the camera's pose as the device would report it, through
pyrealsense2's own pose API, so the odometry node runs unchanged without a camera.

Two halves, joined by a local UDP feed:
- the simulated robot (`go1_udp_robot --t265 HOST:PORT`) sends, after every tick, where the camera
  mounted on its trunk is in the world: `camera_truth()`;
- a `pyrealsense2` module of our own (in `STANDIN_MODULES`, put first on the odometry node's
  PYTHONPATH) listens on the address in the environment variable `UNI_O4_T265_FEED`, lists one
  "Intel RealSense T265" while it is set, and turns each datagram into a pose frame as the T265 does:
  in its own world frame (origin where the camera started, gravity-aligned, heading of the start),
  in the T265's axes (X right, Y up, Z back), velocities in that world frame.

No feed for longer than the caller's timeout is what a stalled USB camera looks like:
`try_wait_for_frames` returns (False, None) and `wait_for_frames` raises, as librealsense does.
A `read_failure()` datagram makes that read raise instead (an OSError of a USB drop-out, say), as a driver
may in the middle of a stream. An `unplugged()` datagram is the device leaving USB (it re-enumerates), as
librealsense's pipeline meets it: that read raises, the pipeline is stopped, every later read raises until
someone starts it again, and the device comes back with its default options and a new tracking origin.
A `replugged()` datagram is the device leaving and coming back within the read, which librealsense
restarts by itself: no error, a new session (origin, frame numbers from 1, default options).

Drift and relocalisation: the feed may carry the drift the camera's tracking has gathered (its poses
are the truth plus that drift) and a count of relocalisations (the camera recognised a place it had
mapped and learnt its drift). As on the device (librealsense doc/t265.md), with the option
enable_pose_jumping on (its default) a relocalisation makes the reported pose jump back by the drift;
off, the pose stays continuous and keeps the drift.
"""

from __future__ import annotations

import os
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..hardware.t265 import T265_LAST_VERSION, quat_conj, quat_mul
from ..robot.go1 import rotation_matrix, yaw

FEED_ENV = "UNI_O4_T265_FEED"
STANDIN_MODULES = Path(__file__).with_name("standin_modules")
DEVICE_NAME = "Intel RealSense T265"
# Camera position (3), orientation w x y z (4), linear and angular velocity (3 + 3), all in the
# simulator's world frame (ROS axes), the tracker confidence, the tracking's drift (3, world frame)
# and how many relocalisations happened so far.
_FEED = struct.Struct("<18d")
# A datagram that makes the read raise: this prefix, the exception's type name, ":", its message.
_FAILURE = b"FAIL:"
_FAILURES: dict[str, type[Exception]] = {"OSError": OSError, "RuntimeError": RuntimeError, "ValueError": ValueError}


def camera_truth(position: np.ndarray, quaternion: np.ndarray, linear_velocity_world: np.ndarray,
                 angular_velocity_body: np.ndarray, mount_xyz: np.ndarray, mount_quat: np.ndarray,
                 confidence: int = 3, drift: np.ndarray | None = None, relocalizations: int = 0) -> bytes:
    """The feed datagram for a trunk pose (world frame) and a camera mounted at (mount_xyz, mount_quat)
    in base_link, with the tracking's drift (world frame) and its relocalisation count so far."""
    r = rotation_matrix(quaternion)
    arm = r @ np.asarray(mount_xyz, np.float64)
    w_world = r @ np.asarray(angular_velocity_body, np.float64)
    v_cam = np.asarray(linear_velocity_world, np.float64) + np.cross(w_world, arm)
    q_cam = quat_mul(np.asarray(quaternion, np.float64), np.asarray(mount_quat, np.float64))
    drift = np.zeros(3) if drift is None else np.asarray(drift, np.float64)
    return _FEED.pack(*(np.asarray(position) + arm), *q_cam, *v_cam, *w_world, float(confidence), *drift,
                      float(relocalizations))


def read_failure(kind: str, message: str) -> bytes:
    """The feed datagram that makes the device's read raise `kind` (OSError, RuntimeError, ValueError)."""
    if kind not in _FAILURES:
        raise ValueError(f"stand-in T265: no failure {kind!r} (one of {', '.join(_FAILURES)})")
    return _FAILURE + f"{kind}:{message}".encode()


_UNPLUGGED = b"GONE"
_REPLUGGED = b"BACK"


def unplugged() -> bytes:
    """The feed datagram of the device leaving USB mid-stream (a cable knocked, a hub's reset) and staying away
    longer than librealsense waits for it within a read."""
    return _UNPLUGGED


def replugged() -> bytes:
    """The feed datagram of the device leaving USB and coming back within the read, which librealsense then
    restarts by itself: no error, a new tracking session (origin, frame numbers, default options)."""
    return _REPLUGGED


def _raise_failure(data: bytes) -> None:
    kind, _, message = data[len(_FAILURE):].decode().partition(":")
    raise _FAILURES[kind](message)


def feed_address(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"{FEED_ENV}={value!r}: expected HOST:PORT")
    return host, int(port)


def _ros_to_t265(v: np.ndarray) -> tuple[float, float, float]:
    x, y, z = v
    return -y, z, -x


@dataclass
class Vector:
    x: float
    y: float
    z: float


@dataclass
class Quaternion:
    w: float
    x: float
    y: float
    z: float


@dataclass
class Pose:
    """What pyrealsense2's pose_frame.get_pose_data() returns (the fields the odometry node reads)."""

    translation: Vector
    rotation: Quaternion
    velocity: Vector
    angular_velocity: Vector
    tracker_confidence: int
    mapper_confidence: int


class PoseFrame:
    def __init__(self, pose: Pose, number: int) -> None:
        self._pose, self._number = pose, number

    def __bool__(self) -> bool:
        return True

    def get_pose_data(self) -> Pose:
        return self._pose

    def get_frame_number(self) -> int:
        return self._number


class Frameset:
    def __init__(self, pose: Pose, number: int) -> None:
        self._frame = PoseFrame(pose, number)

    def get_pose_frame(self) -> PoseFrame:
        return self._frame


class StandInT265:
    """The device: camera truth in, T265 pose frames out (relative to where tracking started)."""

    def __init__(self, address: tuple[str, int], pose_jumping: bool = True) -> None:
        self.pose_jumping = pose_jumping
        self._relocalizations, self._corrected = 0.0, np.zeros(3)  # the drift a jump took back
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self.sock.bind(address)
        except OSError as exc:
            self.sock.close()
            raise RuntimeError(f"stand-in T265: cannot listen on {address[0]}:{address[1]}: {exc}") from exc
        self._origin: tuple[np.ndarray, np.ndarray] | None = None  # camera start: position, heading quaternion
        self.gone = False  # left USB (`unplugged`)
        self.replugged = False  # left USB and came back (`replugged`)
        self.frame_number = 0  # of the frames this session sent, as the device numbers them

    def _latest(self, timeout_s: float) -> bytes | None:
        self.sock.settimeout(timeout_s)
        try:
            data = self.sock.recv(256)
        except TimeoutError:
            return None
        self.sock.setblocking(False)  # a frame is the newest sample: drop what queued up behind it
        try:
            while True:
                data = self.sock.recv(256)
        except BlockingIOError:
            pass
        return data

    def frame(self, timeout_ms: int) -> Frameset | None:
        data = self._latest(timeout_ms / 1000.0)
        if data == _UNPLUGGED:
            self.gone = True  # the pipeline stops (pyrealsense2 stand-in)
            raise RuntimeError("Device disconnected. Failed to recconect: No device connected5000")  # librealsense's
        if data == _REPLUGGED:
            self.replugged = True  # the pipeline starts a new session and reads on (pyrealsense2 stand-in)
            return None
        if data is not None and data.startswith(_FAILURE):
            _raise_failure(data)
        if data is None or len(data) != _FEED.size:
            return None
        v = np.array(_FEED.unpack(data))
        p, q, lin, ang, conf, drift, relocalizations = v[0:3], v[3:7], v[7:10], v[10:13], v[13], v[14:17], v[17]
        # The device's confidence is an integer; a value that is none (NaN) is passed on for the node to judge.
        conf = int(conf) if float(conf).is_integer() else float(conf)
        if relocalizations > self._relocalizations:
            self._relocalizations = relocalizations
            if self.pose_jumping:
                self._corrected = drift.copy()
        p = p + drift - self._corrected
        if self._origin is None:
            heading = yaw(q)
            self._origin = (p.copy(), np.array([np.cos(heading / 2), 0.0, 0.0, np.sin(heading / 2)]))
        p0, q0 = self._origin
        r0t = rotation_matrix(q0).T  # world -> the T265's start frame (gravity-aligned)
        q_rel = quat_mul(quat_conj(q0), q)
        qv = _ros_to_t265(q_rel[1:])
        self.frame_number += 1
        return Frameset(Pose(Vector(*_ros_to_t265(r0t @ (p - p0))), Quaternion(q_rel[0], *qv),
                             Vector(*_ros_to_t265(r0t @ lin)), Vector(*_ros_to_t265(r0t @ ang)), conf, conf),
                        self.frame_number)

    def close(self) -> None:
        self.sock.close()


def device_present() -> bool:
    return bool(os.environ.get(FEED_ENV))


def version() -> str:
    return ".".join(map(str, T265_LAST_VERSION))

