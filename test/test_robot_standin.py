"""robot.launch.py's graph with config/robot.yaml, recording a dataset on a Go1 and a T265 that are
stand-ins: the pd_controller drives the MuJoCo Go1 behind the low-level UDP protocol through the real
Unitree SDK binary, and the odometry node reads the T265 through a pyrealsense2 of our own fed with
the simulated trunk's pose. Every node is its own process over DDS, as `ros2 launch` starts them."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
from test_control_loop import Observer

from conftest import ROOT, stop_nodes
from uni_o4_ros.data import read_hdf5
from uni_o4_ros.field.pipeline import PRETRAINED
from uni_o4_ros.msg import EpisodeEvent, RobotState, Transition
from uni_o4_ros.nodes.processes import node_command
from uni_o4_ros.nodes.stamps import stamp_ns
from uni_o4_ros.robot.go1 import DEFAULT_Q, roll_pitch, rotation_matrix
from uni_o4_ros.sim.go1_udp_robot import Go1UdpRobot, free_udp_ports
from uni_o4_ros.sim.t265_standin import FEED_ENV, STANDIN_MODULES

ROBOT_YAML = ROOT / "config" / "robot.yaml"
STEPS = 100  # per episode: 2 s at 50 Hz


def start(module: str, env: dict[str, str], logs: Path, *params: str) -> subprocess.Popen:
    """A node with config/robot.yaml and `params` over it; its output to logs/<module>.log."""
    with open(logs / f"{module}.log", "w") as out:
        return subprocess.Popen(node_command(module, params, ROBOT_YAML), env=env, cwd=ROOT, stdout=out,
                                stderr=subprocess.STDOUT)


class WalkingRobot:
    """The stand-in Go1 with a T265 on its trunk, served from a thread of the test, which keeps the
    trunk's true body-frame velocity of every tick (monotonic time, vx, vy, yaw rate)."""

    def __init__(self, t265_port: int) -> None:
        self.robot = Go1UdpRobot(port=0, t265=("127.0.0.1", t265_port))
        self.truth: list[tuple[float, float, float, float]] = []
        self.set_down: dict | None = None  # Go1Sim.reset() arguments, applied between two ticks
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def knock_over(self) -> None:
        self.set_down = {"roll": 1.4}

    def put_back(self) -> None:
        """What the operator does after a fall: stands the robot up where it lay."""
        self.set_down = {}

    def _run(self) -> None:
        while not self.done.is_set():
            if self.set_down is not None:
                self.robot.state = self.robot.sim.reset(**self.set_down)
                self.set_down = None
            if self.robot.serve_once(0.05):
                s = self.robot.state
                v = rotation_matrix(s.quaternion).T @ s.linear_velocity
                self.truth.append((time.monotonic(), float(v[0]), float(v[1]), float(s.angular_velocity[2])))

    def close(self) -> None:
        self.done.set()
        self.thread.join(timeout=10)
        self.robot.close()


class RecordingObserver(Observer):
    def __init__(self) -> None:
        super().__init__()
        from nav_msgs.msg import Odometry

        from uni_o4_ros.nodes.qos import EVENTS, SENSOR, TRANSITIONS

        self.odom: list[tuple[float, float, float, float]] = []  # monotonic arrival, vx, vy, yaw rate (body)
        self.recorder: list = []  # (monotonic arrival, EpisodeEvent)
        self.steps: dict[int, int] = {}  # transitions seen per episode
        self.answers = 0  # policy steps seen (the policy answering robot states)
        self.answered: dict[int, np.ndarray] = {}  # the policy's observation, by the stamp of the state it answered
        self.node.create_subscription(Transition, "transitions", self._on_transition, TRANSITIONS)
        self.node.create_subscription(Transition, "policy_step", self._on_answer, TRANSITIONS)
        self.node.create_subscription(Odometry, "odom", self._on_odom, SENSOR)
        self.node.create_subscription(EpisodeEvent, "recorder_events",
                                      lambda m: self.recorder.append((time.monotonic(), m)), EVENTS)

    def _on_answer(self, m) -> None:
        self.answers += 1
        self.answered[stamp_ns(m.header.stamp)] = np.asarray(m.observation, np.float32)

    def _on_transition(self, m) -> None:
        self.steps[m.episode_id] = self.steps.get(m.episode_id, 0) + 1

    def _on_odom(self, m) -> None:
        t = m.twist.twist
        self.odom.append((time.monotonic(), t.linear.x, t.linear.y, t.angular.z))

    def ended(self) -> list:
        return [e for _, e in self.recorder if e.event != EpisodeEvent.STARTED]


def window_mean(samples: list[tuple[float, ...]], t0: float, t1: float) -> np.ndarray:
    rows = np.array([s[1:] for s in samples if t0 <= s[0] <= t1])
    assert len(rows) > 50, len(rows)
    return rows.mean(axis=0)


def assert_fresh_starts(states: list, answered: dict, episodes: list, rearmed: list[int]) -> None:
    """A re-arm (or reset) is a new start: the policy's answer to the first state of each start after the
    first has its oldest frame still zero padding (not frames of the robot lying, folded up or stopped),
    and each episode `rearmed[k]` (an index into `episodes`) begins within a later start than the one
    its predecessor ended in. `states`: RobotState messages observed; `answered`: the policy's observation
    (float32) by the stamp of the state it answered (its policy_step); `episodes`: each recorded episode's
    observations. The recorder may begin a few ticks after a re-arm (then the oldest frames are of the
    re-armed robot standing)."""
    import numpy as np

    from uni_o4_ros.nodes.stamps import stamp_ns
    from uni_o4_ros.robot.observation import OBS_DIM

    seen = sorted((stamp_ns(st.header.stamp), st.resets) for st in states)
    firsts: dict[int, int] = {}
    for stamp, resets in seen:
        firsts.setdefault(resets, stamp)
    assert len(firsts) > len(rearmed), sorted(firsts)
    for resets in sorted(firsts)[1:]:
        answer = answered.get(firsts[resets])
        assert answer is not None and not np.asarray(answer)[:OBS_DIM].any(), f"start {resets}"

    def start_of(stamp: int) -> int:  # the count of the newest state observed at or before `stamp`
        return next(r for t, r in reversed(seen) if t <= stamp)

    # The answers carrying an observation, in time order: a robot standing still repeats its own, and a fresh
    # history of it repeats the one after an earlier start.
    answers_of: dict[bytes, list[int]] = {}
    for t in sorted(answered):
        answers_of.setdefault(np.asarray(answered[t], np.float32).tobytes(), []).append(t)
    for i in rearmed:
        ended = answers_of[np.asarray(episodes[i - 1][-1], np.float32).tobytes()][0]
        begun = next(t for t in answers_of[np.asarray(episodes[i][0], np.float32).tobytes()] if t > ended)
        assert start_of(begun) > start_of(ended), f"episode {i + 1}"


def test_robot_graph_records_episodes_from_the_stand_in_go1_and_t265(ros_env, tmp_path):
    [feed] = free_udp_ports()
    served = WalkingRobot(feed)
    data, logs = tmp_path / "data", tmp_path
    # Only what differs from the robot: the addresses, a state timeout that tolerates a loaded CI machine
    # (the stand-in shares the test's process), and no person to re-arm it at start (start_latched).
    ctrl = start("pd_controller_node", ros_env, logs, "start_latched:=false", "robot_ip:=127.0.0.1",
                 f"robot_port:={served.robot.port}", "local_port:=0", "state_timeout:=0.5")
    camera = {FEED_ENV: f"127.0.0.1:{feed}",
              "PYTHONPATH": os.pathsep.join(p for p in (str(STANDIN_MODULES), ros_env.get("PYTHONPATH")) if p)}
    odom = start("odometry_node", ros_env | camera, logs)
    pol = start("policy_node", ros_env, logs, f"policy_dir:={PRETRAINED}")
    # The T265 feed is served from this process too: a 0.13 s hiccup of it on a loaded machine ended an
    # episode as "odometry lost" (seen once, in a full suite run). 0.3 s still catches the drop-out of episode 3.
    rec = start("episode_recorder_node", ros_env, logs, f"max_steps:={STEPS}", "episodes:=10", "odom_timeout:=0.3")
    log = start("dataset_logger_node", ros_env, logs, f"directory:={data}")
    obs = RecordingObserver()
    try:
        obs.wait(lambda: len(obs.ended()) >= 2, timeout=120)
        walking = (obs.recorder[0][0], time.monotonic())  # from the first episode's start to now

        # The T265 stops sending for 0.5 s mid-episode (a USB drop-out).
        obs.wait(lambda: obs.steps.get(3, 0) >= 10)  # episode 3 is under way
        served.robot.t265_stalled = True
        obs.wait(lambda: len(obs.ended()) >= 3)
        served.robot.t265_stalled = False
        obs.wait(lambda: len(obs.ended()) >= 4, timeout=60)
        assert odom.poll() is None  # the odometry node outlived the drop-out

        # Episode 5: the robot falls. It lies damped for a second; nothing is recorded meanwhile. The
        # operator stands it up, then re-arms the controller, and episode 6 starts from there.
        obs.wait(lambda: obs.steps.get(5, 0) >= 10)  # episode 5 is under way
        served.knock_over()
        obs.wait(lambda: len(obs.ended()) >= 5)
        n = len(obs.states)
        obs.wait(lambda: obs.modes_since(n).count(RobotState.MODE_DAMPING) >= 50)
        served.put_back()
        obs.wait(lambda: len(obs.states) > n and abs(roll_pitch(obs.states[-1].quaternion)[0]) < 0.1)
        lying = len(obs.recorder)
        assert "re-armed" in obs.estop(False)
        obs.wait(lambda: len(obs.ended()) >= 6, timeout=60)

        # Episode 7: the policy node dies mid-episode. The controller damps (its watchdog); after
        # max_damped the episode ends at its last transition and is written, with the policy still dead.
        # Silent for silence_latch (1 s), the controller latches: a restarted policy does not make the
        # folded-up robot spring up until the operator re-arms it.
        obs.wait(lambda: obs.steps.get(7, 0) >= 20)  # episode 7 is under way
        pol.kill()
        obs.wait(lambda: len(obs.ended()) >= 7)
        obs.wait(lambda: (data / "episode_000007.hdf5").exists())
        assert pol.poll() is not None
        pol = start("policy_node", ros_env, logs, f"policy_dir:={PRETRAINED}")  # the operator restarts it
        answers, n = obs.answers, len(obs.states)
        obs.wait(lambda: obs.answers >= answers + 25, timeout=60)
        assert set(obs.modes_since(n)) == {RobotState.MODE_DAMPING}  # answered, and still damped: latched
        # The operator stands the folded-up robot up before re-arming (from the crouch the policy may fall).
        served.put_back()
        n = len(obs.states)
        obs.wait(lambda: len(obs.states) > n and np.abs(np.asarray(obs.states[-1].q) - DEFAULT_Q).max() < 0.1)
        assert "re-armed" in obs.estop(False)
        obs.wait(lambda: len(obs.ended()) >= 8, timeout=60)

        # Episode 9: the operator e-stops mid-episode: a truncation, written at once; re-armed, episode 10.
        obs.wait(lambda: obs.steps.get(9, 0) >= 20)
        assert "engaged" in obs.estop(True)
        obs.wait(lambda: len(obs.ended()) >= 9)
        obs.wait(lambda: (data / "episode_000009.hdf5").exists())
        assert "re-armed" in obs.estop(False)
        obs.wait(lambda: len(obs.ended()) >= 10, timeout=60)
        ended = obs.ended()
    finally:
        obs.close()
        stop_nodes(log, rec, pol, odom, ctrl)
        served.close()
    camera_log = (logs / "odometry_node.log").read_text()
    assert "T265: no pose frame within 100 ms" in camera_log and "T265: poses again after" in camera_log

    # The recording: two walked episodes, the one the camera cut short, one after it came back, the fall,
    # one after the operator (no episode was started while the robot lay damped), the one the policy's
    # death cut short (ended at its last transition, as a timeout), one after its restart, one the
    # operator e-stopped (a truncation too: only the fall is a termination) and one after the re-arm.
    assert [e.reason for e in ended][:2] == ["max steps", "max steps"]
    assert ended[2].reason.startswith("odometry lost") and ended[2].steps < STEPS
    assert ended[3].reason == "max steps"
    assert ended[4].reason.startswith("fall") and ended[4].event == EpisodeEvent.ABORTED_FALL
    assert [e.event for _, e in obs.recorder[:lying]].count(EpisodeEvent.STARTED) == 5
    assert ended[5].reason == "max steps"
    assert "damped" in ended[6].reason and "policy stopped answering" in ended[6].reason and ended[6].steps < STEPS
    assert ended[7].reason == "max steps"
    assert ended[8].event == EpisodeEvent.ABORTED_ESTOP and ended[8].steps < STEPS
    assert ended[9].reason == "max steps"
    files = sorted(data.glob("episode_*.hdf5"))
    assert len(files) == 10
    episodes = [read_hdf5(f) for f in files]  # validates layout, lengths and finiteness
    assert [len(e.rewards) for e in episodes] == [STEPS, STEPS, ended[2].steps, STEPS, ended[4].steps, STEPS,
                                                  ended[6].steps, STEPS, ended[8].steps, STEPS]
    for i, e in enumerate(episodes):
        last = e.terminals if i == 4 else e.timeouts  # a fall is a termination, the rest truncations
        assert last[-1] and not (e.terminals | e.timeouts)[:-1].any() and not (e.terminals & e.timeouts).any()
    # A re-arm is a new start: the policy begins a fresh history (not frames of the robot lying on its
    # side, folded up or stopped), and the episodes after each re-arm begin within it.
    assert_fresh_starts(obs.states, obs.answered, [e.observations for e in episodes], rearmed=[5, 7, 9])

    # Rewards are computed from this odometry: it must report the trunk's true motion. The body-frame
    # velocity the odometry node published while the first two episodes ran, against the simulator's,
    # from 1 s in: the robot speeds up from standing in the first second, and on a loaded machine the
    # odometry arrives a tick or more after the truth, which there shifts the two means apart.
    truth = window_mean(served.truth, walking[0] + 1.0, walking[1])
    seen = window_mean(obs.odom, walking[0] + 1.0, walking[1])
    assert truth[0] > 0.25, truth  # it walks forward at the commanded 0.5 m/s, more or less
    np.testing.assert_allclose(seen, truth, atol=0.03)
