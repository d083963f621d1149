"""policy node: RobotState -> PolicyRunner -> JointCommand; PolicyUpdate -> verify -> swap between ticks.

Parameters: policy_dir (saved policy folder), deterministic (mean action; False samples with
log-probabilities for online learning), seed (of that sampling noise), command_velocity [vx, vy,
yaw_rate] (the standing command: in force at start and whenever no `cmd_vel` command is), command_timeout
(s, 0.5: a `cmd_vel` command lapses this long after it came, and the standing command is followed
again, so a teleop that dies mid-command does not drive the robot on; 0: a command holds until the
next), command_min / command_max (the box every velocity command is clamped into: [vx, vy,
yaw_rate]; defaults: vx 0..1 m/s, the range `uni-o4 pretrain` trains, vy +-0.3 m/s, yaw rate +-0.5
rad/s; a clamped command is what the policy observes and is said in the log), hmac_key_file
(default 'auto': this computer's own key, made on first use in ~/.config/uni_o4_ros/; a path: that
key; '': unsigned updates accepted), max_update_shift (rad,
1.0; 0 = unchecked: an update that moves the joint targets further from the running policy's, on
the states of the last 5 s and on the robot standing, is refused; one whose actions there are not finite is
refused whatever it is). Every accepted or refused update is
reported on `policy_status` (diagnostic_msgs/DiagnosticStatus) and in the log, with the reason and
how far it moves the joint targets. A swapped-in version whose action on a later state is not finite is
withdrawn at that tick, the version before answering again, and reported there as a refusal of it.
Each run draws a session, announced (signed) on `policy_session`:
updates must be signed for it, so one of an earlier run (a bag played back beside the robot) is refused,
and the learner signs its newest version again for a restarted policy node. While robot states come
from two controllers (another suite on the ROS domain) it answers none, so its controller's watchdog
damps; once one is left it starts a fresh history.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from geometry_msgs.msg import Twist
from rclpy.node import Node
from rclpy.serialization import deserialize_message

from uni_o4_ros.learning.checkpoint import CheckpointError
from uni_o4_ros.learning.offline import load_policy
from uni_o4_ros.msg import JointCommand, PolicyUpdate, RobotState, Transition
from uni_o4_ros.robot.command import CommandHold, CommandLimits, CommandLimitsError
from uni_o4_ros.robot.go1 import KD, KP
from uni_o4_ros.robot.observation import POLICY_DIMS, command_vector
from uni_o4_ros.robot.policy_runner import NonFiniteAction, PolicyRunner, Verdict, Withdrawal
from uni_o4_ros.robot.policy_update import encode_update, sign_status
from uni_o4_ros.robot.safety import SingleSender, state_problem
from uni_o4_ros.robot.update_session import SESSION_STATUS, session_status

from .params import Doc, declare_read_only, require_vector, update_key
from .qos import COMMAND, EVENTS, POLICY_SESSION, POLICY_UPDATE, SENSOR, TRANSITIONS
from .run import NodeConfigError, run_node
from .stamps import sender_id

MAX_WAITING_UPDATES = 8  # received and not yet checked (each up to max_update_bytes)

PARAMETERS = {
    "policy_dir": Doc("folder; the saved policy to run (policy.safetensors + policy.json), required"),
    "deterministic": Doc("true: act with the policy's mean; false: sample actions, with log-probabilities, for "
                         "online learning"),
    "command_velocity": Doc("[vx m/s, vy m/s, yaw rate rad/s]; the standing velocity command: at start, and "
                            "whenever a cmd_vel command lapsed; must lie within command_min/command_max"),
    "command_timeout": Doc("s; a cmd_vel command lapses this long after it came, back to command_velocity (a "
                           "teleop that died sends no stop); 0: a command holds until the next", ">=0"),
    "hmac_key_file": Doc("'auto' | path | ''; the key policy updates must be signed with: auto is this computer's "
                         "own (~/.config/uni_o4_ros/, made on first use), '' accepts unsigned updates"),
    "seed": Doc("of the exploration noise when deterministic is false (each episode restarts it from seed and "
                "episode)", "[0,4294967295]"),
    "max_update_shift": Doc("rad (per state the largest joint, averaged); an update moving the joint targets "
                            "further from the running policy's, on the last 5 s of states and standing, is "
                            "refused (sampling: at the mean and 2 std either side); 0: unchecked (non-finite "
                            "actions are refused still)", ">=0"),
    "command_min": Doc("[vx m/s, vy m/s, yaw rate rad/s]; lowest velocity command: every cmd_vel is clamped into "
                       "command_min..command_max, and the clamp is logged"),
    "command_max": Doc("[vx m/s, vy m/s, yaw rate rad/s]; highest velocity command (vx 1.0: the range "
                       "`uni-o4 pretrain` trains)"),
}


class PolicyNode(Node):
    def __init__(self) -> None:
        super().__init__("policy")
        p = declare_read_only(self, PARAMETERS, {
            "policy_dir": "", "deterministic": True, "command_velocity": [0.0, 0.0, 0.0], "hmac_key_file": "auto",
            "seed": 0,  # of the exploration noise (deterministic: false)
            "max_update_shift": 1.0, "command_timeout": 0.5,
            "command_min": list(CommandLimits.low), "command_max": list(CommandLimits.high)})
        policy_dir = p["policy_dir"]
        if not policy_dir or not Path(policy_dir).is_dir():
            raise NodeConfigError(f"parameter policy_dir must name a saved policy folder, got {policy_dir!r}")
        policy, normalizer, meta, _ = load_policy(policy_dir)
        if (policy.spec.obs_dim, policy.spec.act_dim) != POLICY_DIMS:
            # A policy of another task (Hopper's 11/3) was taken, and the node ended at the robot's first state.
            raise NodeConfigError(f"{policy_dir} holds a policy of {policy.spec.obs_dim} observations and "
                                  f"{policy.spec.act_dim} actions; the Go1's are {POLICY_DIMS[0]} and {POLICY_DIMS[1]}")
        key = update_key(self, p["hmac_key_file"])
        max_shift = float(p["max_update_shift"])
        self.runner = PolicyRunner(policy, normalizer, version=int(meta.get("version", 0)),
                                   deterministic=bool(p["deterministic"]), key=key,
                                   seed=int(p["seed"]), max_update_shift=max_shift)
        try:
            self.limits = CommandLimits(require_vector(p, "command_min", 3), require_vector(p, "command_max", 3))
        except CommandLimitsError as exc:
            raise NodeConfigError(f"parameters command_min/command_max: {exc}") from None
        start_command = require_vector(p, "command_velocity", 3)
        if self.limits.clamp(start_command)[1]:
            raise NodeConfigError(f"parameter command_velocity {list(start_command)} is outside the command limits "
                                  f"({self.limits.describe()}; command_min/command_max)")
        try:
            self.hold = CommandHold(self.limits, start_command, float(p["command_timeout"]))
        except CommandLimitsError as exc:
            raise NodeConfigError(f"parameter command_timeout: {exc}") from None
        self.runner.command = command_vector(*start_command)
        self.cmd_pub = self.create_publisher(JointCommand, "joint_command", COMMAND)
        self.status_pub = self.create_publisher(DiagnosticStatus, "policy_status", EVENTS)
        # This run's session, for learners: kept for late joiners, as the newest weights are on policy_update.
        self.session_pub = self.create_publisher(DiagnosticStatus, "policy_session", POLICY_SESSION)
        values, message = session_status(self.runner.session, self.runner.version, key, self.runner.started_ns)
        self.session_pub.publish(DiagnosticStatus(level=DiagnosticStatus.OK, name=SESSION_STATUS, message=message,
                                                  values=[KeyValue(key=k, value=v) for k, v in values.items()]))
        # What the policy saw and did each tick, for the episode recorder (and online learning).
        self.step_pub = self.create_publisher(Transition, "policy_step", TRANSITIONS)
        self.seq = 0
        self.resets = 0
        # Verification (sha256, parsing, checks: 3-17 ms for a 512-256-128 policy) runs on a worker
        # thread, so a tick never waits for it. (rclpy's MultiThreadedExecutor was tried first: on
        # an idle machine it delayed commands past the 100 ms watchdog; a single-threaded executor
        # plus one worker does not.)
        self.verifier = ThreadPoolExecutor(max_workers=1, thread_name_prefix="verify")
        self.waiting, self.waiting_lock = 0, threading.Lock()  # updates submitted to it and not yet checked
        self.state_senders, self.crowded = SingleSender(), False
        self.create_subscription(RobotState, "robot_state", self.on_state, SENSOR)
        # Updates arrive serialised: one far larger than this policy's is refused unread, and the rest are
        # decoded on the verifier thread. Decoded on the tick thread, a 256 MB update stalled it for 1.9 s
        # (the watchdog damps after 0.1 s), with no key needed to send one.
        self.max_update_bytes = 4 * len(encode_update(policy, normalizer, 0)["safetensors"]) + 2**20
        self.create_subscription(PolicyUpdate, "policy_update", self.on_update, POLICY_UPDATE, raw=True)
        # Velocity commands: the recorder's per-episode command, or a joystick / teleop / Nav2. Reliable and
        # volatile as those publish (rclpy itself warns of a publisher whose QoS cannot match, e.g. best-effort).
        self.create_subscription(Twist, "cmd_vel", self.on_cmd_vel, COMMAND)
        self.get_logger().info(f"policy v{self.runner.version} from {policy_dir}, obs {self.runner.obs_dim}")

    def on_state(self, msg: RobotState, info: dict) -> None:
        controllers = self.state_senders.senders(sender_id(info), time.monotonic())
        if controllers > 1:
            # Another suite's controller on this ROS domain: answering both would drive two robots from
            # one interleaved history. Silent, this policy lets its own controller's watchdog damp.
            if not self.crowded:
                self.get_logger().error(f"robot states from {controllers} controllers: another suite shares "
                                        f"ROS_DOMAIN_ID {os.environ.get('ROS_DOMAIN_ID', '0')}; not answering "
                                        "until one is left. Give each robot, and each rehearsal, its own domain")
            self.crowded = True
            return
        if self.crowded:  # alone again: a fresh history, none of the other robot's frames
            self.crowded = False
            self.runner.reset()
            self.get_logger().warning("robot states from one controller again: answering, with a fresh history")
        self._lapse_silent_command()  # before a reset, whose fresh history shows the command
        if msg.resets != self.resets:
            # The robot was stood up again (simulation): the history restarts at this very state.
            self.resets = msg.resets
            self.runner.reset(episode=msg.resets)
        if msg.mode == RobotState.MODE_ESTOP:
            self.runner.reset()  # a fresh history once the robot is re-armed
            return
        if problem := state_problem(msg.quaternion, msg.q, msg.dq):
            # Not answered, and not in the history (its NaN raised in the observation and ended this node): the
            # controller damps on it too, and the next good state starts a fresh history.
            self.runner.reset()
            self.get_logger().error(f"not answering a bad robot state: {problem}", throttle_duration_sec=2.0)
            return
        # In DAMPING the controller waits for a fresh command to become active, so answer it too.
        try:
            res = self.runner.tick(np.asarray(msg.quaternion), np.asarray(msg.q), np.asarray(msg.dq))
        except NonFiniteAction as exc:
            # Unanswered, as a bad state is: the controller's watchdog damps, and this node (with its policy) stays
            # up. Its NaN went into the next observation and ended this node.
            self.runner.reset()
            self.get_logger().error(f"not answering: {exc}", throttle_duration_sec=2.0)
            res = None
        while self.runner.withdrawn:  # said either way: its learner goes back
            self._withdrawn(self.runner.withdrawn.pop(0))
        if res is None:
            return
        out = JointCommand()
        out.header.stamp = msg.header.stamp  # the state this command answers: latency is measurable
        out.policy_version = res.policy_version
        out.q = res.q_des.tolist()
        out.kp = [KP] * 12
        out.kd = [KD] * 12
        self.cmd_pub.publish(out)
        self.seq += 1
        step = Transition(step=self.seq % 2**32, log_prob=res.log_prob, policy_version=res.policy_version)
        step.header.stamp = msg.header.stamp
        step.observation = res.observation.tolist()
        step.action = res.action.tolist()
        self.step_pub.publish(step)

    def _lapse_silent_command(self) -> None:
        """The standing command again once cmd_vel fell silent; the runner's command changes only then and on a
        received command, not at every tick."""
        command, silence = self.hold.current(time.monotonic())
        if silence is None:
            return
        self.runner.command = command_vector(*command)
        self.get_logger().warning(
            f"no velocity command on cmd_vel for {silence:.2f} s (command_timeout {self.hold.timeout:g} s): "
            f"following the standing command ({', '.join(f'{x:g}' for x in command)}; command_velocity)")

    def on_cmd_vel(self, msg: Twist) -> None:
        asked = (msg.linear.x, msg.linear.y, msg.angular.z)
        try:
            command, clamped = self.hold.offer(asked, time.monotonic())
        except CommandLimitsError:
            self.get_logger().warning("ignored a non-finite velocity command")
            return
        self.runner.command = command_vector(*command)
        if clamped:
            # A joystick held at its end repeats the same command at 10-50 Hz: say it every 2 s, not each time.
            self.get_logger().warning(
                f"velocity command ({', '.join(f'{x:g}' for x in asked)}) is outside the command limits "
                f"({self.limits.describe()}): following ({', '.join(f'{x:g}' for x in command)})",
                throttle_duration_sec=2.0)

    def _withdrawn(self, w: Withdrawal) -> None:
        """A version withdrawn at a tick, said as a refusal of it: its learner goes back to the version running."""
        self.get_logger().error(w.reason)
        values = {"version": str(w.version), "accepted": "False", "running": str(w.running), "sha256": w.sha256,
                  "withdrawn": "True"}
        if self.runner.key is not None:
            values["signature"] = sign_status(values, w.reason, self.runner.key)
        self.status_pub.publish(DiagnosticStatus(level=DiagnosticStatus.ERROR, name="policy_update", message=w.reason,
                                                 values=[KeyValue(key=k, value=v) for k, v in values.items()]))

    def on_update(self, raw: bytes) -> None:
        if len(raw) > self.max_update_bytes:
            self._refuse_unread(f"an update of {len(raw) / 2**20:.1f} MB, more than "
                                f"{self.max_update_bytes / 2**20:.1f} MB (4 times this policy's size): not read")
            return
        # Bounded: each message waiting holds up to max_update_bytes, and anyone on the domain can send them
        # faster than they are checked (the ROS queue's depth 1 does not bound this one). A learner sends one
        # update a batch, far below it.
        with self.waiting_lock:
            if self.waiting >= MAX_WAITING_UPDATES:
                busy = True
            else:
                busy, self.waiting = False, self.waiting + 1
        if busy:
            self._refuse_unread(f"{MAX_WAITING_UPDATES} updates already wait to be checked: not read")
            return
        self.verifier.submit(self._verify_waiting, raw)

    def _verify_waiting(self, raw: bytes) -> None:
        try:
            self.verify(raw)
        finally:
            with self.waiting_lock:
                self.waiting -= 1

    def _refuse_unread(self, reason: str) -> None:
        """An update refused before its contents were read: an unsigned verdict with no version to name."""
        # Throttled: anyone on the domain can send junk, and each is answered on policy_status anyway.
        self.get_logger().warning(f"policy update refused: {reason}", throttle_duration_sec=1.0)
        self.status_pub.publish(DiagnosticStatus(level=DiagnosticStatus.WARN, name="policy_update", message=reason,
                                                 values=[KeyValue(key="accepted", value="False")]))

    def close(self) -> None:
        self.verifier.shutdown(wait=False, cancel_futures=True)

    def verify(self, raw: bytes) -> None:
        try:
            msg = deserialize_message(raw, PolicyUpdate)
        except Exception as exc:  # noqa: BLE001 - rclpy's own types; in this thread an error vanished unanswered
            self._refuse_unread(f"an update of {len(raw)} bytes that is no PolicyUpdate message "
                                f"({type(exc).__name__}): not read")
            return
        try:
            verdict = self.runner.offer(msg.version, msg.sha256, bytes(msg.safetensors), msg.spec_json,
                                        bytes(msg.signature), msg.session)
        except Exception as exc:  # noqa: BLE001 - in this thread an error would vanish, and the update with it
            verdict = Verdict(False, f"checking it failed: {type(exc).__name__}: {exc}", False, "")
        ok, reason = verdict.accepted, verdict.reason
        # Two call sites: rclpy raises when one call site logs at a second severity (and here that error
        # would have lost the refusal's status, in the verifier thread).
        if ok:
            self.get_logger().info(f"policy update v{msg.version} accepted: {reason}")
        else:
            self.get_logger().warning(f"policy update v{msg.version} refused: {reason}")
        st = DiagnosticStatus(level=DiagnosticStatus.OK if ok else DiagnosticStatus.WARN, name="policy_update",
                              message=reason)
        values = {"version": str(msg.version), "accepted": str(ok), "running": str(self.runner.next_version),
                  "sha256": verdict.sha256}
        if verdict.stale_session:
            # Not a refusal the learner goes back on: it names this run, which the learner then signs for, though
            # its announcement is dated before the run the learner holds (restarted with the clock set back).
            values.update(stale_session="True", session=self.runner.session, started_ns=str(self.runner.started_ns),
                          refused_session=msg.session)
        # The learner believes only its own robot's verdicts on its own updates: signed, and only for updates
        # signed with this robot's key. (Signing a verdict on a forgery let anyone have the learner go back.)
        if self.runner.key is not None and (verdict.authentic or verdict.stale_session):
            values["signature"] = sign_status(values, reason, self.runner.key)
        st.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        self.status_pub.publish(st)


def main(args: list[str] | None = None) -> int:
    return run_node(PolicyNode, "policy", args, errors=(CheckpointError,))  # a damaged policy folder: one line


if __name__ == "__main__":
    sys.exit(main())
