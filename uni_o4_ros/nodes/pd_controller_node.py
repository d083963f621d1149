"""pd_controller node: 50 Hz; latest JointCommand -> ControllerCore (safety, watchdog, e-stop,
fall) -> backend; publishes RobotState and sensor_msgs/JointState (joint_states, for robot_state_publisher
and rviz) every tick, EpisodeEvent on a fall, and diagnostics.

Backends: `sim` (an in-process MuJoCo Go1 stepped in lockstep with this loop), `go1_sim` (the
go1_sim node in its own process, over `low_cmd` / `low_state`, one tick of latency as with real
motor boards), `unitree_sdk` (the Go1 itself through the Unitree SDK's low-level UDP; a backend
fault, such as a lost link, latches the e-stop: damping until a person re-arms).
Parameters: backend, rate_hz (50 with unitree_sdk: the policy's rate; other rates only pace the simulator),
watchdog_timeout, max_tilt, max_target_step, torque_fraction,
silence_latch (s; > 0: a policy silent this long after the robot was active latches damping until
re-armed; 0: the next fresh command re-activates; robot.yaml 1.0, sim.yaml 0), activation_step (rad per
tick; > 0: each time the robot becomes active after a re-arm or 0.25 s of damping, its targets move at most
this far a tick until the policy's are near, so a Go1 sagged in damping rises slowly; 0 by default, 0.05 in
robot.yaml), start_latched (start
with the e-stop engaged, nothing moves until re-armed; false by default, true in robot.yaml); sim
only: spawn_roll (to test fall handling), terrain (flat | mattress), reset_on_episode_end (put the
robot back when the recorder starts an episode), wait_for_policy (step only once the policy answered
the newest state: exact lockstep when the graph runs faster than real time); unitree_sdk only:
robot_ip, robot_port, local_port, state_timeout, connect_timeout, contact_threshold, remote_estop (the
buttons on the Go1's remote that engage the e-stop, "L2+B" by default; "" for none), remote_rearm (the
buttons that re-arm after a fall, an e-stop or a silent policy, once the operator beside the robot has
stood it up; "" by default, "L2+A" in robot.yaml; never while the e-stop's buttons are held),
min_battery_soc (%, the Go1's bms.SOC: below it the e-stop engages and holds until the charge is 5
points above; 0 by default, 15 in robot.yaml), motor_dropout_ticks (a motor reporting another mode
than servo this many ticks in a row, its driver cut out, engages the e-stop while it lasts; 3; 0: off),
max_motor_temperature (deg C: a motor this hot engages the e-stop, held until every motor is 5 degrees
cooler, so all four legs are damped before a driver's own cut-out leaves one limp; 0, off, by default:
Unitree publishes no Go1 threshold, so set it from your motors' documentation).
No re-arm, from the service or the remote, is accepted while a backend fault holds. The defaults are the
simulator's: with unitree_sdk and any of start_latched, silence_latch, activation_step left at them (no robot.yaml),
the node warns at start.
Every active tick also counts whether its command answered the newest state (diagnostics
`late_commands`, and one summary line at exit). A command is applied only if it answers one of this
controller's own recent states and comes from the one policy it hears: anything else means another
suite shares the ROS domain, and latches the e-stop.
"""

from __future__ import annotations

import json
import os
import sys
import time
from types import SimpleNamespace

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from nav_msgs.msg import Odometry
from rclpy.node import Node
from std_srvs.srv import SetBool

from uni_o4_ros.hardware.go1_lowlevel import SDK_MOTOR_NAMES, WireError, parse_buttons
from uni_o4_ros.hardware.t265 import DeviceError
from uni_o4_ros.hardware.unitree_sdk import GO1_IP, GO1_PORT, LOCAL_PORT, UnitreeSdkBackend
from uni_o4_ros.msg import EpisodeEvent, JointCommand, RobotState
from uni_o4_ros.ranges import ConfigValueError
from uni_o4_ros.robot.controller import CONTROLLER_SUMMARY, CommandLatency, ControllerCore, Mode, PublishedStates
from uni_o4_ros.robot.go1 import CONTROL_DT
from uni_o4_ros.robot.safety import RemoteCombo, SafetyConfig, SingleSender, plausible_dq, speed_problem

from .episode_events import SIM_RESET_EVENTS
from .go1_sim_node import odometry, robot_state
from .joint_states import JointStatePublisher
from .params import Doc, declare_read_only
from .qos import COMMAND, DIAGNOSTICS, EVENTS, RELIABLE_STREAM, SENSOR
from .run import NodeConfigError, run_node
from .stamps import sender_id, stamp_ns
from .tf import OdomTfBroadcaster
from .timers import steady_timer

BACKENDS = ("sim", "go1_sim", "unitree_sdk")

PARAMETERS = {
    "backend": Doc("sim | go1_sim | unitree_sdk; the robot driven: a MuJoCo Go1 in this process, the go1_sim node "
                   "over low_cmd/low_state, or the Go1 through the Unitree SDK's low-level UDP"),
    "rate_hz": Doc("Hz; control loop rate: one motor command and one robot_state per tick", ">0"),
    "watchdog_timeout": Doc("s; no fresh joint_command for this long and the robot is damped (see silence_latch)",
                            ">0"),
    "max_tilt": Doc("rad; |roll| or |pitch| beyond this is a fall: damping until re-armed, and an ABORTED_FALL event",
                    "(0,pi]"),
    "max_target_step": Doc("rad per tick; the most a joint's position target may move from the one before", ">0"),
    "torque_fraction": Doc("fraction of each motor's torque limit; targets are clamped so the PD torque stays "
                           "within it, where the joint and rate limits allow (they come first)", "(0,1]"),
    "spawn_roll": Doc("rad; sim backend only: the robot's roll when the node starts (later resets stand it "
                      "upright), to test fall handling", "[-pi,pi]"),
    "terrain": Doc("flat | mattress; sim backend only: the ground simulated"),
    "reset_on_episode_end": Doc("simulation only (refused with unitree_sdk): each time the recorder starts an "
                                "episode, clear a fall or e-stop as a re-arm would, and stand the sim backend's robot "
                                "up (the go1_sim node does so under its own parameter)"),
    "wait_for_policy": Doc("sim backend only: step only once the policy has answered the newest state (exact "
                           "lockstep when the graph runs faster than real time)"),
    "robot_ip": Doc("IPv4 address; unitree_sdk only: the Go1's motion board"),
    "robot_port": Doc("UDP port; unitree_sdk only: the Go1's low-level port", "[1,65535]"),
    "local_port": Doc("UDP port; unitree_sdk only: this computer's end of the link, refused if in use; 0: any "
                      "free one", "[0,65535]"),
    "state_timeout": Doc("s; unitree_sdk only: the newest LowState older than this is a lost link: e-stop", ">0"),
    "connect_timeout": Doc("s; unitree_sdk only: no LowState at all this long after start is a fault: e-stop",
                           ">0"),
    "contact_threshold": Doc("footForce counts; unitree_sdk only: a foot reading above this is in contact", ">=0"),
    "remote_estop": Doc("buttons joined by +, e.g. L2+B; unitree_sdk only: the Go1 remote's combination that "
                        "engages the e-stop; '' for none"),
    "remote_rearm": Doc("buttons joined by +, e.g. L2+A; unitree_sdk only: the Go1 remote's combination that "
                        "re-arms after a fall, e-stop or silent policy (never while remote_estop is held); '' for "
                        "none"),
    "silence_latch": Doc("s; > 0: a policy silent this long after the robot was active latches damping until "
                         "re-armed; 0: the next fresh command re-activates", ">=0"),
    "activation_step": Doc("rad per tick; > 0: each time the robot becomes active (a re-arm, the policy back 0.25 s "
                           "or more after the watchdog damped), its targets move at most this far a tick until the "
                           "policy's are within max_target_step; 0: off", ">=0"),
    "min_battery_soc": Doc("%; unitree_sdk only: the Go1's charge (bms.SOC) below which the e-stop engages, held "
                           "until 5 points above; 0: not checked", "[0,100)"),
    "motor_dropout_ticks": Doc("reads; unitree_sdk only: a motor out of servo mode this many reads in a row engages "
                               "the e-stop while it lasts; 0: off", ">=0"),
    "max_motor_temperature": Doc("deg C; unitree_sdk only: a motor this hot engages the e-stop, held until every motor "
                                 "is 5 degrees cooler; 0: not checked (Unitree publishes no Go1 threshold)", "[0,127]"),
    "start_latched": Doc("start with the e-stop engaged: nothing moves until re-armed (estop service, `uni-o4 estop "
                         "rearm` or remote_rearm)"),
}


class SimBackend:
    publishes_odometry = True  # the simulator also stands in for the T265

    def __init__(self, spawn_roll: float = 0.0, terrain: str = "flat") -> None:
        from uni_o4_ros.sim.go1_env import TERRAINS
        from uni_o4_ros.sim.go1_sim import Go1Sim

        if terrain not in TERRAINS:
            raise NodeConfigError(f"unknown terrain {terrain!r}; choose from {sorted(TERRAINS)}")
        self.sim = Go1Sim(TERRAINS[terrain])
        self.state = self.sim.reset(roll=spawn_roll)
        self.resets = 0
        self.hardware_id = f"sim: MuJoCo Go1 in pd_controller ({terrain})"  # diagnostics' hardware_id

    def reset(self) -> None:
        self.state = self.sim.reset()
        self.resets += 1

    def read(self):
        return self.state

    def write(self, cmd) -> None:
        self.state = self.sim.step(cmd)

    def fault(self) -> None:
        return None

    def close(self) -> None:
        pass


class TopicBackend:
    """The go1_sim node (or anything speaking low_cmd / low_state): write publishes the motor
    command, read returns the newest state received. It resets itself between episodes."""

    publishes_odometry = False

    hardware_id = "go1_sim: the go1_sim node over low_cmd / low_state"

    def __init__(self, node: Node) -> None:
        self.node = node
        self.state = None
        self.resets = 0  # counted when the reset event is heard; the go1_sim node resets on the same event
        self.pub = node.create_publisher(JointCommand, "low_cmd", COMMAND)
        node.create_subscription(RobotState, "low_state", self._on_state, COMMAND)

    def _on_state(self, m: RobotState) -> None:
        self.state = SimpleNamespace(
            q=np.asarray(m.q), dq=np.asarray(m.dq), tau=np.asarray(m.tau_est), quaternion=np.asarray(m.quaternion),
            gyroscope=np.asarray(m.gyroscope), accelerometer=np.asarray(m.accelerometer),
            foot_force=np.asarray(m.foot_force), foot_contact=np.asarray(m.foot_contact))

    def read(self):
        return self.state

    def write(self, cmd) -> None:
        m = JointCommand()
        m.header.stamp = self.node.get_clock().now().to_msg()
        m.q, m.dq, m.kp, m.kd, m.tau = (np.asarray(v, np.float32).tolist() for v in (cmd.q, cmd.dq, cmd.kp, cmd.kd,
                                                                                   cmd.tau))
        self.pub.publish(m)

    def reset(self) -> None:
        self.resets += 1  # the go1_sim node hears the recorder's events itself

    def fault(self) -> None:
        return None

    def close(self) -> None:
        pass


class PDControllerNode(Node):
    def __init__(self) -> None:
        super().__init__("pd_controller")
        p = declare_read_only(self, PARAMETERS, {
            "backend": "sim", "rate_hz": 50.0, "watchdog_timeout": 0.1, "max_tilt": 1.0,
            "max_target_step": 0.2, "torque_fraction": 0.9, "spawn_roll": 0.0, "terrain": "flat",
            "reset_on_episode_end": False, "wait_for_policy": False, "robot_ip": GO1_IP, "robot_port": GO1_PORT,
            "local_port": LOCAL_PORT, "state_timeout": 0.1, "connect_timeout": 2.0,
            "contact_threshold": 20.0, "remote_estop": "L2+B", "remote_rearm": "", "silence_latch": 0.0,
            "activation_step": 0.0, "min_battery_soc": 0, "motor_dropout_ticks": 3, "max_motor_temperature": 0.0,
            "start_latched": False})
        if p["backend"] not in BACKENDS:
            raise NodeConfigError(f"unknown backend {p['backend']!r}: choose from {', '.join(BACKENDS)}")
        self.remote_estop = RemoteCombo(_combo("remote_estop", p["remote_estop"]))
        self.remote_rearm = RemoteCombo(_combo("remote_rearm", p["remote_rearm"]))
        stop, go = self.remote_estop.combo, self.remote_rearm.combo
        if stop and go and (stop <= go or go <= stop):
            # One hand would then press both: pressing the e-stop's buttons must never also re-arm.
            raise NodeConfigError(f"remote_rearm {p['remote_rearm']!r} and remote_estop {p['remote_estop']!r}: "
                                  "neither combination may contain the other")
        if p["backend"] == "unitree_sdk" and abs(p["rate_hz"] * CONTROL_DT - 1.0) > 1e-9:
            # On the robot a tick is real time: the policy acts at the 50 Hz it was trained at, and max_target_step
            # and the odd-speed window count ticks (the SDK's 500 Hz in its examples is the motor boards' loop).
            raise NodeConfigError(f"rate_hz {p['rate_hz']:g} with the Go1: its control loop runs at the policy's "
                                  f"{1.0 / CONTROL_DT:g} Hz (other rates only pace the simulator)")
        if p["reset_on_episode_end"] and p["backend"] == "unitree_sdk":
            # Software cannot stand a Go1 up: each recorder episode start (a start_episode call after a fall, say)
            # would re-activate a robot lying where it fell, or clear the operator's e-stop, with nobody deciding.
            raise NodeConfigError("reset_on_episode_end puts a simulated robot back on its feet; on the Go1 it would "
                                  "re-activate a fallen or e-stopped robot at the next episode's start. Stand it up "
                                  "and re-arm it yourself (`uni-o4 estop rearm`, or the remote's remote_rearm)")
        try:
            cfg = SafetyConfig(max_target_step=p["max_target_step"], torque_fraction=p["torque_fraction"],
                               watchdog_timeout=p["watchdog_timeout"], max_tilt=p["max_tilt"],
                               silence_latch=p["silence_latch"], activation_step=p["activation_step"])
        except ConfigValueError as exc:
            raise NodeConfigError(f"parameter {exc}") from None
        self.core = ControllerCore(cfg)
        if p["backend"] == "unitree_sdk":
            # The node's defaults are the simulator's: launched on the Go1 without robot.yaml, it stands up and walks
            # on the first command, springs up after any pause of the policy, and does so at full rate.
            sim_like = [f"{name} {p[name]}" for name in ("start_latched", "silence_latch", "activation_step")
                        if not p[name]]
            if sim_like:
                self.get_logger().warning(f"the Go1 with the simulator's {', '.join(sim_like)} (config/robot.yaml "
                                          "sets start_latched true, silence_latch 1.0, activation_step 0.05)")
        if p["start_latched"]:
            # On the robot nothing moves a motor until a person says so: without it, `ros2 launch` stood the
            # Go1 up and walked it on the policy's first command, seconds after start.
            self.get_logger().warning(f"{self.core.estop(True)} (start_latched): the policy drives once you re-arm "
                                      "(`uni-o4 estop rearm`, or the remote's re-arm buttons)")
        if p["backend"] == "sim":
            self.backend = SimBackend(p["spawn_roll"], p["terrain"])
        elif p["backend"] == "go1_sim":
            self.backend = TopicBackend(self)
        else:
            try:
                self.backend = UnitreeSdkBackend(
                    p["robot_ip"], p["robot_port"], p["local_port"], state_timeout=p["state_timeout"],
                    connect_timeout=p["connect_timeout"], contact_threshold=p["contact_threshold"],
                    damping_kd=cfg.damping_kd, min_battery_soc=float(p["min_battery_soc"]),
                    motor_dropout_ticks=p["motor_dropout_ticks"],
                    max_motor_temperature=float(p["max_motor_temperature"]))
            except DeviceError as exc:
                raise NodeConfigError(str(exc)) from exc
        self.fault_ticks = 0
        self.state_pub = self.create_publisher(RobotState, "robot_state", SENSOR)
        self.joint_states = JointStatePublisher(self)
        self.event_pub = self.create_publisher(EpisodeEvent, "episode_events", EVENTS)
        # Absolute, as diagnostic_updater's: a suite launched in a namespace (namespace:=robot1) still reaches the
        # one diagnostic_aggregator / rqt_robot_monitor, which listen on /diagnostics.
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", DIAGNOSTICS)
        # With the sim backend the simulator also stands in for the T265 (REP-105 odom -> base_link); with the
        # others the odometry node or the go1_sim node is odom's only publisher.
        self.odom_pub = self.tf = None
        if self.backend.publishes_odometry:
            self.odom_pub = self.create_publisher(Odometry, "odom", RELIABLE_STREAM)
            self.tf = OdomTfBroadcaster(self)
        self.create_subscription(JointCommand, "joint_command", self.on_command, COMMAND)
        # std_srvs/SetBool (data true engages, false re-arms): any ROS install can call it, a lab laptop
        # without this package included.
        self.create_service(SetBool, "estop", self.on_estop)
        if p["reset_on_episode_end"]:
            # Unattended data collection in simulation: when the recorder ends an episode the
            # "operator" puts the robot back on its feet and re-arms it (on the real robot a person
            # does this and calls the e-stop service to re-arm).
            self.create_subscription(EpisodeEvent, "recorder_events", self.on_recorder_event, EVENTS)
        self.ticks = 0
        # wait_for_policy: the simulated robot waits for the command answering its newest state, so
        # a graph driven faster than real time, or a loaded machine, never adds latency.
        if p["wait_for_policy"] and p["backend"] != "sim":
            raise NodeConfigError("wait_for_policy needs the in-process sim backend: a real robot cannot wait")
        self.latency = CommandLatency(bool(p["wait_for_policy"]), float(p["watchdog_timeout"]))
        # Another suite on this ROS domain must never drive this robot (see _another_suite).
        self.published, self.command_senders = PublishedStates(), SingleSender()
        steady_timer(self, 1.0 / p["rate_hz"], self.on_tick)

    def on_command(self, msg: JointCommand, info: dict) -> None:
        stamp, now = stamp_ns(msg.header.stamp), time.monotonic()
        senders = self.command_senders.senders(sender_id(info), now)
        if senders > 1:
            self._another_suite(f"joint commands from {senders} policies")
            return
        if not self.published.includes(stamp):
            self._another_suite("a joint command answering a robot state this controller never published")
            return
        q = np.asarray(msg.q, np.float32)
        if q.shape != (12,) or not np.all(np.isfinite(q)):
            self.get_logger().warning("ignored a joint command with non-finite or missing targets")
            return
        self.core.on_command(q, msg.policy_version, now)
        self.latency.on_command(stamp)

    def _another_suite(self, evidence: str) -> None:
        """A second suite shares this ROS domain (ROS's default domain and discovery reach across the
        network: two robots in a lab, a laptop's rehearsal beside the robot). Its command is not applied
        and the e-stop latches: which policy answers whom is unknown, so no command is trusted."""
        if self.core.mode != Mode.ESTOP:
            domain = os.environ.get("ROS_DOMAIN_ID", "0")
            self.get_logger().error(f"{evidence}: another suite shares ROS_DOMAIN_ID {domain}. "
                                    f"{self.core.estop(True)}. Give each robot, and each rehearsal, its own "
                                    "ROS_DOMAIN_ID, then re-arm")
        self.core.estop(True)

    def on_estop(self, req: SetBool.Request, res: SetBool.Response) -> SetBool.Response:
        res.message = self.core.estop(True) if req.data else f"{self.core.estop(False)} (estop service)"
        res.success = req.data or not self.core.rearm_blocker  # a backend fault or a bad state refuses the re-arm
        self.get_logger().warning(res.message)
        return res

    def on_recorder_event(self, msg: EpisodeEvent) -> None:
        if msg.event in SIM_RESET_EVENTS:
            self.backend.reset()
            self.core.robot_put_back()  # active again on the next fresh command, rate limit from the new pose
            self.get_logger().info(f"episode {msg.episode_id}: {msg.reason}; simulator reset")
            if self.latency.wait_for_policy:
                # Show the reset pose now and step only on the policy's answer to it: otherwise the first
                # tick after a reset damps the robot, or applies an answer to a pre-reset state, for as many
                # ticks as the messages happen to take, and the same seed records different episodes.
                self._publish_state(self.backend.read(), int(self.core.mode))

    def on_tick(self) -> None:
        s = self.backend.read()
        self._check_backend()
        if s is None:
            return  # no state from the robot yet: nothing is commanded
        buttons = getattr(s, "buttons", frozenset())  # simulated robots have no remote
        stop, go = self.remote_estop.pressed(buttons), self.remote_rearm.pressed(buttons)
        if stop:
            self.get_logger().warning(f"{self.core.estop(True)} (remote: {'+'.join(sorted(self.remote_estop.combo))})")
        elif go and not self.remote_estop.held(buttons):
            self.get_logger().warning(f"{self.core.estop(False)} (remote: {'+'.join(sorted(self.remote_rearm.combo))})")
        soc = getattr(s, "battery_soc", None)  # only the Go1 reports one
        warning = self.backend.battery.warning(soc) if soc is not None else None
        if warning:
            self.get_logger().warning(warning)
        temperature = getattr(s, "motor_temperature", None)  # likewise
        if temperature is not None and (warning := self.backend.heat.warning(temperature)):
            self.get_logger().warning(warning)
        now = time.monotonic()
        if self.latency.must_wait(now, estop=self.core.mode == Mode.ESTOP):
            return  # simulated time stands still until the policy has answered
        out = self.core.tick(s.quaternion, s.q, s.dq, now)
        if out.bad_state:
            self.get_logger().error(f"{out.reason}: a sensor or link fault; check the robot, then re-arm (estop "
                                    "service or the remote)")
        if out.mode == Mode.ACTIVE:
            self.latency.on_active_tick()
        self.backend.write(out.command)
        s = self.backend.read()
        self.ticks += 1
        msg = self._publish_state(s, int(out.mode))
        if out.fell:
            ev = EpisodeEvent(event=EpisodeEvent.ABORTED_FALL, reason=out.reason)
            ev.header.stamp = msg.header.stamp
            self.event_pub.publish(ev)
        if self.ticks % 50 == 0 or out.mode != Mode.ACTIVE and self.ticks % 10 == 0:
            values = {"mode": out.mode.name, "policy_version": str(self.core.policy_version),
                      "late_commands": str(self.latency.late), "active_ticks": str(self.latency.active_ticks)}
            if soc is not None:
                values["battery_soc"] = f"{soc:.0f}"
            temperature = getattr(s, "motor_temperature", None)
            if temperature is not None:  # the hottest motor, where overheating starts
                hottest = int(np.argmax(temperature))
                values["motor_temperature_max"] = f"{SDK_MOTOR_NAMES[hottest]} {int(temperature[hottest])} C"
            level = (DiagnosticStatus.OK if out.mode == Mode.ACTIVE
                     else DiagnosticStatus.ERROR if self.core.faulted  # a sensor or link fault, not an operator
                     else DiagnosticStatus.WARN)
            self._diagnose(level, out.reason, values, msg.header.stamp)

    def _publish_state(self, s, mode: int) -> RobotState:
        msg = robot_state(s, self.get_clock().now().to_msg(), mode, self.backend.resets + self.core.rearms)
        velocity = None
        if odd := speed_problem(s.dq):
            # One odd reading went on to the policy (a wild action) and into the recorded data; the safety filter
            # reads it as 0 (FAST_TICKS of them in FAST_WINDOW ticks are a fault: ControllerCore), and so does every
            # reader now.
            msg.dq = velocity = plausible_dq(s.dq).tolist()
            self.get_logger().warning(f"{odd}: a reading no leg makes, published as 0 rad/s",
                                      throttle_duration_sec=1.0)
        self.state_pub.publish(msg)
        self.joint_states.publish(s, msg.header.stamp, velocity)
        stamp = stamp_ns(msg.header.stamp)
        self.published.published(stamp)
        self.latency.on_state_published(stamp, time.monotonic())
        if self.backend.publishes_odometry:
            od = odometry(s, msg.header.stamp)
            self.odom_pub.publish(od)
            self.tf.send(od)
        return msg

    def _check_backend(self) -> None:
        """A backend fault (the robot's link lost, or never there) holds the e-stop while it lasts, and
        the e-stop stays latched after it: the robot must not walk off on its own when the link returns."""
        fault, before = self.backend.fault() or "", self.core.held_by
        self.core.hold(fault)
        if fault:
            if not before:
                self.get_logger().error(f"{fault}; e-stop engaged: damping until re-armed")
            self.fault_ticks += 1
            if self.fault_ticks % 25 == 1:
                self._diagnose(DiagnosticStatus.ERROR, fault, {"mode": self.core.mode.name},
                               self.get_clock().now().to_msg())
        elif before:
            self.get_logger().warning(f"fault cleared ({before}); still e-stopped: re-arm with the estop service "
                                      "or the remote")

    def _diagnose(self, level: bytes, message: str, values: dict[str, str], stamp) -> None:
        """One status on `diagnostics`, as diagnostic_updater words it: named "<node name>: control loop" (the
        prefix diagnostic_aggregator's analyzers group by), with the backend's hardware_id (which robot)."""
        st = DiagnosticStatus(level=level, name=f"{self.get_name()}: control loop", message=message,
                              hardware_id=self.backend.hardware_id,
                              values=[KeyValue(key=k, value=v) for k, v in values.items()])
        arr = DiagnosticArray(status=[st])
        arr.header.stamp = stamp
        self.diag_pub.publish(arr)

    def close(self) -> None:
        self.backend.close()  # the SDK backend damps the motors: a stopped controller leaves no stiffness
        # One machine-readable line at exit, for whoever ran the graph (the field pipeline's report).
        print(f"{CONTROLLER_SUMMARY}{json.dumps({'ticks': self.ticks, **self.latency.to_dict()})}", flush=True)


def _combo(name: str, value: str) -> frozenset[str]:
    try:
        return parse_buttons(value)
    except WireError as exc:
        raise NodeConfigError(f"{name} {exc}") from exc


def main(args: list[str] | None = None) -> int:
    return run_node(PDControllerNode, "pd_controller", args)


if __name__ == "__main__":
    sys.exit(main())
