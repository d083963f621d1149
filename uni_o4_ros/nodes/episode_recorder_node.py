"""episode_recorder node: policy_step + odom + robot_state -> Transition (reward of Table 3) and
EpisodeEvent. Episodes end after max_steps (a timeout), on a fall reported by the controller (a
termination) or on an e-stop (a truncation at the episode's last transition).
Parameters: max_steps, command_velocity, auto_start, episodes (0 = no limit; an episode that ended
before its first transition gives its number to the next and does not count),
command_vx_schedule (forward speeds cycled per episode; empty = command_velocity throughout),
wait_for_subscribers (start no episode before this many `transitions` readers are connected),
wait_for_reset (simulation: the controller stands the robot up at each start; record from the
first state after that reset), total_steps (0 = no limit: after this many transitions over all
episodes the running episode ends as a timeout and no other starts), odom_timeout (s; > 0: the
running episode ends as a timeout when the newest odometry sample is older, and none starts until
odometry is fresh again; 0 = off, the simulator's default), max_damped (s; > 0: an episode in which
the controller damps the robot longer than this, because the policy stopped answering, ends at its
last transition, which is published again as the episode's timeout; 0 = off, the simulator's
default, where the controller waits for the policy). Without wait_for_reset (the robot), an
episode starts only while the controller is ACTIVE: after a fall or an e-stop the next one waits until
the robot is re-armed, so no transition spans the time it lay damped.
Services: start_episode (StartEpisode: command velocity; refused while one runs) and stop_episode
(StopEpisode: the episode ends at the next step as a timeout, event ENDED with the reason). With
auto_start, stop_episode also pauses it: no episode starts by itself (and one about to start is
called off) until start_episode is called, whose episode resumes it. An operator's stop stops the
robot: with command_source recorder the sends end, and the policy's command_timeout returns it to
its standing command.

Who sets the velocity command is `command_source`:
- `recorder` (default): the recorder sets each episode's command. It publishes it as
  geometry_msgs/Twist on `cmd_vel` at every policy step, the episode starts at the first policy step
  whose observation shows the command, and it goes on sending it each step until the episode ends
  (the policy's command_timeout returns it to its standing command when the sends stop, e.g. when the
  recorder dies). A command the policy clamps into its command limits never shows: the recorder says
  so every 2 s and waits. Another publisher on `cmd_vel` (a joystick) would be overridden at every
  step: the recorder says so.
- `external`: a joystick, teleop or Nav2 drives. The recorder publishes nothing on `cmd_vel`; episodes
  start at once, and command_velocity, command_vx_schedule and start_episode's command are not used.
Either way, each transition's reward is for the command its observation shows.

Every transition names this run of the recorder (`recorder_session`, random, and `recorder_started_ns`): the
logger and the learner keep a restarted recorder's episodes apart from the run before (both number episodes
from 1), and leave out an earlier run's transitions played back beside the robot (`ros2 bag play`).

Each policy step's reward comes from the robot state it answered (by stamp) and that moment's odometry.
A step whose own state never reached the recorder takes the newest one instead: at the episode's end the
log says how many did (a recorder short of CPU, or a lossy link).
"""

from __future__ import annotations

import sys
import time
from collections import deque

import numpy as np
from geometry_msgs.msg import Twist
from nav_msgs.msg import Odometry
from rclpy.node import Node

from uni_o4_ros.msg import EpisodeEvent, RobotState, Transition
from uni_o4_ros.robot.episodes import DampingWatch, EpisodeRecorderCore, PolicyStep, RobotMotion, StepPairing
from uni_o4_ros.robot.observation import POLICY_DIMS, newest_command, shows_command
from uni_o4_ros.robot.odometry_watch import OdometryWatch, finite_sample
from uni_o4_ros.robot.runs import new_session
from uni_o4_ros.srv import StartEpisode, StopEpisode

from .params import Doc, declare_read_only, require_vector
from .qos import COMMAND, EVENTS, SENSOR_BACKLOG, TRANSITIONS
from .run import NodeConfigError, run_node
from .stamps import stamp_ns

# How long a fall or an e-stop waits for the policy's answer it ends the episode at (a policy that died, or a
# state it does not answer, never sends it).
ANSWER_WAIT_S = 0.5

# A policy step the recorder did not record: with its state and odometry (None if they never came), and the
# recorder's prev_dq as it was before it.
Unrecorded = tuple[Transition, RobotState | None, Odometry | None, tuple[int, np.ndarray] | None]

PARAMETERS = {
    "max_steps": Doc("transitions; an episode ends as a timeout after this many (1000: 20 s at 50 Hz)", ">=1"),
    "command_velocity": Doc("[vx m/s, vy m/s, yaw rate rad/s]; each episode's velocity command, published on "
                            "cmd_vel (vx taken from command_vx_schedule when one is set; command_source recorder)"),
    "command_source": Doc("recorder: the recorder sends each episode's command on cmd_vel at every policy step; "
                          "external: a joystick, teleop or Nav2 drives and the recorder sends nothing"),
    "auto_start": Doc("start episodes by itself (stop_episode pauses it until start_episode); false: only when "
                      "the start_episode service is called"),
    "episodes": Doc("episodes; auto_start starts no more after this many (one that ended before its first "
                    "transition does not count); 0: no limit", ">=0"),
    "command_vx_schedule": Doc("m/s; forward speeds cycled one per episode; [] or [0.0] (the default: ROS cannot "
                               "declare an empty list): none, command_velocity throughout"),
    "wait_for_subscribers": Doc("readers; start no episode before this many (logger, learner) subscribe to "
                                "transitions", ">=0"),
    "wait_for_reset": Doc("simulation: the controller stands the robot up at each episode's start (pd_controller "
                          "reset_on_episode_end); record from the first state after that reset"),
    "total_steps": Doc("transitions; after this many over all episodes the running one ends as a timeout and no "
                       "other starts; 0: no limit", ">=0"),
    "odom_timeout": Doc("s; > 0: odometry older than this ends the running episode as a timeout, and none starts "
                        "until it is fresh again; 0: off", ">=0"),
    "max_damped": Doc("s; > 0: the controller damping the robot this long mid-episode (the policy stopped "
                      "answering) ends the episode at its last transition; 0: off", ">=0"),
}


class EpisodeRecorderNode(Node):
    def __init__(self) -> None:
        super().__init__("episode_recorder")
        p = declare_read_only(self, PARAMETERS, {
            "max_steps": 1000, "command_velocity": [0.5, 0.0, 0.0], "auto_start": True, "episodes": 0,
            "command_vx_schedule": [0.0], "wait_for_subscribers": 0, "wait_for_reset": False,
            "total_steps": 0, "odom_timeout": 0.0, "max_damped": 0.0, "command_source": "recorder"})
        p["command_velocity"] = require_vector(p, "command_velocity", 3)
        require_vector(p, "command_vx_schedule", len(p["command_vx_schedule"]))
        if p["command_source"] not in ("recorder", "external"):
            raise NodeConfigError(f"parameter command_source must be recorder (the recorder sets each episode's "
                                  f"command on cmd_vel) or external (a joystick, teleop or Nav2 does), got "
                                  f"{p['command_source']!r}")
        self.sends_command = p["command_source"] == "recorder"
        # wait_for_reset: the controller stands the (simulated) robot up when an episode starts
        # (pd_controller reset_on_episode_end); record from the first state after that reset.
        self.core = EpisodeRecorderCore(max_steps=int(p["max_steps"]), command_velocity=tuple(p["command_velocity"]),
                                        wait_for_reset=bool(p["wait_for_reset"]), step_budget=int(p["total_steps"]))
        # An episode's command is published first; the episode starts once the policy's newest
        # observation shows it, so no transition pairs one command's actions with another's reward.
        self.pending: tuple[float, float, float] | None = None
        self.pending_steps = 0  # policy steps seen since the pending command was first sent
        self.auto_start, self.episode_limit = bool(p["auto_start"]), int(p["episodes"])
        self.auto_paused = False  # by stop_episode, until start_episode: an operator's stop must not restart
        # ROS parameters cannot declare an empty float list, so [0.0] alone also means "no schedule".
        schedule = [float(v) for v in p["command_vx_schedule"]]
        self.schedule = [] if schedule == [0.0] else schedule
        if self.schedule and not self.sends_command:
            raise NodeConfigError("parameter command_vx_schedule needs command_source recorder: with external, "
                                  "the recorder sends no command")
        self.other_senders = 0  # other cmd_vel publishers last seen, for saying when a joystick is overridden
        self.sends = 0
        self.base_command = tuple(float(v) for v in p["command_velocity"])
        self.cmd_pub = (self.create_publisher(Twist, "cmd_vel", COMMAND)  # as teleop publishes: see policy_node
                        if self.sends_command else None)
        # Episodes start only once this many readers (logger, learner) listen to `transitions`:
        # the stream is volatile, so a reader that joins late would miss the first transitions.
        self.wait_for_subscribers = int(p["wait_for_subscribers"])
        self.session, self.started_ns = new_session(), time.time_ns()
        self.stop_reason = ""
        self.fall: tuple[int, str, float] | None = None  # (stamp, reason, when heard) of a fall to end at
        # (its stamp, the stamp of the newest state before it, when heard) of the first e-stopped state
        self.estop: tuple[int, int, float] | None = None
        self.answered = -1  # the stamp of the newest policy step handled (recorded or not)
        self.pairing = StepPairing()  # each policy step with the state it answered and that moment's odometry
        self.lost_before = 0  # pairing.lost_states when the running episode began
        self.damping = DampingWatch(float(p["max_damped"]))
        self.last_sent: dict | None = None  # the running episode's newest published transition
        # (robot resets, dq) of the last state a step answered, recorded or not (damped): ddq is over one tick
        self.prev_dq: tuple[int, np.ndarray] | None = None
        # Steps of the running episode not recorded (damped, or without their state), each with prev_dq as it
        # was before it: a fall's own state is among them when its answer came before the controller's fall
        # event did.
        self.unrecorded: deque[Unrecorded] = deque(maxlen=64)
        self.trans_pub = self.create_publisher(Transition, "transitions", TRANSITIONS)
        self.event_pub = self.create_publisher(EpisodeEvent, "recorder_events", EVENTS)
        # Rewards come from the robot state and odometry the policy step answered (by stamp), else the
        # newest: samples with NaN/inf are ignored, and on the robot (odom_timeout > 0) an episode ends
        # when odometry is that late.
        self.odom_watch = OdometryWatch(float(p["odom_timeout"]))
        self.ignored_samples = 0
        self.create_subscription(Odometry, "odom", self.on_odom, SENSOR_BACKLOG)
        self.create_subscription(RobotState, "robot_state", self.on_state, SENSOR_BACKLOG)
        self.create_subscription(Transition, "policy_step", self.on_step, TRANSITIONS)
        self.create_subscription(EpisodeEvent, "episode_events", self.on_controller_event, EVENTS)
        # Manual episodes (auto_start false, e.g. an operator with a joystick on the robot).
        self.create_service(StartEpisode, "start_episode", self.on_start_request)
        self.create_service(StopEpisode, "stop_episode", self.on_stop_request)

    def on_start_request(self, req: StartEpisode.Request, res: StartEpisode.Response) -> StartEpisode.Response:
        if self.core.active or self.pending is not None:
            res.accepted, res.episode_id = False, self.core.episode_id
            res.message = f"episode {self.core.episode_id} is still running; stop it first"
            return res
        if self.core.budget_spent:
            res.accepted, res.episode_id = False, self.core.episode_id
            res.message = f"the recording's {self.core.step_budget} steps (total_steps) are recorded"
            return res
        if lost := self._odometry_lost():
            res.accepted, res.episode_id, res.message = False, self.core.episode_id, lost
            return res
        res.accepted, res.episode_id = True, self.core.episode_id + 1
        if self.auto_paused:
            self.auto_paused = False
            self.get_logger().info("start_episode: auto_start resumes after this episode")
        if not self.sends_command:
            self._arm(*self.base_command)
            res.message = (f"episode {res.episode_id} starts at the next policy step, with the command cmd_vel "
                           "gives (command_source external: the request's command is not sent)")
            return res
        v = [float(x) for x in req.command_velocity]
        if not np.all(np.isfinite(v)):
            res.accepted, res.episode_id, res.message = False, self.core.episode_id, "command_velocity must be finite"
            return res
        self._arm(*v)
        res.message = f"episode {res.episode_id} starts once the policy follows the command"
        return res

    def on_stop_request(self, req: StopEpisode.Request, res: StopEpisode.Response) -> StopEpisode.Response:
        res.accepted = self.core.request_stop()
        self.stop_reason = req.reason or "stopped on request"
        res.message = (f"episode {self.core.episode_id} ends at the next step" if res.accepted
                       else "no episode is running")
        if not self.auto_start:
            return res
        # Before, auto_start began the next episode at once, and the recorder drove the robot on at that
        # episode's command: the operator's stop did not stop it.
        if self.pending is not None:  # armed, waiting for the policy to show its command
            self.pending = None
            res.accepted = True
            res.message = f"episode {self.core.episode_id + 1}, about to start, is called off"
        self.auto_paused = True
        res.message += "; auto_start is paused until start_episode is called"
        self.get_logger().info(f"stop_episode ({self.stop_reason}): {res.message}")
        return res

    def on_odom(self, msg: Odometry) -> None:
        t = msg.twist.twist
        if self.odom_watch.accept((t.linear.x, t.linear.y, t.linear.z, t.angular.z), time.monotonic()):
            self.pairing.add_odom(stamp_ns(msg.header.stamp), msg)
            self._record_ready()
        else:
            self._ignored("odometry")

    def on_state(self, msg: RobotState) -> None:
        stamp = stamp_ns(msg.header.stamp)
        if msg.mode == RobotState.MODE_ESTOP and self.core.active and self.estop is None:
            # An operator's stop is not the task's failure: a truncation, like a timeout, not a termination
            # (which would teach V that the states before it are worthless). It ends the episode once the step
            # answering the state before it is handled, at once if it was: that answer may still be on its way
            # on the other topic (which of two topics the executor takes first must not decide how many steps
            # are recorded, as with a fall). No e-stopped state is answered; 0.5 s at most.
            self.estop = (stamp, self.pairing.newest_state_stamp, time.monotonic())
            if self.fall is not None and self.fall[0] >= stamp:  # heard first, but it fell once stopped
                self.fall = None
        # A fall damps too; its own event ends the episode as a termination.
        damped = (msg.mode == RobotState.MODE_DAMPING and self.core.started_steps() and self.fall is None
                  and self.estop is None)
        if seconds := self.damping.exceeded(damped, stamp):
            self._end_damped(seconds)
        if finite_sample((*msg.dq, *msg.tau_est)):
            self.pairing.add_state(stamp, msg)
        else:
            self._ignored("robot state")
        self._record_ready()

    def _ignored(self, what: str, why: str = "with NaN/inf values") -> None:
        self.ignored_samples += 1
        if self.ignored_samples == 1 or self.ignored_samples % 100 == 0:
            self.get_logger().warning(f"ignored a {what} sample {why} ({self.ignored_samples} so far)")

    def _odometry_lost(self) -> str:
        return self.odom_watch.lost(time.monotonic())

    def _robot_acting(self) -> bool:
        state = self.pairing.newest_state
        return state is not None and state.mode == RobotState.MODE_ACTIVE

    def on_controller_event(self, msg: EpisodeEvent) -> None:
        # A fall of a robot e-stopped first (stamped at or after the e-stop: it fell while stopped, or as it was
        # re-armed) is no step of the policy's: the e-stop ends the episode, as a truncation.
        if msg.event == EpisodeEvent.ABORTED_FALL and self.core.active and not (
                self.estop is not None and stamp_ns(msg.header.stamp) >= self.estop[0]):
            # The event carries the stamp of the first state after the fall. The episode ends when the
            # policy's answer to that state comes (its steps arrive in order), not when the event does:
            # which of two topics the executor takes first must not decide how many steps are recorded.
            self.fall = (stamp_ns(msg.header.stamp), msg.reason, time.monotonic())
            self._record_ready()

    def _fall_reached(self, answered: int | None) -> bool:
        """The pending fall ends the episode now: its state was answered, or the answer is overdue (a
        policy that died does not answer)."""
        if self.fall is None:
            return False
        stamp, _, heard = self.fall
        return (answered is not None and answered >= stamp) or time.monotonic() - heard > ANSWER_WAIT_S

    def _estop_reached(self) -> bool:
        """The pending e-stop ends the episode now: the step answering the state before it was handled, or 0.5 s
        have passed (that state was one the policy does not answer, or the policy died)."""
        if self.estop is None:
            return False
        _, before, heard = self.estop
        return self.answered >= before or time.monotonic() - heard > ANSWER_WAIT_S

    def _end_by_estop(self) -> None:
        self.estop = None
        if self.core.active:
            self._truncate(EpisodeEvent.ABORTED_ESTOP, "e-stop: the episode ends at its last transition, "
                           "as a truncation")

    def _maybe_start(self) -> None:
        if self.core.active or self.pending is not None or not self.auto_start or self.auto_paused:
            return
        if self.episode_limit and self.core.episode_id >= self.episode_limit:
            return
        if self.core.budget_spent:
            return
        if (readers := self.trans_pub.get_subscription_count()) < self.wait_for_subscribers:
            # Said: a logger that died at start, or listens in another namespace, would leave the robot standing.
            self.get_logger().info(f"no episode starts before {self.wait_for_subscribers} reader(s) of transitions "
                                   f"listen (wait_for_subscribers); {readers} do: the dataset_logger, the learner, "
                                   "ros2 bag record each count", throttle_duration_sec=5.0)
            return
        if self._odometry_lost():
            return  # an episode would end at its first step
        if not self.core.wait_for_reset and not self._robot_acting():
            return  # the robot: lying damped after a fall, or e-stopped, until someone re-arms it
        vx, vy, wz = self.base_command
        if self.schedule:
            vx = self.schedule[self.core.episode_id % len(self.schedule)]
        self._arm(vx, vy, wz)

    def _arm(self, vx: float, vy: float, wz: float) -> None:
        """An episode is to start (with command_source external, at the next policy step, whatever it shows)."""
        self.pending, self.pending_steps = (float(vx), float(vy), float(wz)), 0
        if self.sends_command:
            self._send(self.pending)

    def _send(self, command: tuple[float, float, float]) -> None:
        cmd = Twist()
        cmd.linear.x, cmd.linear.y, cmd.angular.z = command
        self.cmd_pub.publish(cmd)

    def _still_pending(self, observation: np.ndarray) -> None:
        """The policy does not show the episode's command yet: send it again (cmd_vel is volatile, and the
        policy's subscription may have matched after the first), and say why if it never shows."""
        self._send(self.pending)
        self.pending_steps += 1
        if self.pending_steps % 100 == 0:  # 2 s at 50 Hz
            shown = ", ".join(f"{x:.3g}" for x in newest_command(observation))
            asked = ", ".join(f"{x:g}" for x in self.pending)
            self.get_logger().warning(f"episode {self.core.episode_id + 1} waits: the policy follows ({shown}), "
                                      f"not the episode's command ({asked}); outside the policy's command_min/"
                                      "command_max, or another cmd_vel publisher overriding it?")

    def _keep_sending(self) -> None:
        """The running episode's command, again at this policy step: the policy's command_timeout lapses it
        when the sends stop. Checked each second: another publisher, whose commands this one overrides."""
        self._send(self.core.command_velocity)
        self.sends += 1
        if self.sends % 50 != 1:
            return
        others = self.count_publishers("cmd_vel") - 1
        if others > self.other_senders:
            self.get_logger().warning(f"{others} other publisher(s) on cmd_vel (a joystick, teleop?): the recorder "
                                      "sends its episode's command at every step and overrides them; to drive by "
                                      "hand, give the recorder command_source: external")
        self.other_senders = others

    def _begin(self, vx: float, vy: float, wz: float) -> int:
        eid = self.core.start()
        self.fall, self.estop, self.damping.since = None, None, None
        self.unrecorded.clear()
        self.core.command_velocity = (vx, vy, wz)
        self.pending = None
        self.lost_before = self.pairing.lost_states
        self._event(eid, EpisodeEvent.STARTED, 0, 0.0, f"started, command vx {vx:.2f} m/s")
        return eid

    def on_step(self, msg: Transition) -> None:
        if (len(msg.observation), len(msg.action)) != POLICY_DIMS or not finite_sample((*msg.observation,
                                                                                        *msg.action)):
            # Another publisher's, or a broken policy's: one such step ended this node (a reshape or broadcast
            # error), and the recording with it.
            self._ignored("policy step", f"of {len(msg.observation)}/{len(msg.action)} observation/action values "
                          f"({POLICY_DIMS[0]}/{POLICY_DIMS[1]} expected) or with NaN/inf values")
            return
        self._maybe_start()
        if self.pending is not None:
            observation = np.asarray(msg.observation, np.float32)
            if not self.sends_command:  # external: the episode's command is whatever cmd_vel gives
                self._begin(*(float(x) for x in newest_command(observation)))
            elif shows_command(observation, *self.pending):
                self._begin(*self.pending)
            else:
                self._still_pending(observation)
        if self.core.active:
            if self.sends_command:
                self._keep_sending()
            self.pairing.add_step(stamp_ns(msg.header.stamp), msg, time.monotonic())
            self._record_ready()

    def _record_ready(self) -> None:
        for msg, state, odom in self.pairing.ready(time.monotonic()):
            stamp = stamp_ns(msg.header.stamp)
            if self._fall_reached(stamp):
                self._end_by_fall((msg, state, odom, self.prev_dq))
            if self.estop is not None and stamp >= self.estop[0]:  # an e-stopped state's answer, or a re-armed one's
                self._end_by_estop()
            if self.core.active:
                self._take(msg, state, odom)
            self.answered = max(self.answered, stamp)
            if self._estop_reached():
                self._end_by_estop()
        if self._fall_reached(None):
            self._end_by_fall(None)
        if self._estop_reached():
            self._end_by_estop()

    def _take(self, msg: Transition, state: RobotState | None, odom: Odometry | None) -> None:
        """A policy step of the running episode, with the state it answered and that moment's odometry."""
        if state is None or odom is None or (state.mode != RobotState.MODE_ACTIVE and (
                self.core.started_steps() or not self.core.wait_for_reset)):
            # Damped: the robot is not acting on the policy (mid-episode: a fall, the watchdog). Only a
            # simulated episode begins from a damped state: the one the controller's reset publishes.
            self.unrecorded.append((msg, state, odom, self.prev_dq))
            if state is not None:  # the joints moved meanwhile: the next ddq is from here, not across the gap
                self.prev_dq = (state.resets, np.asarray(state.dq, np.float32))
            return
        self.unrecorded.clear()
        self._record(msg, state, odom)

    def _end_damped(self, seconds: float) -> None:
        self._truncate(EpisodeEvent.ENDED, f"the robot was damped for {seconds:.2f} s (max_damped "
                       f"{self.damping.limit:g} s): the policy stopped answering")
        self.get_logger().warning(f"episode {self.core.episode_id}: the policy stopped answering")

    def _truncate(self, event: int, reason: str) -> None:
        """End the episode at its last published transition (the robot stopped acting on the policy)."""
        self.core.truncate()
        self.damping.since = None
        last = self.last_sent
        if last is not None and last["episode_id"] == self.core.episode_id:
            # The last transition again, now marked as the episode's end: the logger and the learner keep
            # the later of two with the same episode and step.
            self._publish(dict(last, timeout=True))
        self._event(self.core.episode_id, event, self.core.steps, self.core.episode_return, reason)

    def _end_by_fall(self, answer: Unrecorded | None) -> None:
        """End the episode at the fall: its last transition leads into the first fallen state the policy
        answered (s'), rewarded by that state's motion, as a terminal."""
        stamp, reason, _ = self.fall
        self.fall = None
        # `answer` may be a step of before the fall, handled once the fall's answer was overdue
        fallen = [a for a in (*self.unrecorded, *([answer] if answer is not None else []))
                  if stamp_ns(a[0].header.stamp) >= stamp]
        self.unrecorded.clear()
        if not self.core.active:
            return
        next_observation = motion = None
        if fallen:
            msg, state, odom, self.prev_dq = fallen[0]  # ddq as of the fallen state's tick, whichever came first
            next_observation = np.asarray(msg.observation, np.float32)
            if state is not None and odom is not None and not self._odometry_lost():  # as every reward: fresh
                motion = self._motion(state, odom)
        self._end(self.core.abort(next_observation, motion), EpisodeEvent.ABORTED_FALL, reason)

    def _record(self, msg: Transition, state: RobotState, odom: Odometry) -> None:
        if lost := self._odometry_lost():
            # This step's own odometry never came (it was paired with the newest, older than odom_timeout): its
            # reward would be that of a velocity the robot no longer has. The episode ends at the transition
            # before it, as a truncation (before, this step's was made, rewarded by the stale velocity).
            self.get_logger().warning(f"episode {self.core.episode_id}: {lost}")
            self._truncate(EpisodeEvent.ENDED, lost)
            return
        motion = self._motion(state, odom)
        observation = np.asarray(msg.observation, np.float32)
        step = PolicyStep(msg.step, observation, np.asarray(msg.action, np.float32), msg.log_prob, msg.policy_version,
                          command=tuple(float(x) for x in newest_command(observation)))
        skipped = self.core.skipped
        out = self.core.on_step(step, motion)
        if self.core.skipped > skipped and self.core.skipped % 250 == 0:
            self.get_logger().warning(f"episode {self.core.episode_id}: still waiting for the robot's reset after "
                                      f"{self.core.skipped} steps (is reset_on_episode_end set on the controller?)")
        if out is not None:
            self._publish(out)
            if out["timeout"] and self.core.stop_requested:
                self._event(out["episode_id"], EpisodeEvent.ENDED, self.core.steps, self.core.episode_return,
                            self.stop_reason)
            elif out["timeout"] and self.core.steps < self.core.max_steps and self.core.budget_spent:
                self._event(out["episode_id"], EpisodeEvent.ENDED, self.core.steps, self.core.episode_return,
                            f"recording complete: {self.core.recorded} steps (total_steps)")
            elif out["timeout"]:
                self._event(out["episode_id"], EpisodeEvent.TIMEOUT, self.core.steps, self.core.episode_return,
                            "max steps")

    def _motion(self, state: RobotState, odom: Odometry) -> RobotMotion:
        """What the robot did in the tick that led to `state` (its reward's terms)."""
        dq = np.asarray(state.dq, np.float32)
        # No acceleration across a reset of the (simulated) robot: the joints jumped, they did not accelerate.
        same_run = self.prev_dq is not None and self.prev_dq[0] == state.resets
        ddq = (dq - self.prev_dq[1]) / 0.02 if same_run else np.zeros(12, np.float32)
        self.prev_dq = (state.resets, dq)
        t = odom.twist.twist
        return RobotMotion(v_xy=np.array([t.linear.x, t.linear.y]), v_z=t.linear.z, yaw_rate=t.angular.z,
                           tau=np.asarray(state.tau_est), dq=dq, ddq=ddq)

    def _publish(self, t: dict) -> None:
        self.last_sent = t
        m = Transition(episode_id=t["episode_id"], step=t["step"], log_prob=float(t["log_prob"]),
                       reward=float(t["reward"]), terminal=bool(t["terminal"]), timeout=bool(t["timeout"]),
                       policy_version=int(t["policy_version"]), recorder_session=self.session,
                       recorder_started_ns=self.started_ns)
        m.header.stamp = self.get_clock().now().to_msg()
        m.observation, m.next_observation = t["observation"].tolist(), np.asarray(t["next_observation"]).tolist()
        m.action = t["action"].tolist()
        self.trans_pub.publish(m)

    def _end(self, last: dict | None, event: int, reason: str) -> None:
        if last is not None:
            self._publish(last)
        self._event(self.core.episode_id, event, self.core.steps, self.core.episode_return, reason)

    def _event(self, eid: int, event: int, steps: int, ret: float, reason: str) -> None:
        ev = EpisodeEvent(episode_id=eid, event=event, steps=steps, episode_return=float(ret), reason=reason)
        ev.header.stamp = self.get_clock().now().to_msg()
        self.event_pub.publish(ev)
        self.get_logger().info(f"episode {eid}: {reason} after {steps} steps, return {ret:.3f}")
        if event != EpisodeEvent.STARTED and (lost := self.pairing.lost_states - self.lost_before):
            self.lost_before = self.pairing.lost_states
            # Such a step's reward took its torques and joint velocities from another tick: worth knowing of a
            # dataset, and a sign of a recorder short of CPU or a lossy link.
            self.get_logger().warning(f"episode {eid}: {lost} policy step(s) were paired with another robot state "
                                      "than the one they answered, which never reached the recorder (a recorder "
                                      "short of CPU, or a lossy link); their rewards use that state")
        if event != EpisodeEvent.STARTED and self.core.give_back_if_empty():
            self.get_logger().warning(f"episode {eid} ended before its first transition: nothing recorded; "
                                      "the next episode takes its number")


def main(args: list[str] | None = None) -> int:
    return run_node(EpisodeRecorderNode, "episode_recorder", args)


if __name__ == "__main__":
    sys.exit(main())
