"""The pd_controller's Go1 backend through the Unitree SDK (`robot_interface`, low level; no ROS).

Every tick the controller hands over one motor command (package joint order); this class turns it
into the SDK's LowCmd (SDK order, servo mode 0x0A) and sends it, and reads the newest LowState.
The Go1 answers commands, so until its first state arrives each read sends the damping command.

Faults it reports (the controller latches damping on any of them; a person re-arms):
- no LowState within `connect_timeout` of starting (robot off, not in low-level mode, wrong network);
- the newest state older than `state_timeout` (link lost, robot rebooted);
- the battery below `min_battery_soc` percent (bms.SOC; 0: not checked), until it is 5 points above;
- a motor out of servo mode for `motor_dropout_ticks` reads in a row (its driver cut out), while it is;
- a motor at or above `max_motor_temperature` deg C (0: not checked), until every one is 5 degrees below.
A command the SDK's fixed-point wire cannot carry, or one that is not finite, never reaches the
motors: damping goes out instead and `last_error` says why (the SDK would wrap it silently).

The SDK binary: `unitree_legged_sdk.robot_interface` (the x86_64 PyPI wheel, `pip install
unitree-legged-sdk`) or a `robot_interface` module built from the SDK's sources with
`-DPYTHON_BUILD=TRUE` (the robot's ARM computers, for which no wheel exists).
"""

from __future__ import annotations

import importlib
import socket
import time
from collections.abc import Callable
from types import ModuleType, SimpleNamespace

import numpy as np

from ..robot.go1 import FEET_POLICY_FROM_SDK, POLICY_FROM_SDK, SDK_FROM_POLICY
from ..robot.safety import BatteryGuard, MotorCommand, MotorDropout, MotorHeatGuard
from . import go1_lowlevel as wire
from .t265 import DeviceError

GO1_IP, GO1_PORT, LOCAL_PORT = "192.168.123.10", 8007, 8090


def load_robot_interface() -> ModuleType:
    for name in ("unitree_legged_sdk.robot_interface", "robot_interface"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise DeviceError("the Unitree SDK is not installed: `pip install unitree-legged-sdk` (x86_64), or build "
                      "unitree_legged_sdk v3.8 with -DPYTHON_BUILD=TRUE and put robot_interface on PYTHONPATH")


def _claim_local_port(port: int) -> None:
    """The SDK only prints when it cannot bind its local port, then carries on unbound: a second
    controller would command the same robot. Refuse to start instead."""
    if port == 0:
        return  # an ephemeral port (tests, the stand-in): cannot clash
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.bind(("", port))
    except OSError as exc:
        raise DeviceError(f"local UDP port {port} is in use ({exc.strerror}): is another controller or SDK "
                          f"program talking to the robot? Stop it, or set local_port") from None
    finally:
        probe.close()


class UnitreeSdkBackend:
    publishes_odometry = False  # the T265 reports the base pose (odometry node)

    def __init__(self, robot_ip: str = GO1_IP, robot_port: int = GO1_PORT, local_port: int = LOCAL_PORT,
                 state_timeout: float = 0.1, connect_timeout: float = 2.0, contact_threshold: float = 20.0,
                 damping_kd: float = 2.0, min_battery_soc: float = 0.0, motor_dropout_ticks: int = 3,
                 max_motor_temperature: float = 0.0, clock: Callable[[], float] = time.monotonic,
                 sdk: ModuleType | None = None) -> None:
        sdk = sdk or load_robot_interface()
        self.address = f"{robot_ip}:{robot_port}"
        self.hardware_id = f"unitree_sdk: Go1 at {self.address}"  # which robot, for the controller's diagnostics
        try:
            socket.inet_aton(robot_ip)  # the SDK takes any string and sends nowhere
        except OSError:
            raise DeviceError(f"robot_ip {robot_ip!r} is not an IPv4 address (the Go1's is {GO1_IP})") from None
        _claim_local_port(int(local_port))
        self._udp = sdk.UDP(wire.LOWLEVEL, int(local_port), robot_ip, int(robot_port))
        self._cmd = sdk.LowCmd()
        self._udp.InitCmdData(self._cmd)
        self._raw = sdk.LowState()
        self.state_timeout, self.connect_timeout = float(state_timeout), float(connect_timeout)
        self.contact_threshold, self.damping_kd = float(contact_threshold), float(damping_kd)
        self.battery = BatteryGuard(float(min_battery_soc))
        self.motors = MotorDropout(wire.MODE_SERVO, wire.SDK_MOTOR_NAMES, int(motor_dropout_ticks))
        self.heat = MotorHeatGuard(float(max_motor_temperature), wire.SDK_MOTOR_NAMES)
        self._clock = clock
        self._started = clock()
        self._last_rx: float | None = None
        self.state: SimpleNamespace | None = None
        self.received = 0  # LowState datagrams accepted by the SDK (crc checked there)
        self.refused = 0  # commands replaced by damping because the wire could not carry them
        self.last_error = ""
        # A command was replaced by damping since the last fault(): a fault, told once, so the controller does not
        # report ACTIVE over a damped robot and latches the e-stop until someone has looked. (Held until a command
        # went through, it could never clear: an e-stopped controller sends only damping.)
        self._refused_now = False
        self.resets = 0

    def read(self) -> SimpleNamespace | None:
        fresh = False
        while self._udp.Recv() >= 0:  # drain: only the newest state matters
            self.received += 1
            fresh = True
        if fresh:
            self._last_rx = self._clock()
            self._udp.GetRecv(self._raw)
            self.state = self._convert(self._raw)
        elif self._last_rx is None:
            self._send_damping()  # ask: the Go1 answers commands, and damping is the safe one
        return self.state

    def _convert(self, raw) -> SimpleNamespace:
        motors = raw.motorState
        q = np.array([motors[i].q for i in range(12)])[POLICY_FROM_SDK]
        dq = np.array([motors[i].dq for i in range(12)])[POLICY_FROM_SDK]
        tau = np.array([motors[i].tauEst for i in range(12)])[POLICY_FROM_SDK]
        modes = np.array([motors[i].mode for i in range(12)])  # SDK order, as the motors are named
        temperature = np.array([motors[i].temperature for i in range(12)])
        force = np.asarray(raw.footForce, float)[FEET_POLICY_FROM_SDK]
        imu = raw.imu
        return SimpleNamespace(q=q, dq=dq, tau=tau, quaternion=np.asarray(imu.quaternion, float),
                               gyroscope=np.asarray(imu.gyroscope, float),
                               accelerometer=np.asarray(imu.accelerometer, float),
                               foot_force=force, foot_contact=force > self.contact_threshold,
                               buttons=wire.pressed_buttons(raw.wirelessRemote), battery_soc=float(raw.bms.SOC),
                               motor_mode=modes, motor_temperature=temperature)

    def fault(self) -> str | None:
        now = self._clock()
        if self._last_rx is None:
            if now - self._started > self.connect_timeout:
                return (f"no LowState from the Go1 at {self.address} in {now - self._started:.1f} s: is it on, in "
                        f"low-level mode, and is this computer on its network (192.168.123.x)?")
            return None
        age = now - self._last_rx
        if age > self.state_timeout:
            return (f"robot state {age * 1000:.0f} ms old (timeout {self.state_timeout * 1000:.0f} ms): "
                    f"link to {self.address} lost")
        # Both rules see every read (each keeps its own count), and both reasons are told.
        s = self.state
        refused, self._refused_now = self.last_error if self._refused_now else "", False
        faults = [f for f in (self.motors.fault(s.motor_mode), self.battery.fault(s.battery_soc),
                              self.heat.fault(s.motor_temperature), refused) if f]
        return "; ".join(faults) or None

    def write(self, cmd: MotorCommand) -> None:
        if not cmd.damping:
            try:
                wire.check_wire_range(tau=cmd.tau, kp=cmd.kp, kd=cmd.kd)
                if not (np.all(np.isfinite(cmd.q)) and np.all(np.isfinite(cmd.dq))):
                    raise wire.WireError("q or dq is not finite")
            except wire.WireError as exc:
                self.refused += 1
                self.last_error = f"command refused, damping sent instead: {exc}"
                self._refused_now = True
                self._send_damping()
                return
            self._send(cmd.q, cmd.dq, cmd.kp, cmd.kd, cmd.tau)
        else:
            self._send_damping()  # the controller's damping uses the same damping_kd

    def _send_damping(self) -> None:
        z = np.zeros(12)
        self._send(np.full(12, wire.POS_STOP_F), z, z, np.full(12, self.damping_kd), z)

    def _send(self, q, dq, kp, kd, tau) -> None:
        q, dq, kp, kd, tau = (np.asarray(v, np.float64)[SDK_FROM_POLICY] for v in (q, dq, kp, kd, tau))
        motors = self._cmd.motorCmd  # pybind builds this list on every access: once per tick, not per motor
        for i in range(12):
            m = motors[i]
            m.mode = wire.MODE_SERVO
            m.q, m.dq, m.Kp, m.Kd, m.tau = float(q[i]), float(dq[i]), float(kp[i]), float(kd[i]), float(tau[i])
        self._udp.SetSend(self._cmd)
        self._udp.Send()

    def reset(self) -> None:
        self.resets += 1  # on the real robot a person puts it back on its feet

    def close(self) -> None:
        """Leave the motors damped: the Go1 holds the last command it got, stiffness included."""
        self._send_damping()
