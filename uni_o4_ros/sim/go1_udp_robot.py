"""A stand-in Go1 on the network: the MuJoCo Go1 behind the robot's low-level UDP protocol.

It listens where the Go1's motion board does (port 8007), answers every valid LowCmd datagram with
an 807-byte LowState after stepping the simulator by one control tick (lockstep, like the go1_sim
node), and drops what the real board would not accept (wrong length, head, level or crc). The
pd_controller's `unitree_sdk` backend talks to it through the Unitree SDK binary exactly as it
would to the robot, so the SDK path is tested here without a Go1:

    python -m uni_o4_ros.sim.go1_udp_robot --port 8007 --terrain mattress
    # then pd_controller with backend unitree_sdk, robot_ip 127.0.0.1

Motor semantics as on the Go1's drivers: mode 0x0A runs tau + Kp (q - q_now) + Kd (dq - dq_now),
with PosStopF / VelStopF switching the position / velocity term off; any other mode (0x00, idle) is
treated as passive damping. Foot forces go out in newtons (the real sensors report raw counts).

With `--t265 HOST:PORT` it also carries a T265 on its trunk (`--t265-mount`, base_link -> camera):
after every tick it sends the camera's pose to the stand-in pyrealsense2 the odometry node reads
(uni_o4_ros.sim.t265_standin), so robot.launch.py's whole graph runs against it.
"""

from __future__ import annotations

import argparse
import math
import os
import socket
import sys
from collections import deque

import numpy as np

from ..hardware import go1_lowlevel as wire
from ..hardware.t265 import MountExtrinsic
from ..robot.go1 import FEET_POLICY_FROM_SDK, POLICY_FROM_SDK, SDK_FROM_POLICY, roll_pitch, yaw
from ..robot.safety import MotorCommand
from .go1_sim import Go1Sim
from .standin_operator import StandInOperator
from .t265_standin import FEED_ENV, STANDIN_MODULES, camera_truth, feed_address

PASSIVE_KD = 1.0  # what an idle motor resists with (N m s / rad); the drivers' own value is not published


def motor_command(packet: dict[str, np.ndarray]) -> MotorCommand:
    """A decoded LowCmd (SDK order) -> the PD law's terms in package order."""
    servo = packet["mode"] == wire.MODE_SERVO
    pos_on = servo & (np.abs(packet["q"]) < wire.POS_STOP_F / 2)
    vel_on = servo & (np.abs(packet["dq"]) < wire.VEL_STOP_F / 2)
    kp = np.where(pos_on, packet["kp"], 0.0)
    kd = np.where(servo, np.where(vel_on, packet["kd"], 0.0), PASSIVE_KD)
    q = np.where(pos_on, packet["q"], 0.0)
    dq = np.where(vel_on, packet["dq"], 0.0)
    tau = np.where(servo, packet["tau"], 0.0)
    return MotorCommand(*(np.asarray(v, np.float32)[POLICY_FROM_SDK] for v in (q, dq, kp, kd, tau)))


class Go1UdpRobot:
    def __init__(self, host: str = "127.0.0.1", port: int = 8007, sim: Go1Sim | None = None,
                 keep_commands: int = 1000, t265: tuple[str, int] | None = None,
                 t265_mount: MountExtrinsic | None = None, operator: StandInOperator | None = None) -> None:
        self.sim = sim or Go1Sim()
        self.operator = operator  # a person who stands it up after a fall and re-arms; None: nobody
        self.state = self.sim.reset()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.port = self.sock.getsockname()[1]
        self.commands: deque[dict[str, np.ndarray]] = deque(maxlen=keep_commands)  # newest last, SDK order
        self.rejected: list[str] = []
        self.steps = 0
        self.buttons: frozenset[str] = frozenset()  # held on the wireless remote, sent with every state
        self.battery_soc = 100.0  # % (bms.SOC), sent with every state
        self.battery_drain = 0.0  # % per simulated minute under its own weight (any motor stiff)
        # Motors whose driver has cut out (SDK slot -> the mode it reports, e.g. 0x08): passive whatever
        # they are told, as a Go1 motor after its protection tripped. The others report the mode commanded.
        self.cut_out: dict[int, int] = {}
        self.motor_temperature = 35  # deg C, every motor
        # An encoder's odd reading (SDK slot -> rad/s) in the next `dq_glitch_reads` states: a speed no leg makes.
        self.dq_glitch: dict[int, float] = {}
        self.dq_glitch_reads = 0
        self._modes = np.full(12, wire.MODE_SERVO, np.uint8)
        self.t265 = t265  # where the stand-in camera listens for its pose; None: no camera
        # Its own socket: an ICMP "unreachable" for a camera not yet listening must not touch the link.
        self.t265_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM) if t265 else None
        self.t265_mount = t265_mount or MountExtrinsic.from_config([0.25, 0.0, 0.05], [0.0, 0.0, 0.0])
        self.t265_stalled = False  # True: the camera sends nothing (a USB drop-out)
        self.t265_confidence = 3  # the tracker's confidence it reports (0 failed .. 3 high)
        self.t265_drift = np.zeros(3)  # the camera tracking's drift (world frame, m) ...
        self.t265_relocalizations = 0  # ... which each relocalisation learns (t265_standin: pose jumping)

    def serve_once(self, timeout: float | None = 0.5) -> bool:
        """Handle one datagram; False if none came within the timeout or it was refused."""
        self.sock.settimeout(timeout)
        try:
            data, peer = self.sock.recvfrom(2048)
        except TimeoutError:
            return False
        try:
            packet = wire.decode_low_cmd(data)
        except wire.WireError as exc:
            self.rejected.append(str(exc))
            return False
        self.commands.append(packet)
        self._modes = packet["mode"].copy()
        obeyed = packet["mode"].copy()
        for slot, mode in self.cut_out.items():
            obeyed[slot] = wire.MODE_DAMPING  # the driver no longer obeys: passive
            self._modes[slot] = mode
        self.state = self.sim.step(motor_command({**packet, "mode": obeyed}))
        self.steps += 1
        if np.any(packet["kp"] > 0):  # holding itself up draws the current; lying damped next to nothing
            self.battery_soc = max(0.0, self.battery_soc - self.battery_drain * self.sim.CONTROL_DT / 60.0)
        if self.operator is not None:
            self.operator.after_tick(self)
        self.sock.sendto(self.low_state(), peer)
        if self.t265 is not None and not self.t265_stalled:
            s = self.state
            self.t265_sock.sendto(camera_truth(s.position, s.quaternion, s.linear_velocity, s.angular_velocity,
                                               self.t265_mount.translation, self.t265_mount.quaternion,
                                               self.t265_confidence, self.t265_drift, self.t265_relocalizations),
                                   self.t265)
        return True

    def low_state(self) -> bytes:
        s = self.state
        roll, pitch = roll_pitch(s.quaternion)
        dq = s.dq[SDK_FROM_POLICY]
        if self.dq_glitch_reads > 0:
            self.dq_glitch_reads -= 1
            dq = dq.copy()
            for slot, value in self.dq_glitch.items():
                dq[slot] = value
        return wire.encode_low_state(
            q=s.q[SDK_FROM_POLICY], dq=dq, tau_est=s.tau[SDK_FROM_POLICY],
            quaternion=s.quaternion, gyroscope=s.gyroscope, accelerometer=s.accelerometer,
            rpy=[roll, pitch, yaw(s.quaternion)],
            foot_force=s.foot_force[FEET_POLICY_FROM_SDK], tick_us=int(s.time * 1e6),
            remote=wire.encode_remote(self.buttons), battery_soc=int(self.battery_soc), mode=self._modes,
            temperature=self.motor_temperature)

    def close(self) -> None:
        self.sock.close()
        if self.t265_sock is not None:
            self.t265_sock.close()


def free_udp_ports(n: int = 1) -> list[int]:
    """n distinct local UDP ports free right now (all bound at once, then released for whoever takes them)."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def standin_bringup(terrain: str, env: dict[str, str], mount_xyz: list[float], mount_rpy: list[float],
                    operator: tuple[float, str, float] | None = None, battery: tuple[float, float] = (100.0, 0.0),
                    ) -> tuple[list[str], list[str], dict[str, str]]:
    """How `uni-o4 bringup --standin` runs robot.launch.py's graph without a robot: the stand-in Go1's
    command line (free local ports for its low-level link and its T265 feed; the camera where the
    odometry node's mount_xyz / mount_rpy say it is), the pd_controller's parameters that point the SDK at it,
    and the odometry node's environment (the stand-in pyrealsense2 first on its path, told where its
    feed arrives). `operator` (delay s, remote_rearm, max_tilt): someone stands it up after falls.
    `battery` (charge %, drain % per minute): its bms.SOC."""
    robot_port, feed_port = free_udp_ports(2)
    robot = [sys.executable, "-m", "uni_o4_ros.sim.go1_udp_robot", "--port", str(robot_port), "--terrain", terrain,
             "--t265", f"127.0.0.1:{feed_port}", "--t265-mount", *(str(float(v)) for v in mount_xyz),
             "--t265-mount-rpy", *(str(float(v)) for v in mount_rpy)]
    if operator is not None:
        delay, rearm, max_tilt = operator
        robot += ["--operator", str(float(delay)), "--operator-rearm", rearm, "--max-tilt", str(float(max_tilt))]
    # robot.yaml's start_latched waits for a person to arm the robot: the stand-in operator does, with the remote's
    # re-arm buttons. Without one (no operator, or no remote_rearm) the rehearsal starts armed: nobody could.
    arms = operator is not None and bool(operator[1])
    if arms:
        robot.append("--operator-arms-at-start")
    robot += ["--battery", str(float(battery[0])), "--battery-drain", str(float(battery[1]))]
    controller = ["robot_ip:=127.0.0.1", f"robot_port:={robot_port}", "local_port:=0"]
    controller += [] if arms else ["start_latched:=false"]
    path = os.pathsep.join(p for p in (str(STANDIN_MODULES), env.get("PYTHONPATH", "")) if p)
    return robot, controller, dict(env, PYTHONPATH=path, **{FEED_ENV: f"127.0.0.1:{feed_port}"})


def _angle(text: str) -> float:
    """An angle in [-pi, pi] (argparse type): NaN started the simulator from a NaN pose."""
    value = float(text)
    if not -math.pi <= value <= math.pi:
        raise argparse.ArgumentTypeError(f"must be in [-pi, pi], got {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    from ..nodes.processes import stop_with_parent
    from .go1_env import TERRAINS

    stop_with_parent()  # started by `uni-o4 bringup --standin`: not to walk on by itself if that is killed

    ap = argparse.ArgumentParser(prog="python -m uni_o4_ros.sim.go1_udp_robot", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on (the Go1's is 192.168.123.10)")
    ap.add_argument("--port", type=int, default=8007, help="UDP port (the Go1's low-level port is 8007)")
    ap.add_argument("--terrain", default="flat", choices=sorted(TERRAINS))
    ap.add_argument("--spawn-roll", type=_angle, default=0.0, help="initial roll (rad, -pi..pi), to try fall handling")
    ap.add_argument("--t265", metavar="HOST:PORT", help="also carry a T265: send its pose there (the odometry "
                    "node with the stand-in pyrealsense2 and UNI_O4_T265_FEED=HOST:PORT listens)")
    ap.add_argument("--t265-mount", type=float, nargs=3, default=[0.25, 0.0, 0.05], metavar=("X", "Y", "Z"),
                    help="camera position in base_link (m), as config/robot.yaml's mount_xyz")
    ap.add_argument("--t265-mount-rpy", type=float, nargs=3, default=[0.0, 0.0, 0.0], metavar=("R", "P", "Y"),
                    help="camera orientation in base_link (rad), as config/robot.yaml's mount_rpy")
    ap.add_argument("--operator", type=float, default=0.0, metavar="SECONDS",
                    help="a person beside the robot: this long after a fall they stand it up and press the "
                    "re-arm buttons on the remote (0, the default: nobody)")
    ap.add_argument("--operator-rearm", default="L2+A", metavar="BUTTONS",
                    help="the buttons they press, as the pd_controller's remote_rearm (\"\": they only stand it up)")
    ap.add_argument("--max-tilt", type=float, default=1.0, help="what they call a fall: the controller's max_tilt")
    ap.add_argument("--operator-arms-at-start", action="store_true",
                    help="they also arm it once, 0.5 s in: stand it up and press the re-arm buttons, for a controller "
                    "that starts latched (start_latched)")
    ap.add_argument("--battery", type=float, default=100.0, metavar="PERCENT",
                    help="battery state of charge at the start (bms.SOC), to rehearse min_battery_soc")
    ap.add_argument("--battery-drain", type=float, default=0.0, metavar="PERCENT_PER_MIN",
                    help="how fast it empties per simulated minute while it holds itself up (a Go1 walks "
                    "~60-150 min on a charge)")
    a = ap.parse_args(argv)
    sim = Go1Sim(TERRAINS[a.terrain])
    t265 = feed_address(a.t265) if a.t265 else None
    mount = MountExtrinsic.from_config(a.t265_mount, a.t265_mount_rpy)
    try:
        rearm = wire.parse_buttons(a.operator_rearm)  # unknown buttons: a clear error now, not at the first fall
    except wire.WireError as exc:
        ap.error(f"--operator-rearm {exc}")
    operator = (StandInOperator(a.operator, rearm, a.max_tilt, arm_at_start=a.operator_arms_at_start) if a.operator > 0
                else None)
    robot = Go1UdpRobot(a.host, a.port, sim, t265=t265, t265_mount=mount, operator=operator)
    robot.state = sim.reset(roll=a.spawn_roll)
    robot.battery_soc, robot.battery_drain = a.battery, a.battery_drain
    print(f"stand-in Go1 listening on {a.host}:{robot.port} ({a.terrain})", flush=True)
    try:
        while True:
            robot.serve_once(None)
    except KeyboardInterrupt:
        return 0
    finally:
        robot.close()


if __name__ == "__main__":
    sys.exit(main())
