"""RealSense T265 pose source and its conversion to REP-103/105 odometry (no ROS import).

T265 axes: +X right, +Y up, +Z backwards. ROS body axes: +x forward, +y left, +z up, so
x = -z_t, y = -x_t, z = y_t (the quaternion's vector part maps the same way). The camera pose is
turned into the base pose with the mount extrinsic (base_link -> camera, from config).
Covariances grow as tracker confidence drops (as realsense-ros does: 10^(3 - conf) on the pose,
10^(1 - conf) on the twist).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..ranges import check_vector
from ..robot.go1 import rotation_matrix, yaw

T265_LAST_VERSION = (2, 53, 1)
T265_HIGH_CONFIDENCE = 3  # tracker_confidence: 0 failed, 1 low, 2 medium, 3 high
# A device gone from USB (it re-enumerates) leaves librealsense's pipeline stopped for good: every read then raises.
# Reads raising this long start a restart of the pipeline, tried again this often while it fails.
RESTART_AFTER_S = 1.0
RESTART_EVERY_S = 2.0


class DeviceError(RuntimeError):
    pass


@dataclass
class PoseSample:
    position: np.ndarray  # odom frame, m
    quaternion: np.ndarray  # w, x, y, z, base_link in odom
    linear_velocity: np.ndarray  # base_link frame, m/s
    angular_velocity: np.ndarray  # base_link frame, rad/s
    confidence: int  # 0 failed .. 3 high
    pose_covariance: np.ndarray  # 6x6
    twist_covariance: np.ndarray  # 6x6


def _t265_to_ros_vec(v: Any) -> np.ndarray:
    return np.array([-v.z, -v.x, v.y], np.float64)


def quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    w1, x1, y1, z1 = a
    w2, x2, y2, z2 = b
    return np.array([w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2, w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
                     w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2, w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2])


def quat_conj(q: np.ndarray) -> np.ndarray:
    return np.array([q[0], -q[1], -q[2], -q[3]])


@dataclass
class MountExtrinsic:
    """Pose of the camera in base_link (translation m, quaternion w, x, y, z)."""

    translation: np.ndarray
    quaternion: np.ndarray

    @classmethod
    def from_config(cls, xyz: list[float], rpy: list[float]) -> MountExtrinsic:
        xyz, (r, p, y) = check_vector("mount_xyz", xyz, 3), check_vector("mount_rpy", rpy, 3)
        cr, sr = np.cos(r / 2), np.sin(r / 2)
        cp, sp = np.cos(p / 2), np.sin(p / 2)
        cy, sy = np.cos(y / 2), np.sin(y / 2)
        q = np.array([cr * cp * cy + sr * sp * sy, sr * cp * cy - cr * sp * sy, cr * sp * cy + sr * cp * sy,
                      cr * cp * sy - sr * sp * cy])
        return cls(np.asarray(xyz, np.float64), q)


def pose_problem(pose: Any) -> str | None:
    """Why a pose sample is no pose (None: it is one): a tracker confidence outside 0..3, a NaN/inf number,
    a rotation that is no unit quaternion (zeros). A device or driver fault, or a stand-in fed garbage: used,
    it would raise in `convert` (10^(3 - confidence) overflows) or become NaN positions."""
    conf = pose.tracker_confidence
    try:
        known = float(conf) in (0.0, 1.0, 2.0, 3.0)
    except (TypeError, ValueError):
        known = False
    if not known:
        return f"tracker confidence {conf!r} (0 failed .. 3 high)"
    r = pose.rotation
    q = np.array([r.w, r.x, r.y, r.z], np.float64)
    vectors = np.array([[v.x, v.y, v.z] for v in (pose.translation, pose.velocity, pose.angular_velocity)], np.float64)
    if not (np.isfinite(q).all() and np.isfinite(vectors).all()):
        return "NaN/inf in its position, rotation or velocities"
    if not 0.9 < (norm := float(np.linalg.norm(q))) < 1.1:
        return f"its rotation is no unit quaternion (norm {norm:.3g})"
    return None


@dataclass
class PoseCheck:
    """Pose samples that are no pose (`pose_problem`) are ignored as a lost sample is: not published (the
    recorder's odom_timeout ends the episode if they go on), counted, and said in the log the first time and
    every 100th, instead of ending the odometry node or publishing NaN."""

    ignored: int = 0

    def check(self, pose: Any) -> tuple[bool, str | None]:
        """(usable, a line to log or None)."""
        why = pose_problem(pose)
        if why is None:
            return True, None
        self.ignored += 1
        if self.ignored == 1 or self.ignored % 100 == 0:
            return False, f"T265: ignored a pose sample: {why} ({self.ignored} so far)"
        return False, None


@dataclass
class TrackingWatch:
    """Whether the T265's poses may be used: below `min_confidence` (0 failed, 1 low, 2 medium, 3 high)
    its tracking has failed, and the velocity it reports is not the robot's; a reward computed from it
    would be noise recorded as truth. Such poses are left out, so whoever reads odometry sees a gap (the
    recorder's odom_timeout ends the episode as a truncation and starts none until poses come back).
    `min_confidence` 0: every pose is used."""

    min_confidence: int = 1
    lost: bool = False

    def check(self, confidence: int) -> tuple[bool, str | None]:
        """(usable, what changed: a line to log when tracking is lost or back, else None)."""
        usable = confidence >= self.min_confidence
        if usable == (not self.lost):
            return usable, None
        self.lost = not usable
        if self.lost:
            return False, (f"T265: tracking confidence {confidence} (below min_tracker_confidence "
                           f"{self.min_confidence}): no odometry until it recovers")
        return True, f"T265: tracking confidence {confidence} again: odometry resumes"


def confidence_covariance(confidence: int, accel_cov: float = 0.01, gyro_cov: float = 0.01
                          ) -> tuple[np.ndarray, np.ndarray]:
    """(pose, twist) 6x6 covariances for a T265 reporting `confidence` (0 failed .. 3 high), as realsense-ros
    sets them: diagonal, 0.01 * 10^(3 - confidence) on the pose, 0.01 * 10^(1 - confidence) on the twist. At
    high confidence that is 0.01 (0.1 m, 0.1 rad standard deviation) and 1e-4 (0.01 m/s, 0.01 rad/s)."""
    return np.eye(6) * accel_cov * 10.0 ** (3 - confidence), np.eye(6) * gyro_cov * 10.0 ** (1 - confidence)


def convert(pose: Any, mount: MountExtrinsic, accel_cov: float = 0.01, gyro_cov: float = 0.01) -> PoseSample:
    """A pyrealsense2 pose (translation, rotation, velocity, angular_velocity, tracker_confidence) ->
    base_link pose in odom with body-frame twist."""
    p_cam = _t265_to_ros_vec(pose.translation)
    r = pose.rotation
    q_cam = np.array([r.w, -r.z, -r.x, r.y])
    q_cam /= np.linalg.norm(q_cam)
    # odom_T_base = odom_T_cam * (base_T_cam)^-1
    q_mount_inv = quat_conj(mount.quaternion)
    q_base = quat_mul(q_cam, q_mount_inv)
    r_base = rotation_matrix(q_base)
    p_base = p_cam - r_base @ mount.translation
    v_world = _t265_to_ros_vec(pose.velocity)
    w_world = _t265_to_ros_vec(pose.angular_velocity)
    w_body = r_base.T @ w_world
    # velocity of the base origin = camera velocity - w x (r_base @ t_mount)
    v_base_world = v_world - np.cross(w_world, r_base @ mount.translation)
    conf = int(pose.tracker_confidence)
    pose_cov, twist_cov = confidence_covariance(conf, accel_cov, gyro_cov)
    return PoseSample(p_base, q_base, r_base.T @ v_base_world, w_body, conf, pose_cov, twist_cov)


@dataclass
class OdomAnchor:
    """Odometry continuous across T265 restarts. A restarted pipeline tracks from a new origin (where the camera
    is then, heading 0): odom would jump back to the origin, which REP-105 forbids. After `restart()`, the first
    sample is put where the last one before the restart was (heading and position; roll and pitch are the
    camera's own, gravity-aligned either way), and the rest follow it. What the robot moved while no pose came
    is not in odom; body-frame velocities are unchanged."""

    _last: PoseSample | None = None
    _pending: bool = False
    _yaw: float = 0.0  # odom = Rz(_yaw) stream + _shift
    _shift: np.ndarray = field(default_factory=lambda: np.zeros(3))

    def restart(self) -> None:
        self._pending = self._last is not None

    def apply(self, s: PoseSample) -> PoseSample:
        if self._pending:
            self._pending = False
            self._yaw = yaw(self._last.quaternion) - yaw(s.quaternion)
            self._shift = self._last.position - _rz(self._yaw) @ s.position
        if self._yaw or self._shift.any():
            half = self._yaw / 2
            s = replace(s, position=_rz(self._yaw) @ s.position + self._shift,
                        quaternion=quat_mul(np.array([np.cos(half), 0.0, 0.0, np.sin(half)]), s.quaternion))
        self._last = s
        return s


def _rz(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


class T265Source:
    """Pose frames from a T265 through pyrealsense2 (`rs` may be injected for a stand-in device).

    Pose jumping is off unless asked for: the T265 turns it on by default, and then a relocalisation
    (it recognises a place it mapped) makes the pose jump, which breaks REP-105's promise that odom is
    continuous. Off, the pose stays continuous and keeps its drift; the velocity is the same either way.
    The option is read-only while streaming, so it is set before the pipeline starts.

    A camera gone from USB and back (it re-enumerates) left librealsense's pipeline stopped, and every read
    raised for good: reads that raised for RESTART_AFTER_S restart the pipeline (`restarts` counts them, and
    `restarted` says so once, for an OdomAnchor), with pose jumping set again on the device found. Back within
    one read, librealsense restarts it itself, without error, with the device's default options: a new session
    (its frame numbers begin again) is restarted here too. (Not a read that blocked long: a process descheduled
    for a second would lose the camera's map for nothing.)"""

    def __init__(self, rs: Any = None, pose_jumping: bool = False) -> None:
        if rs is None:
            try:
                import pyrealsense2 as rs
            except ImportError as exc:
                raise DeviceError("pyrealsense2 is not installed; the T265 needs librealsense 2.53.1 "
                                  "(pip wheels for Python <= 3.10 on x86_64)") from exc
        version = tuple(int(x) for x in str(getattr(rs, "__version__", "0.0.0")).split(".")[:3])
        if version > T265_LAST_VERSION:
            raise DeviceError(f"installed librealsense {'.'.join(map(str, version))} has no T265 support "
                              "(removed in 2.54.1); install pyrealsense2==2.53.1")
        ctx = rs.context()
        if not any("T265" in d.get_info(rs.camera_info.name) for d in ctx.query_devices()):
            raise DeviceError("no RealSense T265 found (check USB, and that no other process holds it)")
        self.rs, self.pose_jumping = rs, pose_jumping
        self.pipe = rs.pipeline()
        self.cfg = rs.config()
        self.cfg.enable_stream(rs.stream.pose)
        self.pose_jumping_error = ""  # why the option could not be set ("" when it was)
        try:
            self._start()
        except RuntimeError as exc:  # gone between the listing and the start, or held by another process
            raise DeviceError(f"the T265 could not be started: {exc}") from exc
        self.failing_since: float | None = None  # monotonic time of the first of the reads raising now
        self.next_restart = 0.0
        self.restarts = 0
        self.restarted = False  # a restart happened since the caller last cleared this
        self.frame_number: int | None = None  # of the newest pose frame of this session

    def _start(self) -> None:
        # No device found raises here (a restart while it is still away): starting anyway blocked in librealsense's
        # own wait for it, up to 15 s, with the node's executor.
        device = self.cfg.resolve(self.pipe).get_device()
        try:
            device.first_pose_sensor().set_option(self.rs.option.enable_pose_jumping,
                                                  1.0 if self.pose_jumping else 0.0)
            self.pose_jumping_error = ""
        except (AttributeError, RuntimeError) as exc:  # an older firmware or library without the option
            self.pose_jumping_error = str(exc) or type(exc).__name__
        self.pipe.start(self.cfg)

    def read(self, timeout_ms: int = 100, now: float | None = None) -> Any | None:
        """The newest pose, or None if no frame came within the timeout. A T265 on USB does drop out
        for moments; `wait_for_frames` would raise then, and one late frame must not end the node
        (whoever reads odometry judges how old it may be). A read or a restart that fails raises."""
        now = time.monotonic() if now is None else now
        if (self.failing_since is not None and now - self.failing_since >= RESTART_AFTER_S
                and now >= self.next_restart):
            self.next_restart = now + RESTART_EVERY_S
            with contextlib.suppress(Exception):  # stopped already, by librealsense: its own error says so
                self.pipe.stop()
            self._start()  # the device not back yet: raises, and is tried again
            self.failing_since, self.restarted, self.frame_number = None, True, None
            self.restarts += 1
        try:
            ok, frames = self.pipe.try_wait_for_frames(timeout_ms)
        except Exception:
            if self.failing_since is None:
                self.failing_since = now
            raise
        self.failing_since = None
        if not ok:
            return None
        pose = frames.get_pose_frame()
        if not pose:
            return None
        number = int(pose.get_frame_number())
        if self.frame_number is not None and number <= self.frame_number:
            # A device back on USB within the read, which librealsense restarts by itself: no error, but a new
            # tracking session (origin, frame numbers) with the device's default options (pose jumping on).
            # Restarted here, the option is set again, and `restarted` has odom anchored.
            self.frame_number = None
            with contextlib.suppress(Exception):
                self.pipe.stop()
            self._start()
            self.restarted = True
            self.restarts += 1
            return None
        self.frame_number = number
        return pose.get_pose_data()

    def close(self) -> None:
        with contextlib.suppress(Exception):  # stopped by librealsense after a drop-out
            self.pipe.stop()
