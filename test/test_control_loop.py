"""pd_controller (with the MuJoCo Go1 backend) and the policy node as separate processes over DDS:
the loop runs, e-stop holds damping until re-armed, killing the policy triggers the watchdog,
and a fall latches damping and reports an aborted episode."""

from __future__ import annotations

import numpy as np

from conftest import start_node as start
from conftest import stop_nodes as stop
from conftest import wait_until

WATCHDOG = 0.1


class Observer:
    def __init__(self) -> None:
        import rclpy
        from std_srvs.srv import SetBool

        from uni_o4_ros.msg import EpisodeEvent, RobotState
        from uni_o4_ros.nodes.qos import EVENTS, SENSOR

        rclpy.init()
        self.rclpy, self.SetBool = rclpy, SetBool
        self.node = rclpy.create_node("observer")
        self.states: list = []
        self.events: list = []
        self.node.create_subscription(RobotState, "robot_state", self.states.append, SENSOR)
        self.node.create_subscription(EpisodeEvent, "episode_events", self.events.append, EVENTS)
        self.client = self.node.create_client(SetBool, "estop")

    def wait(self, cond, timeout: float = 60.0) -> None:
        wait_until(self.rclpy, self.node, cond, timeout)

    def modes_since(self, n: int) -> list[int]:
        return [s.mode for s in self.states[n:]]

    def estop(self, engage: bool) -> str:
        assert self.client.wait_for_service(timeout_sec=30)
        fut = self.client.call_async(self.SetBool.Request(data=engage))
        self.wait(fut.done)
        return fut.result().message

    def close(self) -> None:
        self.node.destroy_node()
        self.rclpy.shutdown()


def stamp(s) -> float:
    return s.header.stamp.sec + 1e-9 * s.header.stamp.nanosec


def operator(env: dict[str, str], action: str, *args: str) -> str:
    """`uni-o4 estop ACTION` as a user runs it; its output (exit code 0 asserted)."""
    import subprocess
    import sys

    from conftest import ROOT

    done = subprocess.run([sys.executable, "-m", "uni_o4_ros.cli", "estop", action, *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_uni_o4_estop_without_a_controller_is_a_one_line_error(ros_env):
    import subprocess
    import sys

    from conftest import ROOT

    done = subprocess.run([sys.executable, "-m", "uni_o4_ros.cli", "estop", "engage", "--timeout", "1"], env=ros_env,
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.startswith("uni-o4 estop: error: no pd_controller answered on /estop within 1 s")
    assert "Traceback" not in done.stderr
    # a ROS_DOMAIN_ID DDS cannot use: rcl's traceback (abc), Fast DDS's port errors (999)
    for domain in ("abc", "999"):
        done = subprocess.run([sys.executable, "-m", "uni_o4_ros.cli", "estop", "engage", "--timeout", "1"],
                              env=ros_env | {"ROS_DOMAIN_ID": domain}, cwd=ROOT, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 2 and done.stderr == (f"uni-o4 estop: error: ROS_DOMAIN_ID {domain!r} is no ROS "
                                                        "domain: set a whole number 0..232 (or unset it for 0)\n")


def test_loop_estop_and_watchdog(ros_env, standing_policy):
    ctrl = start("uni_o4_ros.nodes.pd_controller_node", ros_env, f"watchdog_timeout:={WATCHDOG}")
    pol = start("uni_o4_ros.nodes.policy_node", ros_env, f"policy_dir:={standing_policy}")
    obs = Observer()
    try:
        obs.wait(lambda: 1 in obs.modes_since(0))
        first = obs.modes_since(0).index(1)
        obs.wait(lambda: len(obs.states) >= first + 150)  # 3 s of closed-loop control
        assert set(obs.modes_since(first + 2)) == {1}  # the policy answers every tick in time
        active = [s for s in obs.states if s.mode == 1]
        assert all(np.all(np.isfinite(s.q)) for s in active)
        assert all(sum(s.foot_contact) >= 3 for s in active[-10:])  # standing on its feet

        # The operator's e-stop from a terminal without ros2cli: `uni-o4 estop engage` / `rearm`.
        n = len(obs.states)
        assert "engaged" in operator(ros_env, "engage")
        obs.wait(lambda: obs.modes_since(n).count(2) >= 25)  # commands keep coming, e-stop holds
        first_estop = obs.modes_since(n).index(2)
        assert set(obs.modes_since(n + first_estop)) == {2}
        n = len(obs.states)
        assert "re-armed" in operator(ros_env, "rearm")
        obs.wait(lambda: obs.modes_since(n).count(1) >= 10)

        n = len(obs.states)
        pol.kill()  # the policy process dies without a goodbye
        pol.wait(timeout=10)
        obs.wait(lambda: obs.modes_since(n).count(0) >= 10)
        after = obs.states[n:]
        last_active = max(i for i, s in enumerate(after) if s.mode == 1) if any(s.mode == 1 for s in after) else None
        first_damp = next(i for i, s in enumerate(after) if s.mode == 0)
        assert all(s.mode == 0 for s in after[first_damp:])  # stays damped
        if last_active is not None:
            # controller ticks stamp the states: damping starts within the timeout (+ tick jitter)
            assert stamp(after[first_damp]) - stamp(after[last_active]) <= WATCHDOG + 0.1
    finally:
        obs.close()
        stop(pol, ctrl)


def test_the_control_loop_keeps_its_rate_and_its_estop_when_the_wall_clock_is_set_back(ros_env, standing_policy,
                                                                                      tmp_path):
    """NTP stepping a robot computer's clock back (it booted with a stale time, no RTC), or an operator's `date`:
    the 50 Hz timer ran on the wall clock and stopped for as long as the clock went back, so the Go1 held its
    last stiff command with no watchdog, fall check or e-stop acting. The timer now runs on the steady clock."""
    from conftest import wall_clock_set_back_by_hand

    env, offset = wall_clock_set_back_by_hand(ros_env, tmp_path)
    ctrl = start("uni_o4_ros.nodes.pd_controller_node", env)
    pol = start("uni_o4_ros.nodes.policy_node", ros_env, f"policy_dir:={standing_policy}")
    obs = Observer()
    try:
        obs.wait(lambda: obs.modes_since(0).count(1) >= 25)
        n = len(obs.states)
        offset.write_text("-60s\n")  # the controller's wall clock goes a minute back
        obs.wait(lambda: stamp(obs.states[-1]) < stamp(obs.states[n - 1]) - 30, timeout=30)  # it has
        n = len(obs.states)
        obs.wait(lambda: len(obs.states) >= n + 100, timeout=30)  # 2 s of ticks, not a minute's stall
        assert set(obs.modes_since(n)) == {1}  # and the policy's commands kept the robot active throughout
        assert "engaged" in operator(ros_env, "engage")  # and the e-stop acts at once
        n = len(obs.states)
        obs.wait(lambda: obs.modes_since(n).count(2) >= 10, timeout=30)
    finally:
        obs.close()
        stop(pol, ctrl)


def test_a_controller_started_latched_moves_no_motor_until_the_operator_rearms(ros_env, standing_policy):
    """Seen: `ros2 launch robot.launch.py` stood the Go1 up and walked it on the policy's first command, seconds
    after start, with nobody having said go. robot.yaml's start_latched keeps the e-stop engaged until re-armed."""
    ctrl = start("uni_o4_ros.nodes.pd_controller_node", ros_env, "start_latched:=true")
    pol = start("uni_o4_ros.nodes.policy_node", ros_env, f"policy_dir:={standing_policy}")
    obs = Observer()
    try:
        obs.wait(lambda: len(obs.states) >= 100)  # 2 s with the policy answering every state
        assert set(obs.modes_since(0)) == {2}, "a motor was driven before the operator re-armed"
        n = len(obs.states)
        assert "re-armed" in operator(ros_env, "rearm")
        obs.wait(lambda: obs.modes_since(n).count(1) >= 10)
    finally:
        obs.close()
        stop(pol, ctrl)


def test_fall_latches_damping_and_aborts_the_episode(ros_env, standing_policy):
    ctrl = start("uni_o4_ros.nodes.pd_controller_node", ros_env, "spawn_roll:=1.4")
    pol = start("uni_o4_ros.nodes.policy_node", ros_env, f"policy_dir:={standing_policy}")
    obs = Observer()
    try:
        obs.wait(lambda: len(obs.events) >= 1 and len(obs.states) >= 50)
        assert obs.events[0].event == 2 and "fall" in obs.events[0].reason
        assert 1 not in obs.modes_since(0)  # never active while fallen, although commands arrive
        assert len(obs.events) == 1  # reported once, not every tick
    finally:
        obs.close()
        stop(pol, ctrl)


def test_commands_answering_an_older_state_are_counted_late(ros_env):
    """A policy one tick behind (each command answers the state before the newest) is active but
    late on every tick; the controller's diagnostics and its exit line both say so."""
    import subprocess

    from diagnostic_msgs.msg import DiagnosticArray

    from uni_o4_ros.msg import JointCommand, RobotState
    from uni_o4_ros.nodes.processes import node_command
    from uni_o4_ros.nodes.qos import COMMAND, DIAGNOSTICS, SENSOR

    ctrl = subprocess.Popen(node_command("pd_controller_node", ["watchdog_timeout:=0.5"]), env=ros_env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    obs = Observer()
    pub = obs.node.create_publisher(JointCommand, "joint_command", COMMAND)
    seen: dict = {"previous": None}
    diagnostics: list[dict] = []

    def answer_one_tick_late(s: RobotState) -> None:
        if seen["previous"] is not None:
            cmd = JointCommand(q=list(s.q), kp=[20.0] * 12, kd=[0.5] * 12)
            cmd.header.stamp = seen["previous"]
            pub.publish(cmd)
        seen["previous"] = s.header.stamp

    def on_diagnostics(m: DiagnosticArray) -> None:
        diagnostics.extend({kv.key: kv.value for kv in st.values} for st in m.status
                           if st.name == "pd_controller: control loop")

    obs.node.create_subscription(RobotState, "robot_state", answer_one_tick_late, SENSOR)
    obs.node.create_subscription(DiagnosticArray, "diagnostics", on_diagnostics, DIAGNOSTICS)
    try:
        obs.wait(lambda: any(int(d.get("active_ticks", 0)) >= 50 for d in diagnostics))
        d = next(d for d in diagnostics if int(d["active_ticks"]) >= 50)
        assert int(d["late_commands"]) == int(d["active_ticks"])
    finally:
        obs.close()
        stop(ctrl)
    summary = _controller_summary(ctrl)
    assert summary["active_ticks"] >= 50 and summary["late_commands"] == summary["active_ticks"]
    assert summary["late_fraction"] == 1.0


def _controller_summary(proc) -> dict:
    import json

    from uni_o4_ros.robot.controller import CONTROLLER_SUMMARY

    line = next(ln for ln in proc.stdout.read().splitlines() if ln.startswith(CONTROLLER_SUMMARY))
    return json.loads(line[len(CONTROLLER_SUMMARY):])


def test_waiting_for_the_policy_keeps_a_fast_simulation_in_exact_lockstep(ros_env):
    """A policy answering at 50 Hz while the simulated robot ticks at 200 Hz: without waiting most
    ticks apply a command to a newer state than it answered (latency the robot would not have);
    with wait_for_policy the simulated time waits for each answer and no command is late."""
    import subprocess

    from uni_o4_ros.msg import JointCommand, RobotState
    from uni_o4_ros.nodes.processes import node_command
    from uni_o4_ros.nodes.qos import COMMAND, SENSOR

    summaries = {}
    for wait in (False, True):
        ctrl = subprocess.Popen(node_command("pd_controller_node", [
            "rate_hz:=200.0", "watchdog_timeout:=1.0", f"wait_for_policy:={str(wait).lower()}"]),
            env=ros_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        obs = Observer()
        pub = obs.node.create_publisher(JointCommand, "joint_command", COMMAND)
        newest: dict = {}

        def remember(s: RobotState, newest=newest) -> None:
            newest["state"] = s

        def answer_newest(pub=pub, newest=newest) -> None:  # a slow policy: 50 answers a second
            s = newest.get("state")
            if s is not None:
                cmd = JointCommand(q=list(s.q), kp=[20.0] * 12, kd=[0.5] * 12)
                cmd.header.stamp = s.header.stamp
                pub.publish(cmd)

        obs.node.create_subscription(RobotState, "robot_state", remember, SENSOR)
        obs.node.create_timer(0.02, answer_newest)
        try:
            obs.wait(lambda o=obs: o.modes_since(0).count(1) >= 100)
        finally:
            obs.close()
            stop(ctrl)
        summaries[wait] = _controller_summary(ctrl)
    free, waiting = summaries[False], summaries[True]
    assert free["active_ticks"] >= 100 and free["late_commands"] > free["active_ticks"] / 2
    assert waiting["active_ticks"] >= 100 and waiting["late_commands"] == 0


def test_nodes_refuse_meaningless_parameters_at_start_with_one_line(ros_env, standing_policy, tmp_path):
    """Waiting for the policy only makes sense when the controller owns simulated time; a hardware
    backend (here the go1_sim node's motor-board protocol) refuses it, as does a zero rate. Safety limits
    that mean nothing were taken as given: a negative watchdog_timeout never damped, torque_fraction 9
    let torques past the motors' limits, a recorder with max_steps 0 or a 1-number velocity ran on, and a
    policy started on a velocity its command limits do not allow would have been asked for it."""
    import concurrent.futures
    import os
    import shutil
    import subprocess

    from uni_o4_ros.learning.normalizer import StateNormalizer
    from uni_o4_ros.learning.offline import save_policy
    from uni_o4_ros.learning.policy import make_policy
    from uni_o4_ros.nodes.processes import node_command

    afile, hopper, damaged = tmp_path / "afile", tmp_path / "hopper_policy", tmp_path / "damaged_policy"
    afile.write_text("a file where a folder is expected\n")
    save_policy(hopper, "policy", make_policy(11, 3, hidden=(8,)), StateNormalizer.identity(11))
    shutil.copytree(standing_policy, damaged)
    (damaged / "policy.safetensors").write_bytes((damaged / "policy.safetensors").read_bytes()[:100])
    broken_yaml = tmp_path / "broken.yaml"
    broken_yaml.write_text("a: [\n")
    controller = "pd_controller_node"
    cases: list[tuple[list[str], str]] = []
    for node, params, needle in (
            # before: each a traceback, at start or (the learner) at its first update, the logger's episodes
            # kept in memory until shutdown and lost there
            ("dataset_logger_node", [f"directory:={afile}"], f"parameter directory {str(afile)!r} is a file"),
            ("learner_node", [f"policy_dir:={standing_policy}", f"run_dir:={afile}/run"],
             "parameter run_dir"),
            ("policy_node", [f"policy_dir:={hopper}"], "holds a policy of 11 observations and 3 actions; the Go1's"),
            ("policy_node", [f"policy_dir:={damaged}"], "damaged_policy/policy is unreadable"),
            ("policy_node", ["--params-file", str(broken_yaml)], "Couldn't parse params file"),
            (controller, ["backend:=go1_sim", "wait_for_policy:=true"], "a real robot cannot wait"),
            (controller, ["rate_hz:=0.0"], "parameter rate_hz: must be > 0, got 0.0"),
            (controller, ["backend:=unitree_sdk", "reset_on_episode_end:=true"],
             "reset_on_episode_end puts a simulated robot back on its feet; on the Go1 it would re-activate"),
            (controller, ["remote_estop:=L2+Q"], "unknown button(s) ['Q']"),
            (controller, ["max_tilt:=1"], "a DOUBLE parameter needs a decimal point"),
            (controller, ["min_battery_soc:=15.0"], "an INTEGER parameter takes a whole number"),
            (controller, ["watchdog_timeout:=-0.1"], "parameter watchdog_timeout: must be > 0, got -0.1"),
            (controller, ["torque_fraction:=9.0"], "parameter torque_fraction: must be in (0, 1], got 9.0"),
            (controller, ["spawn_roll:=.nan"], "parameter spawn_roll: must be in [-pi, pi], got nan"),  # was taken
            ("go1_sim_node", ["spawn_roll:=.nan"], "parameter spawn_roll: must be in [-pi, pi], got nan"),
            ("odometry_node", ["source:=bag"], "no odometry bag named: set bag_path"),  # was "bag . not found"
            # a traceback from the socket's bind before (OverflowError: port must be 0-65535)
            (controller, ["backend:=unitree_sdk", "local_port:=70000"],
             "parameter local_port: must be in [0, 65535], got 70000"),
            (controller, ["backend:=unitree_sdk", "robot_port:=0"],
             "parameter robot_port: must be in [1, 65535], got 0"),
            ("episode_recorder_node", ["max_steps:=0"], "parameter max_steps: must be >= 1, got 0"),
            ("episode_recorder_node", ["command_source:=joystick"], "parameter command_source must be recorder"),
            ("episode_recorder_node", ["command_source:=external", "command_vx_schedule:=[0.5, 1.0]"],
             "parameter command_vx_schedule needs command_source recorder"),
            ("policy_node", [f"policy_dir:={standing_policy}", "command_timeout:=-0.5"],
             "parameter command_timeout: must be >= 0, got -0.5"),
            ("policy_node", [f"policy_dir:={standing_policy}", "command_velocity:=[0.5]"],
             "parameter command_velocity: must be 3 finite numbers, got [0.5]"),
            ("policy_node", [f"policy_dir:={standing_policy}", "command_velocity:=[2.0, 0.0, 0.0]"],
             "parameter command_velocity [2.0, 0.0, 0.0] is outside the command limits (vx 0..1, vy -0.3..0.3"),
            ("policy_node", [f"policy_dir:={standing_policy}", "command_min:=[1.5, 0.0, 0.0]"],
             "command limits: low [1.5, 0.0, 0.0] is above high [1.0, 0.3, 0.5]"),
            # before: taken, and the first reset of a simulated robot ended the node (torch's seed overflowed)
            ("policy_node", [f"policy_dir:={standing_policy}", "seed:=4611686018427387904"],
             "parameter seed: must be in [0, 4294967295], got 4611686018427387904")):
        cmd = node_command(node, params_file=params[1]) if params[0] == "--params-file" else node_command(node, params)
        cases.append((cmd, needle))

    def start(cmd: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, env=ros_env, capture_output=True, text=True, timeout=120)

    # Side by side, as many as there are cores: each is a process that imports rclpy and refuses (1 s each).
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        for (cmd, needle), run in zip(cases, pool.map(start, [cmd for cmd, _ in cases])):
            assert run.returncode == 2 and needle in run.stderr and "Traceback" not in run.stderr, (cmd, run.stderr)


def test_a_parameters_file_section_for_every_node_is_left_to_the_nodes_that_have_its_parameters(ros_env, tmp_path):
    """ROS users keep values several nodes share in one `/**:` section of a parameters file, and each node takes
    the ones it has. The controller refused the recorder's max_steps there as a misspelling of its own; now it
    starts and applies max_tilt from the same section. Given to the controller alone (its own section, or -p),
    a parameter it lacks is still refused."""
    import subprocess

    from rcl_interfaces.srv import GetParameters

    from uni_o4_ros.nodes.processes import node_command

    shared = tmp_path / "shared.yaml"
    shared.write_text("/**:\n  ros__parameters:\n    max_tilt: 0.8\n    max_steps: 50\n")
    own = tmp_path / "own.yaml"
    own.write_text("/**:\n  ros__parameters:\n    max_tilt: 0.8\n/**/pd_controller:\n  ros__parameters:\n"
                   "    max_steps: 50\n")
    for params_file, extra in ((own, []), (shared, ["-p", "max_steps:=50"])):
        run = subprocess.run(node_command("pd_controller_node", params_file=params_file) + extra, env=ros_env,
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 2 and "error: unknown parameter(s) max_steps" in run.stderr, run.stderr
    ctrl = subprocess.Popen(node_command("pd_controller_node", params_file=shared), env=ros_env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    obs = Observer()
    try:
        client = obs.node.create_client(GetParameters, "/pd_controller/get_parameters")
        assert client.wait_for_service(timeout_sec=60), ctrl.poll()
        future = client.call_async(GetParameters.Request(names=["max_tilt"]))
        obs.wait(future.done)
        assert future.result().values[0].double_value == 0.8
        obs.wait(lambda: len(obs.states) >= 10)  # it runs
    finally:
        obs.close()
        stop(ctrl)


def test_commands_from_another_suite_on_the_domain_latch_the_estop(ros_env, standing_policy):
    """Two suites on one ROS domain (two robots in a lab, a laptop's rehearsal beside the robot): the
    controller used to apply any JointCommand, so another policy drove this robot. Now a second policy
    answering this controller's states, or a command answering a state it never published, latches the
    e-stop; once the other suite is gone and the operator re-arms, its own policy drives it again."""
    import subprocess

    from uni_o4_ros.msg import JointCommand
    from uni_o4_ros.nodes.processes import node_command
    from uni_o4_ros.nodes.qos import COMMAND

    ctrl = subprocess.Popen(node_command("pd_controller_node", []), env=ros_env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    pol = start("uni_o4_ros.nodes.policy_node", ros_env, f"policy_dir:={standing_policy}")
    obs = Observer()
    other = obs.node.create_publisher(JointCommand, "joint_command", COMMAND)  # the other suite's policy

    def answer_as_the_other_policy(n: int) -> None:
        for s in obs.states[n:]:
            cmd = JointCommand(q=[0.0] * 12, kp=[20.0] * 12, kd=[0.5] * 12)  # a folded-up pose, not standing
            cmd.header.stamp = s.header.stamp
            other.publish(cmd)

    try:
        obs.wait(lambda: obs.modes_since(0).count(1) >= 25)  # its own policy drives it
        n = len(obs.states)
        obs.wait(lambda: answer_as_the_other_policy(n) or 2 in obs.modes_since(n))
        k = len(obs.states)
        obs.wait(lambda: len(obs.states) >= k + 50)  # a second: latched, while its own policy is silent
        assert set(obs.modes_since(k)) == {2}
        assert "re-armed" in obs.estop(False)  # the other suite is gone (it sent only those answers)
        n = len(obs.states)
        obs.wait(lambda: obs.modes_since(n).count(1) >= 25)

        # Its own policy stops; alone, the test answers as that policy would, then once with a stamp
        # this controller never published (a policy answering another controller's states).
        stop(pol)
        n = len(obs.states)
        obs.wait(lambda: obs.modes_since(n).count(0) >= 40)  # damped by the watchdog, > 0.5 s of silence
        cmd = JointCommand(q=list(obs.states[-1].q), kp=[20.0] * 12, kd=[0.5] * 12)
        cmd.header.stamp = obs.states[-1].header.stamp
        n = len(obs.states)
        obs.wait(lambda: other.publish(cmd) or 1 in obs.modes_since(n))  # one sender, own states: applied
        cmd.header.stamp.sec += 1000
        n = len(obs.states)
        obs.wait(lambda: other.publish(cmd) or 2 in obs.modes_since(n))
    finally:
        obs.close()
        stop(pol, ctrl)
    log = ctrl.stdout.read()
    assert "joint commands from 2 policies: another suite shares ROS_DOMAIN_ID" in log
    assert "a joint command answering a robot state this controller never published" in log
