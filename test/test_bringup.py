"""go1_sim, pd_controller, policy, episode_recorder and dataset_logger as separate processes over DDS:
two short episodes run and the episode files hold exactly the transitions that were published;
killing the logger mid-episode leaves the finished episodes intact and readable."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest

from conftest import start_node as start
from conftest import stop_nodes as stop
from conftest import wait_until
from uni_o4_ros.robot.episodes import read_episodes


class TransitionWatcher:
    def __init__(self) -> None:
        import rclpy

        from uni_o4_ros.msg import Transition
        from uni_o4_ros.nodes.qos import TRANSITIONS

        rclpy.init()
        self.rclpy = rclpy
        self.node = rclpy.create_node("watcher")
        self.seen: list = []
        self.node.create_subscription(Transition, "transitions", self.seen.append, TRANSITIONS)

    def wait(self, cond, timeout: float = 120.0) -> None:
        wait_until(self.rclpy, self.node, cond, timeout)

    def call(self, client, request):
        """A service call's response (the recorder's start_episode / stop_episode), spinning while it comes."""
        assert client.wait_for_service(timeout_sec=60)
        fut = client.call_async(request)
        self.wait(fut.done)
        return fut.result()

    def publisher(self):
        """A stand-in recorder: publishes on `transitions` once the logger and this watcher listen."""
        from uni_o4_ros.msg import Transition
        from uni_o4_ros.nodes.qos import TRANSITIONS

        pub = self.node.create_publisher(Transition, "transitions", TRANSITIONS)
        self.wait(lambda: pub.get_subscription_count() >= 2)
        return pub

    def close(self) -> None:
        self.node.destroy_node()
        self.rclpy.shutdown()


def _two_short_episodes(ros_env, policy, out, *logger_params: str) -> list:
    """The simulated suite recording two 20-step episodes into `out`."""
    return [
        start("uni_o4_ros.nodes.dataset_logger_node", ros_env, f"directory:={out}", *logger_params),
        # No episode starts before the logger and the watcher both listen: `transitions` is volatile,
        # so a reader that matches late misses the first rows (CI once saw 29 of 40).
        start("uni_o4_ros.nodes.episode_recorder_node", ros_env, "max_steps:=20", "episodes:=2",
              "wait_for_subscribers:=2"),
        # The simulator as its own process, in lockstep with the controller over low_cmd / low_state.
        start("uni_o4_ros.nodes.go1_sim_node", ros_env),
        start("uni_o4_ros.nodes.pd_controller_node", ros_env, "backend:=go1_sim"),
        start("uni_o4_ros.nodes.policy_node", ros_env, f"policy_dir:={policy}"),
    ]


def test_two_episodes_are_recorded_exactly(ros_env, standing_policy, tmp_path):
    out = tmp_path / "episodes"
    w = TransitionWatcher()  # subscribe before anything publishes
    procs = _two_short_episodes(ros_env, standing_policy, out, f"bag_path:={tmp_path / 'bag'}")
    try:
        w.wait(lambda: sum(t.timeout for t in w.seen) >= 2)
        files = sorted(out.glob("episode_*.hdf5"))
        end = time.monotonic() + 30
        while len(files) < 2 and time.monotonic() < end:  # the logger writes right after the last row
            w.rclpy.spin_once(w.node, timeout_sec=0.1)
            files = sorted(out.glob("episode_*.hdf5"))
        assert [f.name for f in files] == ["episode_000001.hdf5", "episode_000002.hdf5"]
        ds = read_episodes(out)
        assert len(ds) == len(w.seen) == 40
        np.testing.assert_allclose(ds.observations, np.array([t.observation for t in w.seen]), rtol=0, atol=0)
        np.testing.assert_allclose(ds.rewards, np.array([t.reward for t in w.seen], np.float32))
        assert ds.timeouts.sum() == 2 and ds.timeouts[19] and ds.timeouts[39] and not ds.terminals.any()
        assert ds.observations.shape[1] == 290 and ds.actions.shape[1] == 12
        # consecutive transitions chain: s'_t == s_{t+1} inside an episode
        np.testing.assert_array_equal(ds.next_observations[:19], ds.observations[1:20])
        assert np.all(ds.rewards > 0)  # standing still still earns the yaw-tracking term
        # Every node ends on SIGTERM by itself (its shutdown path: damping, closing files), none is killed.
        killed = stop(*procs)
        assert [p.args[2] for p in killed] == []
        assert all(p.returncode == 0 for p in procs), [p.returncode for p in procs]
    finally:
        w.close()
        stop(*procs)
    # The logger's MCAP bag (closed on SIGTERM) holds the same episodes, as `uni-o4 bag2h5` reads them.
    from uni_o4_ros.data.bag import bag_to_dataset

    bag = bag_to_dataset(tmp_path / "bag")
    np.testing.assert_array_equal(bag.observations, ds.observations)
    np.testing.assert_array_equal(bag.timeouts, ds.timeouts)


def test_every_simulated_episode_starts_from_its_reset_under_its_own_command(ros_env, standing_policy, tmp_path):
    """With the simulator reset between episodes, an episode's first observation is the state right
    after its reset (fresh history, standing pose at rest) and already carries the episode's command;
    before, the first rows still showed the previous episode's last state and command."""
    from uni_o4_ros.robot.go1 import DEFAULT_Q
    from uni_o4_ros.robot.observation import OBS_DIM, is_fresh, newest_command

    out = tmp_path / "episodes"
    w = TransitionWatcher()
    procs = [
        start("uni_o4_ros.nodes.dataset_logger_node", ros_env, f"directory:={out}"),
        start("uni_o4_ros.nodes.episode_recorder_node", ros_env, "max_steps:=15", "episodes:=3",
              "command_vx_schedule:=[0.3,0.6]", "wait_for_subscribers:=2", "wait_for_reset:=true"),
        start("uni_o4_ros.nodes.pd_controller_node", ros_env, "reset_on_episode_end:=true"),
        start("uni_o4_ros.nodes.policy_node", ros_env, f"policy_dir:={standing_policy}"),
    ]
    try:
        w.wait(lambda: sum(t.timeout for t in w.seen) >= 3)
        end = time.monotonic() + 30
        while len(list(out.glob("episode_*.hdf5"))) < 3 and time.monotonic() < end:
            w.rclpy.spin_once(w.node, timeout_sec=0.1)
    finally:
        w.close()
        stop(*procs)
    for eid, vx in ((1, 0.3), (2, 0.6), (3, 0.3)):
        rows = [t for t in w.seen if t.episode_id == eid]
        assert len(rows) == 15 and rows[0].step == 0
        obs = np.array([t.observation for t in rows], np.float32)
        assert is_fresh(obs[0]) and not any(is_fresh(o) for o in obs[1:])
        newest = obs[0].reshape(-1, OBS_DIM)[-1]
        # upright and near the standing pose: the controller damps from the reset until the
        # policy's first command arrives, and the legs sag a little in that time (up to ~0.25 rad
        # seen on a loaded machine); before the fix, a fallen robot could start an episode
        np.testing.assert_allclose(newest[:3], [0, 0, -1], atol=0.05)
        np.testing.assert_allclose(newest[18:30] + DEFAULT_Q, DEFAULT_Q, atol=0.3)
        for o in obs:
            np.testing.assert_allclose(newest_command(o), (vx, 0, 0), atol=1e-5)
    assert len(read_episodes(out)) == 45


def test_killing_the_logger_mid_episode_keeps_finished_episodes_readable(ros_env, standing_policy, tmp_path):
    out = tmp_path / "episodes"
    w = TransitionWatcher()
    logger = start("uni_o4_ros.nodes.dataset_logger_node", ros_env, f"directory:={out}")
    procs = [
        start("uni_o4_ros.nodes.episode_recorder_node", ros_env, "max_steps:=15", "wait_for_subscribers:=2"),
        start("uni_o4_ros.nodes.pd_controller_node", ros_env),
        start("uni_o4_ros.nodes.policy_node", ros_env, f"policy_dir:={standing_policy}"),
    ]
    try:
        w.wait(lambda: (out / "episode_000001.hdf5").exists() and any(t.episode_id == 2 for t in w.seen))
        logger.kill()  # SIGKILL in the middle of episode 2
        logger.wait(timeout=10)
        w.wait(lambda: sum(t.timeout for t in w.seen) >= 2)  # the control loop keeps running
        ds = read_episodes(out)
        assert len(ds) == 15 and ds.timeouts[-1]
        first = [t for t in w.seen if t.episode_id == 1]
        np.testing.assert_array_equal(ds.actions, np.array([t.action for t in first], np.float32))
        assert not (out / "episode_000002.hdf5").exists()
    finally:
        w.close()
        stop(logger, *procs)


def test_uni_o4_bringup_runs_the_suite_from_the_config_file(ros_env, standing_policy, tmp_path):
    import subprocess
    import sys

    from conftest import ROOT

    out = tmp_path / "rec"
    params = tmp_path / "short.yaml"
    params.write_text((ROOT / "config" / "sim.yaml").read_text().replace("max_steps: 1000", "max_steps: 10"))
    # Twice into the same folder (as with the default --out): the second session records its own 2 episodes.
    # Before, it counted the first session's files and stopped before recording any.
    for session in (1, 2):
        proc = subprocess.run([sys.executable, "-m", "uni_o4_ros.cli", "bringup", "--sim", "--policy",
                               str(standing_policy), "--out", str(out), "--episodes", "2", "--params", str(params)],
                              env=ros_env, cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "2 episode(s) recorded" in proc.stdout
        assert len(list(out.glob("episode_*.hdf5"))) == 2 * session
    ds = read_episodes(out)
    assert len(ds) == 40 and ds.timeouts.sum() == 4
    # online -> offline: Uni-O4 on the recorded episodes, ensemble initialised from the deployed policy
    import json

    from uni_o4_ros.cli import main
    from uni_o4_ros.learning.offline import load_policy

    run = tmp_path / "offline"
    # No --env: a recording folder is robot data (before, it was learned under Hopper's termination rule)
    assert main(["offline", "--dataset", str(out), "--run-dir", str(run), "--budget", "tiny",
                 "--init-policy", str(standing_policy), "--no-progress", "--set", "ope.n_start_states=8",
                 "--set", "value.steps=100", "--set", "dynamics.max_steps=100", "--set", "improvement.steps=100"]) == 0
    policy, norm, meta, _ = load_policy(run / "final")
    assert policy.spec.obs_dim == 290 and policy.spec.act_dim == 12 and np.isfinite(meta["am_q"])
    assert json.loads((run / "config.json").read_text())["env"] == "go1"


def test_bringup_mistakes_end_in_one_line_before_any_node_starts(standing_policy, tmp_path, capsys):
    """Before, a parameters file with a typo or a policy for another task started the nodes, each of which
    ended in its own traceback (71 lines from four nodes); stand-in settings with --sim and a --learn that
    names a file were ignored, exit 0."""
    from uni_o4_ros.cli import main
    from uni_o4_ros.learning.normalizer import StateNormalizer
    from uni_o4_ros.learning.offline import save_policy
    from uni_o4_ros.learning.policy import make_policy

    (tmp_path / "typo.yaml").write_text("pd_controller:\n  ros__parameters:\n    max_tilt: [1.0\n")
    (tmp_path / "flat.yaml").write_text("max_tilt: 1.0\n")  # no node sections
    (tmp_path / "afile").write_text("")
    save_policy(tmp_path / "hopper", "policy", make_policy(11, 3, hidden=(16,)), StateNormalizer([0] * 11, [1] * 11))
    base = ["bringup", "--sim", "--policy", str(standing_policy), "--out", str(tmp_path / "rec")]
    for extra, message in (
            (["--params", str(tmp_path / "typo.yaml")], "typo.yaml is not valid YAML (expected ',' or ']', but "
                                                        "got '<stream end>' at line 4, column 1)"),
            (["--params", str(tmp_path / "flat.yaml")], "flat.yaml must map node names to ros__parameters"),
            (["--policy", str(tmp_path / "hopper")], "expects obs/act dims 11/3; the Go1's are 290/12"),
            (["--terrain", "mattress", "--battery", "50"], "--terrain, --battery: settings of the stand-in Go1"),
            (["--learn", str(tmp_path / "afile")], "afile is a file; it names a folder")):
        assert main(base + extra) == 2, extra
        out, err = capsys.readouterr()
        assert message in err and len(err.strip().splitlines()) == 1 and "started" not in out, err
    assert not (tmp_path / "rec").exists()


def test_uni_o4_bringup_standin_runs_the_robot_graph_against_a_stand_in_go1_and_t265(ros_env, tmp_path):
    """`--standin`: config/robot.yaml's graph (Unitree SDK backend, T265 odometry node) records from the
    stand-in Go1; the state timeout is widened for a loaded CI machine, nothing else changes. The controller
    starts latched (start_latched) and the stand-in operator arms it with the remote's L2+A, as a person would."""
    import subprocess
    import sys

    from conftest import ROOT
    from uni_o4_ros.field.pipeline import PRETRAINED

    out = tmp_path / "rec"
    params = tmp_path / "short_robot.yaml"
    text = (ROOT / "config" / "robot.yaml").read_text()
    params.write_text(text.replace("max_steps: 1000", "max_steps: 10")
                      .replace("state_timeout: 0.1", "state_timeout: 0.5"))
    proc = subprocess.run([sys.executable, "-m", "uni_o4_ros.cli", "bringup", "--standin", "--policy", str(PRETRAINED),
                           "--out", str(out), "--episodes", "2", "--params", str(params)],
                          env=ros_env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "started the stand-in Go1 with a T265" in proc.stdout and "started odometry_node" in proc.stdout
    assert "2 episode(s) recorded" in proc.stdout
    latched = proc.stderr.index("e-stop engaged: damping until re-armed (start_latched)")
    assert proc.stderr.index("re-armed: active on the next fresh command (remote: A+L2)", latched) > latched
    ds = read_episodes(out)
    assert len(ds) == 20 and ds.timeouts.sum() == 2 and not ds.terminals.any()

    # A node that refuses its configuration ends the bringup with a non-zero exit, naming it.
    params.write_text(text.replace("remote_estop: L2+B", "remote_estop: L2+Q"))
    proc = subprocess.run([sys.executable, "-m", "uni_o4_ros.cli", "bringup", "--standin", "--policy", str(PRETRAINED),
                           "--out", str(tmp_path / "none"), "--params", str(params)],
                          env=ros_env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "node(s) exited: uni_o4_ros.nodes.pd_controller_node" in proc.stderr
    assert "remote_estop" in proc.stderr


def test_bringup_standin_runs_on_through_falls_with_its_stand_in_operator(ros_env, tmp_path):
    """A rehearsal nobody watches: with max_tilt 0.03 rad every stumble is a fall, which latches damping.
    The stand-in operator stands the robot up and re-arms it with L2+A on the remote (robot.yaml's
    remote_rearm, through the SDK binary and the controller), so the episodes go on: each ends in its fall,
    each later one starts after a re-arm, from a fresh observation history."""
    import subprocess
    import sys

    from conftest import ROOT
    from uni_o4_ros.field.pipeline import PRETRAINED
    from uni_o4_ros.robot.observation import OBS_DIM

    out = tmp_path / "rec"
    params = tmp_path / "robot_falls.yaml"
    params.write_text((ROOT / "config" / "robot.yaml").read_text().replace("max_tilt: 1.0 ", "max_tilt: 0.03")
                      .replace("state_timeout: 0.1", "state_timeout: 0.5"))  # the stand-in shares a loaded CI machine
    proc = subprocess.run([sys.executable, "-m", "uni_o4_ros.cli", "bringup", "--standin", "--policy", str(PRETRAINED),
                           "--out", str(out), "--episodes", "3", "--params", str(params), "--operator-delay", "0.2"],
                          env=ros_env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "re-arms with L2+A on the remote" in proc.stdout
    assert proc.stderr.count("re-armed: active on the next fresh command (remote: A+L2)") >= 2
    ds = read_episodes(out)
    episodes = [ds.observations[s] for s in ds.episode_slices()]
    assert len(episodes) == 3 and ds.terminals.sum() == 3 and not ds.timeouts.any()  # each ended by its fall
    # Each after the first began a fresh history at its re-arm (its oldest frame still the zero padding):
    # the policy did not act on frames of the robot lying on its side.
    assert all(not e[0][:OBS_DIM].any() for e in episodes[1:])


def test_bringup_standin_starts_the_controller_once_the_stand_in_go1_listens(ros_env, tmp_path):
    """The controller latches its e-stop when no LowState comes within connect_timeout (robot.yaml: 2 s), for a
    person to re-arm. Started beside the stand-in, it could ask before MuJoCo had loaded: on a loaded machine
    the rehearsal then stood latched, recorded nothing and never ended (seen twice in test runs, with two
    rehearsals on 2 cores). The nodes now start once the stand-in listens (on an idle machine the old order
    mostly got away with it, so the order is asserted), and a 0.3 s connect_timeout is met."""
    import subprocess
    import sys

    from conftest import ROOT
    from uni_o4_ros.field.pipeline import PRETRAINED

    out = tmp_path / "rec"
    params = tmp_path / "robot_quick.yaml"
    params.write_text((ROOT / "config" / "robot.yaml").read_text()
                      .replace("connect_timeout: 2.0", "connect_timeout: 0.3")
                      .replace("max_steps: 1000", "max_steps: 50").replace("state_timeout: 0.1", "state_timeout: 0.5"))
    proc = subprocess.run([sys.executable, "-m", "uni_o4_ros.cli", "bringup", "--standin", "--policy", str(PRETRAINED),
                           "--out", str(out), "--episodes", "1", "--params", str(params)],
                          env=ros_env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "no LowState" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stdout.index("stand-in Go1 listening on") < proc.stdout.index("started pd_controller_node")
    assert len(read_episodes(out)) == 50


def test_bringup_standin_rehearses_the_low_battery_stop(ros_env, tmp_path):
    """robot.yaml's min_battery_soc (15 %) against a stand-in whose battery drains from 19 % at 30 % a minute:
    a warning, then the e-stop mid-episode; the episode is written at once as a truncation (not a fall
    recorded as the policy's), and none starts while the battery is low. Through the SDK binary."""
    import signal
    import subprocess
    import sys

    from conftest import ROOT, poll_process_table
    from uni_o4_ros.field.pipeline import PRETRAINED

    out, log = tmp_path / "rec", tmp_path / "bringup.log"
    params = tmp_path / "robot.yaml"  # a loaded CI machine shares the stand-in's time
    params.write_text((ROOT / "config" / "robot.yaml").read_text().replace("state_timeout: 0.1", "state_timeout: 0.5"))
    with log.open("w") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "uni_o4_ros.cli", "bringup", "--standin", "--policy",
                                 str(PRETRAINED), "--out", str(out), "--params", str(params), "--battery", "19",
                                 "--battery-drain", "30"], env=ros_env, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT)
    try:
        assert poll_process_table(lambda: "battery at 14% (min_battery_soc 15%" in log.read_text()
                                  and (out / "episode_000001.hdf5").exists(), 120), log.read_text()[-3000:]
    finally:
        proc.send_signal(signal.SIGTERM)  # bringup stops its nodes, each through its own shutdown
        code = proc.wait(timeout=60)
    assert code == 128 + signal.SIGTERM
    text = log.read_text()
    assert "battery at 19%: the e-stop engages below 15%" in text  # the warning came first
    ds = read_episodes(out)
    assert len(list(out.glob("episode_*.hdf5"))) == 1  # none started while the battery was low
    assert 0 < len(ds) < 1000 and ds.timeouts[-1] and not ds.terminals.any()  # cut short, as a truncation


def test_bringup_standin_learn_fine_tunes_the_running_robot_with_robot_yaml_timings(ros_env, tmp_path):
    """Online fine-tuning as on the Go1 (robot.launch.py deterministic:=false beside learning.launch.py),
    under config/robot.yaml's timing rules: 0.1 s watchdog, 0.1 s max_damped, 1 s silence_latch. Every
    hot-swap lands between ticks: no episode is cut short by damping, the recorded steps go on with each
    new version, and every one of the learner's batches was sampled, so none was left unused."""
    import json
    import subprocess
    import sys

    from conftest import ROOT
    from uni_o4_ros.field.pipeline import PRETRAINED

    out, learner = tmp_path / "rec", tmp_path / "learner"
    params = tmp_path / "robot_learn.yaml"
    params.write_text((ROOT / "config" / "robot.yaml").read_text().replace("max_steps: 1000", "max_steps: 150")
                      .replace("state_timeout: 0.1", "state_timeout: 0.5")  # the stand-in shares a loaded CI machine
                      + "learner:\n  ros__parameters:\n    rollout_steps: 150\n    epochs: 2\n")
    proc = subprocess.run([sys.executable, "-m", "uni_o4_ros.cli", "bringup", "--standin", "--policy", str(PRETRAINED),
                           "--out", str(out), "--episodes", "4", "--params", str(params), "--learn", str(learner)],
                          env=ros_env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "started learner_node" in proc.stdout and "the learner published policy version 1" in proc.stdout
    ds = read_episodes(out)
    assert len(ds) == 600 and ds.timeouts.sum() == 4 and not ds.terminals.any()  # 4 full episodes, no cut
    versions = ds.infos["policy_version"]
    assert versions[0] == 0 and versions.max() >= 2 and np.all(np.diff(versions) >= 0)  # swapped in, in order
    timeline = [json.loads(line) for line in (learner / "timeline.jsonl").read_text().splitlines()]
    assert [r["version"] for r in timeline][:2] == [1, 2]
    from uni_o4_ros.learning.offline import load_policy

    assert load_policy(learner / "policy")[2]["version"] == timeline[-1]["version"]  # the newest, deployable
    assert "not used" not in proc.stderr  # the learner's exploration check: every batch was sampled
    assert "accepted" in proc.stderr and "refused" not in proc.stderr


@pytest.mark.parametrize("signum", ["SIGTERM", "SIGHUP", "SIGKILL"])
def test_a_killed_or_hung_up_bringup_stops_its_nodes(ros_env, standing_policy, tmp_path, signum):
    """`kill` of `uni-o4 bringup`, or its terminal closing: before, it died at once and left its nodes
    running on their own, the simulated robot walking and recording with nothing to stop it. SIGKILL (or
    the OOM killer) leaves bringup no say: its nodes asked the kernel to SIGTERM them when it dies."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from conftest import ROOT, poll_process_table, process_table

    sig = getattr(signal, signum)
    params = tmp_path / "short.yaml"
    params.write_text((ROOT / "config" / "sim.yaml").read_text().replace("max_steps: 1000", "max_steps: 10"))
    log = (tmp_path / "bringup.log").open("w")
    child = subprocess.Popen([sys.executable, "-m", "uni_o4_ros.cli", "bringup", "--sim", "--policy",
                              str(standing_policy), "--out", str(tmp_path / "rec"), "--params", str(params)],
                             env=ros_env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)

    def nodes() -> list[int]:
        return [pid for pid, ppid, _ in process_table() if ppid == child.pid]

    started = []
    try:
        assert poll_process_table(lambda: len(nodes()) == 4, 60), "the nodes never started"
        started = nodes()
        # They run: episodes are being recorded.
        assert poll_process_table(lambda: any((tmp_path / "rec").glob("episode_*.hdf5")), 120)
        child.send_signal(sig)
        code = child.wait(timeout=60)

        def gone(pid: int) -> bool:  # exited; once bringup is killed its orphans' zombies are not its to reap
            try:
                return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
            except OSError:
                return True

        assert poll_process_table(lambda: all(gone(p) for p in started), 30), \
            f"nodes left running on their own: {[c for p, _, c in process_table() if p in started and not gone(p)]}"
        assert code == (-sig if sig == signal.SIGKILL else 128 + sig)  # ended through its own exit path
        assert "was killed" not in (tmp_path / "bringup.log").read_text()  # each node stopped by itself
    finally:
        child.kill()
        log.close()
        for pid in started:
            if os.path.exists(f"/proc/{pid}"):
                os.kill(pid, signal.SIGKILL)


def test_bringup_episodes_names_an_episode_the_logger_never_got_instead_of_waiting_for_it(ros_env, standing_policy,
                                                                                          tmp_path):
    """`uni-o4 bringup --episodes 3` with its logger stopped (SIGSTOP, as a starved or frozen process) after
    the first file: the recorder ends its 3 episodes, and bringup used to wait for ever for files that would
    never come. It now names them once the logger's grace has passed, and exits non-zero."""
    import os
    import signal
    import subprocess
    import sys

    from conftest import ROOT, poll_process_table, process_table
    from uni_o4_ros.data import read_metadata
    grace = 5.0  # any grace shows it: the logger never wakes (the default, 30 s, is the product's)
    out, params = tmp_path / "rec", tmp_path / "short.yaml"
    params.write_text((ROOT / "config" / "sim.yaml").read_text().replace("max_steps: 1000", "max_steps: 50"))
    child = subprocess.Popen([sys.executable, "-m", "uni_o4_ros.cli", "bringup", "--sim", "--policy",
                              str(standing_policy), "--out", str(out), "--episodes", "3", "--params", str(params),
                              "--logger-grace", str(grace)],
                             env=ros_env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    logger = []
    try:
        assert poll_process_table(lambda: (out / "episode_000001.hdf5").exists(), 120), "episode 1 never written"
        logger = [pid for pid, ppid, cmd in process_table() if ppid == child.pid and b"dataset_logger_node" in cmd]
        os.kill(logger[0], signal.SIGSTOP)
        stopped = time.monotonic()
        text, _ = child.communicate(timeout=grace + 60)
    finally:
        child.kill()
        for pid in logger:
            if os.path.exists(f"/proc/{pid}"):
                os.kill(pid, signal.SIGKILL)
    assert child.returncode == 1, text[-3000:]
    assert time.monotonic() - stopped >= grace  # the logger had its chance to catch up
    written = {int(read_metadata(f)["episode_id"]) for f in out.glob("episode_*.hdf5")}
    lost = sorted({1, 2, 3} - written)
    assert 1 in written and lost, text[-3000:]
    assert f"episode(s) {', '.join(map(str, lost))} never reached the dataset_logger" in text, text[-3000:]


def test_operator_starts_and_stops_an_episode_through_the_services(ros_env, standing_policy, tmp_path):
    """auto_start off: nothing is recorded until start_episode; stop_episode ends it as a timeout
    at the next step and the logger writes it; a second start while one runs is refused."""
    from geometry_msgs.msg import Twist

    from uni_o4_ros.nodes.qos import COMMAND
    from uni_o4_ros.srv import StartEpisode, StopEpisode

    out = tmp_path / "episodes"
    w = TransitionWatcher()
    cmds: list = []
    w.node.create_subscription(Twist, "cmd_vel", cmds.append, COMMAND)
    start_cli = w.node.create_client(StartEpisode, "start_episode")
    stop_cli = w.node.create_client(StopEpisode, "stop_episode")
    procs = [
        start("uni_o4_ros.nodes.dataset_logger_node", ros_env, f"directory:={out}"),
        start("uni_o4_ros.nodes.episode_recorder_node", ros_env, "auto_start:=false"),
        start("uni_o4_ros.nodes.pd_controller_node", ros_env),
        start("uni_o4_ros.nodes.policy_node", ros_env, f"policy_dir:={standing_policy}"),
    ]

    try:
        res = w.call(stop_cli, StopEpisode.Request(reason="nothing yet"))
        assert not res.accepted and "no episode" in res.message
        assert w.seen == []  # no episode, no transitions
        res = w.call(start_cli, StartEpisode.Request(command_velocity=[0.3, 0.0, 0.1]))
        assert res.accepted and res.episode_id == 1
        w.wait(lambda: len(w.seen) >= 15 and cmds)
        assert (cmds[-1].linear.x, cmds[-1].angular.z) == pytest.approx((0.3, 0.1))
        again = w.call(start_cli, StartEpisode.Request(command_velocity=[0.5, 0.0, 0.0]))
        assert not again.accepted and "still running" in again.message
        assert w.call(stop_cli, StopEpisode.Request(reason="operator")).accepted
        w.wait(lambda: any(t.timeout for t in w.seen))
        end = time.monotonic() + 30
        while not (out / "episode_000001.hdf5").exists() and time.monotonic() < end:
            w.rclpy.spin_once(w.node, timeout_sec=0.1)
        ds = read_episodes(out)
        assert len(ds) == len(w.seen) and ds.timeouts[-1] and ds.timeouts.sum() == 1 and not ds.terminals.any()
    finally:
        w.close()
        stop(*procs)


def test_stop_episode_pauses_auto_start_until_the_operator_starts_one(ros_env, standing_policy):
    """With auto_start, an operator's stop_episode stops the robot: the episode ends, no other starts by
    itself and the recorder stops sending its command, until start_episode, after whose episode auto_start
    goes on. Before, the next episode began at once and drove the robot on."""
    from geometry_msgs.msg import Twist

    from uni_o4_ros.msg import EpisodeEvent, Transition
    from uni_o4_ros.nodes.qos import COMMAND, EVENTS, TRANSITIONS
    from uni_o4_ros.srv import StartEpisode, StopEpisode

    w = TransitionWatcher()
    cmds: list = []
    events: list = []
    steps: list = []
    w.node.create_subscription(Twist, "cmd_vel", cmds.append, COMMAND)
    w.node.create_subscription(EpisodeEvent, "recorder_events", events.append, EVENTS)
    w.node.create_subscription(Transition, "policy_step", steps.append, TRANSITIONS)
    start_cli = w.node.create_client(StartEpisode, "start_episode")
    stop_cli = w.node.create_client(StopEpisode, "stop_episode")
    procs = [
        start("uni_o4_ros.nodes.episode_recorder_node", ros_env, "max_steps:=40", "wait_for_subscribers:=1",
              "command_velocity:=[0.4, 0.0, 0.0]"),
        start("uni_o4_ros.nodes.pd_controller_node", ros_env),
        start("uni_o4_ros.nodes.policy_node", ros_env, f"policy_dir:={standing_policy}"),
    ]

    def started(eid: int) -> bool:
        return any(e.event == EpisodeEvent.STARTED and e.episode_id == eid for e in events)

    try:
        w.wait(lambda: sum(t.episode_id == 1 for t in w.seen) >= 10)
        stopped = w.call(stop_cli, StopEpisode.Request(reason="operator"))
        assert stopped.accepted, stopped.message
        w.wait(lambda: any(e.event == EpisodeEvent.ENDED and e.episode_id == 1 for e in events))
        ep1 = [t for t in w.seen if t.episode_id == 1]
        assert ep1[-1].timeout and len(ep1) < 40  # ended by the stop, not by max_steps
        # The robot goes on stepping (standing): 150 policy steps, three episodes' worth at max_steps 40.
        w.wait(lambda: len(steps) >= 20)  # the stop's own step and the sends before it have arrived
        sent, seen_steps = len(cmds), len(steps)
        w.wait(lambda: len(steps) >= seen_steps + 150)
        assert not started(2) and all(t.episode_id == 1 for t in w.seen)
        assert len(cmds) == sent  # nothing drives the robot: the policy's command_timeout lapses to standing
        assert "auto_start is paused until start_episode" in stopped.message, stopped.message
        res = w.call(start_cli, StartEpisode.Request(command_velocity=[0.3, 0.0, 0.0]))
        assert res.accepted and res.episode_id == 2, res.message
        w.wait(lambda: started(3))  # after episode 2's 40 steps, auto_start again
        ep2 = [t for t in w.seen if t.episode_id == 2]
        assert len(ep2) == 40 and ep2[-1].timeout
        assert cmds[-1].linear.x == pytest.approx(0.4)  # episode 3: the configured command again
    finally:
        w.close()
        stop(*procs)


def test_stop_processes_kills_and_reaps_a_process_that_ignores_sigterm_and_names_it():
    import subprocess
    import sys

    from uni_o4_ros.nodes.processes import stop_processes

    code = ("import signal, sys, time\n"
            "if sys.argv[1] == 'stubborn': signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "print('ready', flush=True)\n"
            "time.sleep(120)\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, kind], stdout=subprocess.PIPE, text=True)
             for kind in ("stubborn", "polite")]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "ready"  # the handler is installed before this line
        killed = stop_processes(*procs, timeout=1.0)
        assert killed == [procs[0]]
        assert procs[0].returncode == -9 and procs[1].returncode == -15  # both reaped
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
            p.stdout.close()


def _transition(episode: int, step: int, *, reward: float = 1.0, terminal: bool = False, timeout: bool = False,
                next_obs_value: float = 0.0, run: tuple[str, int] = ("", 0), dim: int = 4):
    from uni_o4_ros.msg import Transition

    return Transition(episode_id=episode, step=step, observation=[float(step)] * dim,
                      next_observation=[next_obs_value or float(step + 1)] * dim, action=[0.1, -0.1], log_prob=-1.0,
                      reward=reward, terminal=terminal, timeout=timeout, policy_version=0,
                      recorder_session=run[0], recorder_started_ns=run[1])


@contextmanager
def _logger_fed(ros_env, tmp_path, msgs, until: str):
    """A dataset_logger process (episode files in tmp_path/episodes, an MCAP bag at tmp_path/bag) fed `msgs`
    on `transitions` as the recorder would; inside the block the episode file `until` exists or the logger
    died. After it the logger is stopped with SIGTERM if it still runs (the block may end it otherwise)."""
    out = tmp_path / "episodes"
    logger = start("uni_o4_ros.nodes.dataset_logger_node", ros_env, f"directory:={out}",
                   f"bag_path:={tmp_path / 'bag'}")
    w = TransitionWatcher()
    try:
        pub = w.publisher()
        for m in msgs:
            pub.publish(m)
        w.wait(lambda: (out / until).exists() or logger.poll() is not None, timeout=60)
        yield logger, out
    finally:
        w.close()
        stop(logger)


def test_a_transition_with_nan_costs_only_itself_not_the_episode_nor_the_logger(ros_env, tmp_path):
    """The logger behind a stand-in recorder (the test publishes on `transitions`). Before, one NaN
    reward failed the episode file's validation inside the logger's callback: the episode was lost
    and the logger process died, so nothing after it was recorded either."""
    from uni_o4_ros.data.bag import bag_to_dataset

    nan = float("nan")
    sent = [_transition(1, 0), _transition(1, 1), _transition(1, 2, reward=nan), _transition(1, 3),
            _transition(1, 4, timeout=True),
            _transition(2, 0), _transition(2, 1), _transition(2, 2, terminal=True, next_obs_value=float("inf")),
            _transition(3, 0, reward=nan, timeout=True),  # nothing usable: no file
            _transition(4, 0), _transition(4, 1, timeout=True)]
    with _logger_fed(ros_env, tmp_path, sent, until="episode_000004.hdf5") as (logger, out):
        assert logger.poll() is None, "the logger died on a NaN"
        assert sorted(f.name for f in out.glob("episode_*.hdf5")) == [
            "episode_000001.hdf5", "episode_000002.hdf5", "episode_000004.hdf5"]
        ds = read_episodes(out)
        assert len(ds) == 4 + 2 + 2 and np.isfinite(ds.rewards).all()
        np.testing.assert_array_equal(ds.infos["step"], [0, 1, 3, 4, 0, 1, 0, 1])
        # the left-out terminal row ends episode 2 one row earlier, as a truncation (its s' is not terminal)
        assert ds.timeouts.tolist() == [False, False, False, True, False, True, False, True]
        assert not ds.terminals.any()
    assert logger.returncode == 0  # it ended through its own shutdown on SIGTERM
    bag = bag_to_dataset(tmp_path / "bag")  # the raw bag keeps every message; its conversion leaves out the same
    np.testing.assert_array_equal(bag.observations, ds.observations)
    assert bag.metadata["left_out_non_finite"] == 3


def test_a_transition_of_other_dimensions_costs_only_itself_not_the_episode_nor_the_logger(ros_env, tmp_path):
    """Seen: one Transition with a 3-value observation in an episode of 4-value ones (another publisher on the
    domain) failed the episode's stacking in the logger's callback: the episode was lost and the logger died.
    Now that row is left out as it arrives, with a warning naming its episode and step, and counted."""
    from uni_o4_ros.data.bag import bag_to_dataset

    odd = _transition(1, 2)  # after the recorder's own step 2: it replaced that one, as the recorder's replays do
    odd.observation = [9.0] * 3
    sent = [_transition(1, 0), _transition(1, 1), _transition(1, 2), odd, _transition(1, 3, timeout=True),
            _transition(2, 0), _transition(2, 1, timeout=True)]
    with _logger_fed(ros_env, tmp_path, sent, until="episode_000002.hdf5") as (logger, out):
        assert logger.poll() is None, "the logger died on a transition of other dimensions"
        ds = read_episodes(out)
        np.testing.assert_array_equal(ds.infos["step"], [0, 1, 2, 3, 0, 1])
        np.testing.assert_array_equal(ds.observations[:4, 0], [0, 1, 2, 3])
        assert ds.metadata["left_out_malformed"] == 1
    assert logger.returncode == 0
    log = logger.stderr.read()
    assert ("episode 1 step 2: a transition of other dimensions (observation/next_observation/action "
            "lengths 3/4/2)") in log, log[-2000:]
    assert "without 1 transition(s) of other dimensions than most of its rows" in log, log[-2000:]
    bag = bag_to_dataset(tmp_path / "bag")  # every message as received: its conversion leaves out the same one
    np.testing.assert_array_equal(bag.observations, ds.observations)
    assert bag.metadata["left_out_malformed"] == 1


def test_the_logger_keeps_a_restarted_recorders_episodes_apart_and_leaves_out_an_old_bag_played_back(ros_env,
                                                                                                     tmp_path):
    """Two accidents of a field day, over DDS. `ros2 bag play` of Monday's bag beside the robot: before, its
    transitions cut today's episode into pieces (each said to have lost its end) and were written in with them.
    The recorder restarted during episode 2: before, its new episode 1 was taken for today's episode 1."""
    from uni_o4_ros.data import read_hdf5
    from uni_o4_ros.data.bag import bag_to_dataset

    today = ("1" * 32, 1_800_000_000 * 10**9)  # (recorder_session, recorder_started_ns)
    monday, restarted = ("2" * 32, today[1] - 3 * 86_400 * 10**9), ("3" * 32, today[1] + 3_600 * 10**9)
    sent = [_transition(1, 0, run=today), _transition(1, 1, run=today),
            _transition(1, 0, reward=7.0, run=monday), _transition(1, 1, reward=7.0, timeout=True, run=monday),
            _transition(1, 2, timeout=True, run=today), _transition(2, 0, run=today), _transition(2, 1, run=today),
            _transition(1, 0, reward=3.0, run=restarted), _transition(1, 1, reward=3.0, timeout=True, run=restarted)]
    with _logger_fed(ros_env, tmp_path, sent, until="episode_000003.hdf5") as (logger, out):
        assert logger.poll() is None
    assert logger.returncode == 0
    files = sorted(out.glob("episode_*.hdf5"))
    assert [f.name for f in files] == ["episode_000001.hdf5", "episode_000002.hdf5", "episode_000003.hdf5"]
    first, cut, new = (read_hdf5(f) for f in files)
    assert first.infos["step"].tolist() == [0, 1, 2] and first.rewards.tolist() == [1, 1, 1]  # whole, Monday's out
    assert cut.infos["step"].tolist() == [0, 1] and cut.metadata["end_missing"]
    assert new.infos["step"].tolist() == [0, 1] and new.rewards.tolist() == [3, 3]
    assert [f.metadata["recorder_session"] for f in (first, cut, new)] == [today[0], today[0], restarted[0]]
    log = logger.stderr.read()
    said = ("left out transitions of recorder run 22222222... (started 2027-01-12 08:00:00 UTC): it started before the "
            "run being recorded (11111111..., started 2027-01-15 08:00:00 UTC)")
    assert log.count(said) == 1, log[-3000:]
    assert "never reached the logger" not in log, log[-3000:]  # nothing of today's was lost
    assert ("episode 2 of recorder run 11111111...: cut off by another run of the recorder (33333333..., "
            "restarted?); written with what arrived, ending as a truncation") in log, log[-3000:]
    bag = bag_to_dataset(tmp_path / "bag")  # the bag keeps every message; its conversion leaves out the same
    np.testing.assert_array_equal(bag.rewards, np.concatenate([first.rewards, cut.rewards, new.rewards]))
    assert bag.metadata["left_out_earlier_run"] == 2 and bag.metadata["recorder_runs"] == 2


def test_transitions_that_never_reach_the_logger_are_named_not_silently_absent(ros_env, tmp_path):
    """What a logger stopped for 30 s receives (measured with SIGSTOP on the stand-in graph,
    benchmarks/freeze_peer.py: DDS dropped it as a reader and every transition of those 30 s was gone):
    episode 1 whole, the first steps of episode 2 and nothing after them, nothing of episode 3, episode 4
    from its step 547 on. Before, episode 2's rows stayed in memory unwritten, episode 4 was written as if
    whole, and nothing was said. Now every loss is an error in the log, and each file says what it lacks."""
    from uni_o4_ros.data import read_hdf5
    from uni_o4_ros.data.bag import bag_to_dataset

    sent = [_transition(1, 0), _transition(1, 1, timeout=True), _transition(2, 0), _transition(2, 1),
            _transition(4, 547), _transition(4, 548), _transition(4, 549, timeout=True)]
    with _logger_fed(ros_env, tmp_path, sent, until="episode_000004.hdf5") as (logger, out):
        pass
    assert logger.returncode == 0
    log = logger.stderr.read()
    assert "episode 2: its last transition never reached the logger; written with what did" in log, log[-2000:]
    assert "episode(s) 3: no transition ever reached the logger, no file" in log, log[-2000:]
    assert "episode 4: 547 transition(s) never reached the logger (steps 0-546)" in log, log[-2000:]
    assert sorted(f.name for f in out.iterdir()) == ["episode_000001.hdf5", "episode_000002.hdf5",
                                                      "episode_000004.hdf5"]
    cut = read_hdf5(out / "episode_000002.hdf5")
    assert cut.infos["step"].tolist() == [0, 1] and cut.timeouts[-1] and cut.metadata["end_missing"]
    ds = read_hdf5(out / "episode_000004.hdf5")
    assert ds.metadata["missing_steps"] == 547 and ds.metadata["missing_ranges"] == "0-546"
    assert ds.infos["step"].tolist() == [547, 548, 549]
    assert "missing_steps" not in read_hdf5(out / "episode_000001.hdf5").metadata
    assert bag_to_dataset(tmp_path / "bag").metadata["missing_steps"] == 547  # uni-o4 bag2h5 counts them too


def test_a_hangup_ends_the_logger_through_its_shutdown_so_its_bag_is_complete(ros_env, tmp_path):
    """SIGHUP (the terminal the nodes ran in closed) to a logger keeping an MCAP bag. Before, it ended the
    process on the spot: the bag was never closed, and `uni-o4 bag2h5` could not read what it held."""
    import signal

    from uni_o4_ros.data.bag import bag_to_dataset

    sent = [_transition(1, 0), _transition(1, 1), _transition(1, 2, timeout=True)]
    with _logger_fed(ros_env, tmp_path, sent, until="episode_000001.hdf5") as (logger, out):
        logger.send_signal(signal.SIGHUP)
        assert logger.wait(timeout=30) == 0, logger.stderr.read()[-2000:]
    bag = bag_to_dataset(tmp_path / "bag")
    np.testing.assert_array_equal(bag.infos["step"], [0, 1, 2])
    np.testing.assert_array_equal(bag.observations, read_episodes(out).observations)


def test_a_logger_killed_mid_episode_leaves_a_bag_bag2h5_salvages_up_to_the_last_finished_episode(ros_env, tmp_path):
    """SIGKILL (or a power cut) to a logger keeping an MCAP bag, in the middle of episode 2. Before, its
    bag was unreadable (no metadata.yaml, no MCAP footer) and held nothing anyway (rosbags keeps 1 MiB in
    memory): now each finished episode is on disk in the bag as in its HDF5 file, and `uni-o4 bag2h5`
    salvages it, saying the bag was never closed."""
    import signal
    import subprocess
    import sys

    from uni_o4_ros.data import read_hdf5

    sent = [_transition(1, 0), _transition(1, 1), _transition(1, 2, timeout=True), _transition(2, 0)]
    with _logger_fed(ros_env, tmp_path, sent, until="episode_000001.hdf5") as (logger, out):
        logger.send_signal(signal.SIGKILL)
        assert logger.wait(timeout=30) == -signal.SIGKILL
    assert not (tmp_path / "bag" / "metadata.yaml").exists()  # killed: never closed
    h5 = tmp_path / "salvaged.hdf5"
    run = subprocess.run([sys.executable, "-m", "uni_o4_ros.cli", "bag2h5", str(tmp_path / "bag"), "--out", str(h5)],
                         capture_output=True, text=True, timeout=120, env=ros_env)
    assert run.returncode == 0, run.stderr
    assert "was never closed" in run.stderr
    bag, files = read_hdf5(h5), read_episodes(out)
    np.testing.assert_array_equal(bag.infos["step"], [0, 1, 2])
    np.testing.assert_array_equal(bag.observations, files.observations)
    np.testing.assert_array_equal(bag.timeouts, files.timeouts)


def _wait_for_output(proc, needle: str, timeout: float = 60.0, *more: str) -> str:
    """Read the process's stderr until `needle` (and each of `more`, in any order) appears: its log lines
    say the events happened."""
    import os
    import select

    fd, text, end = proc.stderr.fileno(), "", time.monotonic() + timeout
    while missing := [n for n in (needle, *more) if n not in text]:
        left = end - time.monotonic()
        assert left > 0 and proc.poll() is None, f"no {missing!r} from the process; its output:\n{text[-1500:]}"
        if select.select([fd], [], [], min(left, 1.0))[0]:
            text += os.read(fd, 65536).decode(errors="replace")
    return text


def test_an_episode_the_logger_cannot_write_is_kept_until_it_can(ros_env, tmp_path):
    """The logger behind a stand-in recorder; between two episodes its folder is replaced by a file
    (a pulled USB stick whose path something else took). Before, the write error escaped the
    callback and killed the logger: that episode and every later one were lost until a restart."""

    out, aside = tmp_path / "episodes", tmp_path / "aside"
    logger = start("uni_o4_ros.nodes.dataset_logger_node", ros_env, f"directory:={out}")
    w = TransitionWatcher()
    try:
        pub = w.publisher()
        for m in (_transition(1, 0), _transition(1, 1, timeout=True)):
            pub.publish(m)
        w.wait(lambda: (out / "episode_000001.hdf5").exists() or logger.poll() is not None, timeout=60)
        out.rename(aside)
        out.write_text("not a folder")
        for m in (_transition(2, 0), _transition(2, 1), _transition(2, 2, terminal=True)):
            pub.publish(m)
        _wait_for_output(logger, "episode 2 not written")
        out.unlink()
        aside.rename(out)
        for m in (_transition(3, 0), _transition(3, 1, timeout=True)):
            pub.publish(m)
        w.wait(lambda: (out / "episode_000003.hdf5").exists() or logger.poll() is not None, timeout=60)
        assert logger.poll() is None, "the logger died on a failed write"
        assert sorted(f.name for f in out.iterdir()) == [f"episode_00000{i}.hdf5" for i in (1, 2, 3)]
        ds = read_episodes(out)
        assert ds.infos["step"].tolist() == [0, 1, 0, 1, 2, 0, 1]
        assert ds.terminals.tolist() == [False, False, False, False, True, False, False]
    finally:
        w.close()
        killed = stop(logger)
    assert killed == [] and logger.returncode == 0


def test_a_disk_that_fills_up_while_an_episode_is_written_costs_the_logger_nothing(ros_env, tmp_path):
    """A robot's disk that filled up while the logger wrote an episode: HDF5 raised, and h5py then ended the logger
    with a segmentation fault as the file closed, losing every episode it held. The kernel's file-size limit
    (RLIMIT_FSIZE, 64 KB: a write past it fails as one on a full disk does) stands in for the full disk; lifted,
    as when space is freed, the kept episode is written at the logger's next try, and no temporary file is left."""
    import resource
    import signal
    import subprocess

    from conftest import ROOT
    from uni_o4_ros.nodes.processes import node_command

    def full_past_64_kb() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG), as past a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, resource.RLIM_INFINITY))

    out = tmp_path / "episodes"
    logger = subprocess.Popen(node_command("dataset_logger_node", [f"directory:={out}", "min_free_mb:=0"]),
                              env=ros_env, cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              preexec_fn=full_past_64_kb)
    w = TransitionWatcher()
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus

    from uni_o4_ros.nodes.qos import DIAGNOSTICS

    said: list = []  # what a monitor shows of the logger (its status on /diagnostics, once a second)
    w.node.create_subscription(DiagnosticArray, "/diagnostics", lambda a: said.extend(
        (st.level, st.message, {kv.key: kv.value for kv in st.values}) for st in a.status
        if st.name == "dataset_logger: episodes"), DIAGNOSTICS)

    def episode(number: int, steps: int) -> list:  # 64 numbers per state: 200 steps are a ~110 KB file
        return [_transition(number, i, timeout=i == steps - 1, dim=64) for i in range(steps)]

    try:
        pub = w.publisher()
        for m in episode(1, 2):
            pub.publish(m)
        w.wait(lambda: (out / "episode_000001.hdf5").exists() or logger.poll() is not None, timeout=60)
        for m in episode(2, 200):
            pub.publish(m)
        _wait_for_output(logger, "episode 2 not written")
        w.wait(lambda: any(v["waiting_in_memory"] == "1" for _, _, v in said), timeout=60)
        level, message, values = next(st for st in said if st[2]["waiting_in_memory"] == "1")
        assert level == DiagnosticStatus.ERROR and message.startswith("1 episode(s) wait in memory")
        assert values["episodes_written"] == "1" and values["directory"] == str(out)
        resource.prlimit(logger.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        # written at the logger's next try, with no episode after it (the recording may be over)
        _wait_for_output(logger, "episodes [2], kept in memory, are now written")
        assert (out / "episode_000002.hdf5").exists()
        w.wait(lambda: said[-1][2]["episodes_written"] == "2", timeout=60)
        assert said[-1][:2] == (DiagnosticStatus.OK, "logging episodes") and said[-1][2]["waiting_in_memory"] == "0"
        for m in episode(3, 2):
            pub.publish(m)
        w.wait(lambda: (out / "episode_000003.hdf5").exists() or logger.poll() is not None, timeout=60)
        assert logger.poll() is None, "the logger died on a write to a full disk"
        assert sorted(f.name for f in out.iterdir()) == [f"episode_00000{i}.hdf5" for i in (1, 2, 3)]
        assert read_episodes(out).infos["step"].tolist() == [0, 1, *range(200), 0, 1]
    finally:
        w.close()
        killed = stop(logger)
    assert killed == [] and logger.returncode == 0


def test_the_logger_warns_of_a_full_disk_and_bounds_what_waits_in_memory(ros_env, tmp_path):
    """min_free_mb above what this disk has free: the logger warns at start and after each episode, with
    how many more fit. max_unwritten_mb 0: an episode its folder cannot take is dropped with an error
    naming the parameter, and the logger goes on to write the next one once it can."""

    out, aside = tmp_path / "episodes", tmp_path / "aside"
    logger = start("uni_o4_ros.nodes.dataset_logger_node", ros_env, f"directory:={out}",
                   f"min_free_mb:={10**12}", "max_unwritten_mb:=0")
    w = TransitionWatcher()
    try:
        pub = w.publisher()
        seen = _wait_for_output(logger, "MB free in")  # at start
        for m in (_transition(1, 0), _transition(1, 1, timeout=True)):
            pub.publish(m)
        seen += _wait_for_output(logger, "more episodes like the last")
        assert (out / "episode_000001.hdf5").exists()
        out.rename(aside)
        out.write_text("not a folder")
        for m in (_transition(2, 0), _transition(2, 1, timeout=True)):
            pub.publish(m)
        seen += _wait_for_output(logger, "max_unwritten_mb")
        assert "episode 2 not written" in seen and "and dropped" in seen
        out.unlink()
        aside.rename(out)
        for m in (_transition(3, 0), _transition(3, 1), _transition(3, 2, timeout=True)):
            pub.publish(m)
        w.wait(lambda: (out / "episode_000003.hdf5").exists() or logger.poll() is not None, timeout=60)
        assert logger.poll() is None
        assert sorted(f.name for f in out.iterdir()) == ["episode_000001.hdf5", "episode_000003.hdf5"]
        assert read_episodes(out).infos["step"].tolist() == [0, 1, 0, 1, 2]
    finally:
        w.close()
        killed = stop(logger)
    assert killed == [] and logger.returncode == 0


def test_odometry_samples_with_nan_are_ignored_so_every_recorded_reward_is_finite(ros_env, standing_policy, tmp_path):
    """A glitching odometry source (here the test, publishing NaN twists on `odom` faster than the
    simulator's own odometry) must not turn rewards into NaN: the recorder ignores such samples
    like lost messages. Before, most rewards of these episodes were NaN."""
    from nav_msgs.msg import Odometry

    from uni_o4_ros.nodes.qos import SENSOR

    out = tmp_path / "episodes"
    w = TransitionWatcher()
    glitch = w.node.create_publisher(Odometry, "odom", SENSOR)
    bad = Odometry()
    bad.twist.twist.linear.x = float("nan")
    w.node.create_timer(0.002, lambda: glitch.publish(bad))
    procs = _two_short_episodes(ros_env, standing_policy, out)
    try:
        w.wait(lambda: sum(t.timeout for t in w.seen) >= 2)
        assert glitch.get_subscription_count() >= 1  # the recorder did listen to the glitching source
        rewards = np.array([t.reward for t in w.seen])
        assert len(rewards) == 40 and np.isfinite(rewards).all() and (rewards > 0).all()
        w.wait(lambda: (out / "episode_000002.hdf5").exists(), timeout=30)
        assert len(read_episodes(out)) == 40
    finally:
        w.close()
        stop(*procs)


def _recorder_peers(w: TransitionWatcher) -> tuple[list, dict, np.ndarray]:
    """The recorder's peers, played by the test over the real topics: the events it publishes (a list
    filled as they come), publishers of robot_state, odom and policy_step, and an observation history
    that shows the recorder's default command."""
    from nav_msgs.msg import Odometry

    from uni_o4_ros.msg import EpisodeEvent, RobotState, Transition
    from uni_o4_ros.nodes.qos import EVENTS, SENSOR, TRANSITIONS
    from uni_o4_ros.robot.observation import ObservationBuilder, command_vector

    events: list = []
    w.node.create_subscription(EpisodeEvent, "recorder_events", events.append, EVENTS)
    pubs = {"state": w.node.create_publisher(RobotState, "robot_state", SENSOR),
            "odom": w.node.create_publisher(Odometry, "odom", SENSOR),
            "step": w.node.create_publisher(Transition, "policy_step", TRANSITIONS)}
    builder = ObservationBuilder()
    obs = builder.push(builder.frame(np.array([1.0, 0, 0, 0]), command_vector(0.5), np.zeros(12), np.zeros(12),
                                     np.zeros(12)))
    return events, pubs, obs


def test_lost_odometry_ends_the_episode_as_a_timeout_and_none_starts_until_it_returns(ros_env):
    """The recorder alone; the test plays controller, policy and T265 over the real topics. With
    odom_timeout set (config/robot.yaml: 0.1 s, the authors' T265 rule) rewards are never computed
    from a velocity older than that: the episode ends, and auto-start waits for odometry."""
    from nav_msgs.msg import Odometry

    from uni_o4_ros.msg import EpisodeEvent, RobotState, Transition

    w = TransitionWatcher()
    events, pubs, obs = _recorder_peers(w)
    tick = {"n": 0, "odom": True, "off_ticks": 0, "odd": 0}

    def control_tick() -> None:  # one 100 Hz tick of the stand-in robot and policy
        pubs["state"].publish(RobotState(mode=RobotState.MODE_ACTIVE))
        if tick["odom"]:
            odom = Odometry()
            odom.twist.twist.linear.x = 0.5
            pubs["odom"].publish(odom)
        else:
            tick["off_ticks"] += 1
        pubs["step"].publish(Transition(step=tick["n"], observation=obs.tolist(), action=[0.0] * 12, log_prob=-1.0))
        if tick["odd"]:  # another publisher's odd step: one such ended the recorder (a reshape error)
            tick["odd"] -= 1
            pubs["step"].publish(Transition(step=tick["n"], observation=[0.0] * 10, action=[0.0] * 5))
        tick["n"] += 1

    # 0.5 s rather than the robot's 0.1 s: a loaded CI machine can stall a process for 0.1 s
    recorder = start("uni_o4_ros.nodes.episode_recorder_node", ros_env, "odom_timeout:=0.5",
                     "wait_for_subscribers:=1")
    try:
        w.node.create_timer(0.01, control_tick)
        w.wait(lambda: len(w.seen) >= 20)
        assert [e.event for e in events] == [EpisodeEvent.STARTED] and not any(t.timeout for t in w.seen)
        tick["odd"] = 2  # the recorder hears the test's steps by now
        tick["odom"] = False  # the T265 stops
        w.wait(lambda: any(e.event == EpisodeEvent.ENDED for e in events))
        ended = next(e for e in events if e.event == EpisodeEvent.ENDED)
        assert ended.episode_id == 1 and ended.reason.startswith("odometry lost")
        first = [t for t in w.seen if t.episode_id == 1]
        assert first[-1].timeout and sum(t.timeout for t in first) == 1 and np.isfinite([t.reward for t in first]).all()
        # It ends at a transition made while odometry came (sent again, now marked), not at one made from a step
        # whose odometry never came, rewarded by the last velocity heard, older than odom_timeout.
        assert first[-1].step == first[-2].step and not first[-2].timeout
        start_off = tick["off_ticks"]
        w.wait(lambda: tick["off_ticks"] >= start_off + 100)  # a second more without odometry
        assert sum(e.event == EpisodeEvent.STARTED for e in events) == 1 and len(w.seen) == len(first)
        tick["odom"] = True  # back: the next episode starts
        w.wait(lambda: sum(e.event == EpisodeEvent.STARTED for e in events) == 2 and len(w.seen) > len(first))
        assert all(t.episode_id == 2 for t in w.seen[len(first):])
        assert all(len(t.observation) == 290 and len(t.action) == 12 for t in w.seen)
        assert recorder.poll() is None
    finally:
        w.close()
        stop(recorder)
    assert "ignored a policy step sample of 10/5 observation/action values (290/12 expected)" in recorder.stderr.read()


class _StampedPeers:
    """The recorder's peers for tests of how an episode ends, played tick by tick with stamps as on the robot:
    the controller's robot_state and the T265's odom of tick n share a stamp, and the policy's step answering
    that state carries it too; each tick's observation is its own (in its oldest frame: the newest shows the
    recorder's command)."""

    def __init__(self, w: TransitionWatcher) -> None:
        from uni_o4_ros.msg import EpisodeEvent
        from uni_o4_ros.nodes.qos import EVENTS

        self.w = w
        self.events, self.pubs, self.obs = _recorder_peers(w)
        self.fall_pub = w.node.create_publisher(EpisodeEvent, "episode_events", EVENTS)
        self.tick = 0

    @staticmethod
    def header(tick: int):
        from builtin_interfaces.msg import Time
        from std_msgs.msg import Header

        return Header(stamp=Time(sec=1000 + tick // 100, nanosec=(tick % 100) * 10_000_000))

    def state_and_odom(self, tick: int, mode: int, dq: float = 0.0) -> None:
        from nav_msgs.msg import Odometry

        from uni_o4_ros.msg import RobotState

        self.pubs["state"].publish(RobotState(header=self.header(tick), mode=mode, dq=[dq] * 12))
        self.pubs["odom"].publish(Odometry(header=self.header(tick)))

    def observation(self, tick: int) -> np.ndarray:
        return np.concatenate([[self.obs[0] + 1e-3 * tick], self.obs[1:]]).astype(np.float32)

    def answer(self, tick: int) -> None:
        from uni_o4_ros.msg import Transition

        self.pubs["step"].publish(Transition(header=self.header(tick), step=tick, action=[0.0] * 12, log_prob=-1.0,
                                             observation=self.observation(tick).tolist()))

    def walk_until_recording(self) -> None:
        """Active ticks, each answered, at 100 Hz until the recorder has published 5 transitions; `tick` is then
        the next tick, nothing of which was sent."""
        from uni_o4_ros.msg import RobotState

        def walking_tick() -> None:
            self.state_and_odom(self.tick, RobotState.MODE_ACTIVE)
            self.answer(self.tick)
            self.tick += 1

        timer = self.w.node.create_timer(0.01, walking_tick)
        self.w.wait(lambda: len(self.w.seen) >= 5)
        timer.cancel()

    def play(self, ticks: list[tuple[int, float]]) -> None:
        """(mode, joint speed) of the next ticks, each answered, at 100 Hz."""
        todo = list(ticks)

        def tick() -> None:
            if todo:
                mode, dq = todo.pop(0)
                self.state_and_odom(self.tick, mode, dq)
                self.answer(self.tick)
                self.tick += 1

        timer = self.w.node.create_timer(0.01, tick)
        self.w.wait(lambda: not todo)
        timer.cancel()


@contextmanager
def _recording_with_stamped_peers(ros_env: dict[str, str]) -> Iterator[tuple[TransitionWatcher, _StampedPeers]]:
    """The recorder alone, recording an episode from the test's stamped peers (`walk_until_recording`)."""
    w = TransitionWatcher()
    peers = _StampedPeers(w)
    recorder = start("uni_o4_ros.nodes.episode_recorder_node", ros_env, "wait_for_subscribers:=1")
    try:
        peers.walk_until_recording()
        yield w, peers
    finally:
        w.close()
        stop(recorder)


def test_a_fall_whose_answer_never_came_ends_without_a_state_of_before_it_as_its_next(ros_env):
    """The recorder alone, its peers played by the test. The policy never answers the fallen state; past the
    fall's 0.5 s, a late answer to the state before the fall is what the recorder hears next. That upright state
    was made the fall's s' (rewarded by its motion, and fitted by the dynamics model as the step into a fall).
    s' is unknown, so it is s (which the dynamics model leaves out)."""
    from uni_o4_ros.msg import EpisodeEvent, RobotState

    with _recording_with_stamped_peers(ros_env) as (w, peers):
        upright, fallen = peers.tick, peers.tick + 1
        peers.state_and_odom(upright, RobotState.MODE_ACTIVE)  # its answer comes late
        peers.fall_pub.publish(EpisodeEvent(header=peers.header(fallen), event=EpisodeEvent.ABORTED_FALL,
                                            reason="tilt"))
        peers.state_and_odom(fallen, RobotState.MODE_DAMPING)  # never answered
        heard = time.monotonic()
        w.wait(lambda: time.monotonic() > heard + 1.0)  # past the recorder's 0.5 s for the fall's answer
        peers.answer(upright)
        w.wait(lambda: any(e.event == EpisodeEvent.ABORTED_FALL for e in peers.events))
        w.wait(lambda: any(t.terminal for t in w.seen))
        last = next(t for t in w.seen if t.terminal)
        # the episode's last row is its last answered step's (the tick before `upright`), into s' = s
        assert last.episode_id == 1 and sum(t.terminal for t in w.seen) == 1
        np.testing.assert_array_equal(last.observation, peers.observation(upright - 1))
        np.testing.assert_array_equal(last.next_observation, last.observation)


def test_an_estop_heard_before_the_answer_to_the_state_before_it_still_records_that_step(ros_env):
    """The e-stopped state reaches the recorder before the policy's answer to the state before it (two topics:
    the executor takes either first, and a stalled recorder has both queued). The e-stop ended the episode at
    once, so that answer, a step the robot took, was dropped and an earlier transition marked the end. The
    episode now ends once that answer is recorded (or 0.5 s after the e-stop)."""
    from uni_o4_ros.msg import EpisodeEvent, RobotState

    with _recording_with_stamped_peers(ros_env) as (w, peers):
        last_step, stopped = peers.tick, peers.tick + 1
        peers.state_and_odom(last_step, RobotState.MODE_ACTIVE)
        peers.state_and_odom(stopped, RobotState.MODE_ESTOP)
        heard = time.monotonic()
        # The e-stop ended the episode before the answer went out (the recorder said so at once), or 0.1 s passed
        w.wait(lambda: any(e.event == EpisodeEvent.ABORTED_ESTOP for e in peers.events)
               or time.monotonic() > heard + 0.1)
        peers.answer(last_step)
        tick = {"n": stopped + 1}

        def estopped_tick() -> None:  # the controller goes on publishing the e-stopped robot's state
            peers.state_and_odom(tick["n"], RobotState.MODE_ESTOP)
            tick["n"] += 1

        w.node.create_timer(0.01, estopped_tick)
        w.wait(lambda: any(e.event == EpisodeEvent.ABORTED_ESTOP for e in peers.events))
        w.wait(lambda: any(t.timeout for t in w.seen))
        end = [t for t in w.seen if t.timeout]
        assert len(end) == 1 and not any(t.terminal for t in w.seen)
        # the end is the transition into the state the last answered step saw: that step was recorded
        np.testing.assert_array_equal(end[0].next_observation, peers.observation(last_step))


def test_a_robot_that_falls_once_e_stopped_ends_its_episode_as_the_e_stop_not_as_a_fall(ros_env):
    """The e-stop waits for the answer to the state before it, which here never comes (a state the policy does
    not answer). Meanwhile the stopped robot tips past max_tilt and is re-armed: the controller reports a fall
    stamped after the e-stop, and the policy answers the re-armed state within the 0.5 s. That fall ended the
    episode as a terminal from the last step before the e-stop into the re-armed state, a transition across
    time the policy did not act in, blamed on it. The e-stop ends it, as a truncation."""
    from uni_o4_ros.msg import EpisodeEvent, RobotState

    with _recording_with_stamped_peers(ros_env) as (w, peers):
        unanswered, stopped, rearmed = peers.tick, peers.tick + 1, peers.tick + 2
        peers.state_and_odom(unanswered, RobotState.MODE_ACTIVE)
        peers.state_and_odom(stopped, RobotState.MODE_ESTOP)
        peers.fall_pub.publish(EpisodeEvent(header=peers.header(rearmed), event=EpisodeEvent.ABORTED_FALL,
                                            reason="tilt"))
        heard = time.monotonic()
        w.wait(lambda: time.monotonic() > heard + 0.1)  # the fall heard (inside the e-stop's 0.5 s)
        peers.state_and_odom(rearmed, RobotState.MODE_DAMPING)
        peers.answer(rearmed)
        w.wait(lambda: any(e.event in (EpisodeEvent.ABORTED_ESTOP, EpisodeEvent.ABORTED_FALL) for e in peers.events))
        assert [e.event for e in peers.events if e.event != EpisodeEvent.STARTED] == [EpisodeEvent.ABORTED_ESTOP]
        w.wait(lambda: any(t.timeout for t in w.seen))
        assert not any(t.terminal for t in w.seen)


def test_joint_accelerations_after_a_damped_stretch_are_over_one_tick_not_across_it(ros_env):
    """A watchdog blip damps the robot for a few ticks mid-episode (max_damped 0: the episode goes on), and the
    joints move meanwhile. The first transition after it was penalised for the acceleration from the last
    recorded state, as if the whole stretch had happened in one 20 ms tick (here 500 rad/s^2 instead of 0)."""
    from uni_o4_ros.msg import RobotState

    with _recording_with_stamped_peers(ros_env) as (w, peers):
        first_active = peers.tick + 5
        active, damped = RobotState.MODE_ACTIVE, RobotState.MODE_DAMPING
        peers.play([(damped, 2.0 * k) for k in range(1, 6)] + [(active, 10.0)] * 3)

        def into(tick: int):
            return next((t for t in w.seen if np.array_equal(t.next_observation, peers.observation(tick))), None)

        w.wait(lambda: into(first_active) is not None and into(first_active + 1) is not None)
        across, after = into(first_active), into(first_active + 1)
        # the same state in both (joints at 10 rad/s, steady since the last damped tick): the same reward
        assert across.reward == after.reward, (across.reward, after.reward)


class _FollowingPolicy:
    """The recorder's peers for the command tests: at 100 Hz the robot stands, odometry says 0.5 m/s forward,
    and a policy steps whose observation shows the command it follows: what `joystick` says if set, else the
    newest cmd_vel heard if `follows`, else the policy's standing command (0, 0, 0)."""

    def __init__(self, w: TransitionWatcher) -> None:
        from geometry_msgs.msg import Twist

        from uni_o4_ros.nodes.qos import COMMAND
        from uni_o4_ros.robot.observation import ObservationBuilder

        self.w = w
        self.events, self.pubs, _ = _recorder_peers(w)
        self.sent: list = []
        w.node.create_subscription(Twist, "cmd_vel", self.sent.append, COMMAND)
        self.builder = ObservationBuilder()
        self.n, self.follows, self.joystick = 0, False, None

    def start(self) -> None:
        self.w.node.create_timer(0.01, self.control_tick)

    def control_tick(self) -> None:
        from nav_msgs.msg import Odometry

        from uni_o4_ros.msg import RobotState, Transition
        from uni_o4_ros.robot.observation import command_vector

        self.pubs["state"].publish(RobotState(mode=RobotState.MODE_ACTIVE))
        odom = Odometry()
        odom.twist.twist.linear.x = 0.5
        self.pubs["odom"].publish(odom)
        command = (0.0, 0.0, 0.0)
        if self.joystick:
            command = self.joystick
        elif self.follows and self.sent:
            command = (self.sent[-1].linear.x, self.sent[-1].linear.y, self.sent[-1].angular.z)
        obs = self.builder.push(self.builder.frame(np.array([1.0, 0, 0, 0]), command_vector(*command), np.zeros(12),
                                                   np.zeros(12), np.zeros(12)))
        self.pubs["step"].publish(Transition(step=self.n, observation=obs.tolist(), action=[0.0] * 12, log_prob=-1.0))
        self.n += 1

    def assert_rewards_follow_the_shown_command(self) -> set[float]:
        """Each transition's reward is Table 3's for the command its observation shows; the speeds shown."""
        from uni_o4_ros.robot.observation import newest_command
        from uni_o4_ros.robot.reward import reward

        kinds = set()
        for t in self.w.seen:
            vx, vy, wz = newest_command(np.asarray(t.observation, np.float32))
            kinds.add(round(float(vx), 3))
            expected, _ = reward(np.array([0.5, 0.0]), np.array([vx, vy]), 0.0, wz, 0.0, *[np.zeros(12)] * 5)
            assert t.reward == pytest.approx(expected, rel=1e-6), (vx, vy, wz)
        return kinds


def test_the_recorder_sends_its_command_at_every_step_and_rewards_the_command_followed(ros_env):
    """The recorder alone; the test plays controller, T265 and a policy that follows `cmd_vel`. cmd_vel is
    volatile, as teleop publishes it, so the recorder sends the episode's command again at every policy
    step until the policy shows it (a policy that matched after the first send still gets it), and goes on
    sending it while the episode runs: the policy's command_timeout returns to its standing command when
    the sends stop (a recorder that died). A joystick publishing too is overridden at every step: the
    recorder says so. Each transition's reward is Table 3's for the command its observation shows."""
    import threading

    from geometry_msgs.msg import Twist

    from uni_o4_ros.msg import EpisodeEvent
    from uni_o4_ros.nodes.qos import COMMAND
    from uni_o4_ros.robot.observation import newest_command

    w = TransitionWatcher()
    peers = _FollowingPolicy(w)
    recorder = start("uni_o4_ros.nodes.episode_recorder_node", ros_env, "wait_for_subscribers:=1")
    log: list[str] = []
    threading.Thread(target=lambda: log.extend(recorder.stderr), daemon=True).start()
    overridden = ("1 other publisher(s) on cmd_vel (a joystick, teleop?): the recorder sends its episode's command "
                  "at every step and overrides them; to drive by hand, give the recorder command_source: external")
    try:
        peers.start()
        w.wait(lambda: len(peers.sent) >= 3)  # the policy has not followed: the command went out again and again
        assert peers.events == [] and w.seen == []
        assert {(c.linear.x, c.linear.y, c.angular.z) for c in peers.sent} == {(0.5, 0.0, 0.0)}  # command_velocity
        peers.follows = True
        w.wait(lambda: len(w.seen) >= 20)
        assert [e.event for e in peers.events] == [EpisodeEvent.STARTED]
        resent = len(peers.sent)
        w.wait(lambda: len(peers.sent) >= resent + 20)  # sent on while the episode runs
        joystick = w.node.create_publisher(Twist, "cmd_vel", COMMAND)
        joystick.publish(Twist())
        peers.joystick = (1.0, 0.0, 0.2)  # the policy follows the joystick for a while
        w.wait(lambda: sum(newest_command(np.asarray(t.observation))[0] > 0.9 for t in w.seen) >= 20)
        w.wait(lambda: any(overridden in line for line in log))  # said within a second of the joystick's start
        assert {(c.linear.x, c.linear.y, c.angular.z) for c in peers.sent[resent:]} == {(0.5, 0.0, 0.0), (0, 0, 0)}
        assert peers.assert_rewards_follow_the_shown_command() == {0.5, 1.0}
    finally:
        w.close()
        stop(recorder)


def test_with_an_external_command_source_the_recorder_sends_nothing_and_records_what_the_joystick_drives(ros_env):
    """command_source external (a joystick, teleop or Nav2 drives): the recorder publishes nothing on cmd_vel,
    an episode starts at once with whatever command the policy follows, and each reward is Table 3's for the
    command its observation shows as the joystick changes it."""
    from uni_o4_ros.msg import EpisodeEvent
    from uni_o4_ros.robot.observation import newest_command

    w = TransitionWatcher()
    peers = _FollowingPolicy(w)
    recorder = start("uni_o4_ros.nodes.episode_recorder_node", ros_env, "wait_for_subscribers:=1",
                     "command_source:=external")
    try:
        peers.joystick = (0.3, 0.0, 0.0)
        peers.start()
        w.wait(lambda: len(w.seen) >= 20)
        assert [e.event for e in peers.events] == [EpisodeEvent.STARTED]
        peers.joystick = (1.0, 0.0, 0.2)
        w.wait(lambda: sum(newest_command(np.asarray(t.observation))[0] > 0.9 for t in w.seen) >= 20)
        assert peers.sent == [] and w.node.count_publishers("cmd_vel") == 0  # the recorder has no publisher
        assert peers.assert_rewards_follow_the_shown_command() == {0.3, 1.0}
    finally:
        w.close()
        stop(recorder)


def test_a_recorder_stalled_for_a_while_rewards_each_step_from_the_odometry_of_the_state_it_answered(ros_env):
    """The recorder alone; the test plays controller, T265 and policy at 100 Hz, stamping each tick. The recorder
    is stopped for 15 ticks (SIGSTOP: a process starved on a loaded computer). Its readers of robot_state and
    odom kept 5 samples, so after the stall its steps took the newest odometry instead of their own: two
    recordings of one seed differed in their rewards. The odometry cycles 0.2, 0.5, 0.8 m/s and each policy
    step shows as its command the speed of the state after it, so every reward computed from the right
    odometry is Table 3's for perfect tracking, and one from another is not. States that never arrive (the
    test leaves out three) are said at the episode's end: those steps' rewards come from another state."""
    import os
    import re
    import signal
    import threading

    from builtin_interfaces.msg import Time
    from nav_msgs.msg import Odometry

    from uni_o4_ros.msg import EpisodeEvent, RobotState, Transition
    from uni_o4_ros.robot.observation import ObservationBuilder, command_vector, newest_command
    from uni_o4_ros.robot.reward import reward

    w = TransitionWatcher()
    events, pubs, _ = _recorder_peers(w)
    speeds, builder, ticks, dropped, drop = (0.2, 0.5, 0.8), ObservationBuilder(), [0], [], [0]

    def control_tick() -> None:
        k = ticks[0]
        ticks[0] += 1
        stamp = Time(sec=1000 + k)
        state = RobotState(mode=RobotState.MODE_ACTIVE)
        state.header.stamp = stamp
        odom = Odometry()
        odom.header.stamp, odom.twist.twist.linear.x = stamp, speeds[k % 3]
        obs = builder.push(builder.frame(np.array([1.0, 0, 0, 0]), command_vector(speeds[(k + 1) % 3]),
                                         np.zeros(12), np.zeros(12), np.zeros(12)))
        step = Transition(step=k, observation=obs.tolist(), action=[0.0] * 12, log_prob=-1.0)
        step.header.stamp = stamp
        if len(dropped) < drop[0]:
            dropped.append(k)  # lost on the way
        else:
            pubs["state"].publish(state)
        pubs["odom"].publish(odom)
        pubs["step"].publish(step)

    recorder = start("uni_o4_ros.nodes.episode_recorder_node", ros_env, "wait_for_subscribers:=1",
                     "command_source:=external", "max_steps:=200")
    log: list[str] = []
    threading.Thread(target=lambda: log.extend(recorder.stderr), daemon=True).start()
    try:
        w.wait(lambda: all(p.get_subscription_count() >= 1 for p in pubs.values()))  # no sample before it listens
        w.node.create_timer(0.01, control_tick)
        w.wait(lambda: len(w.seen) >= 20)  # past the start, where a sample may beat the reader's match
        os.kill(recorder.pid, signal.SIGSTOP)
        try:
            stalled_at, recorded = ticks[0], len(w.seen)
            w.wait(lambda: ticks[0] >= stalled_at + 15)
        finally:
            os.kill(recorder.pid, signal.SIGCONT)
        w.wait(lambda: len(w.seen) >= recorded + 60)
        for t in w.seen[recorded:]:  # every step the recorder took during and after the stall
            vx, vy, wz = newest_command(np.asarray(t.observation, np.float32))
            tracked, _ = reward(np.array([vx, vy]), np.array([vx, vy]), wz, wz, 0.0, *[np.zeros(12)] * 5)
            assert t.reward == pytest.approx(tracked, rel=1e-6), (t.step, stalled_at, vx)
        drop[0] = 3
        # At its end: the log line, and the episode's end event over DDS (the line is said right after the event is
        # published, and the thread reading it can see it before this node has spun the event in: CI once did).
        def ends() -> list:
            return [e for e in events if e.episode_id == 1 and e.event != EpisodeEvent.STARTED]

        w.wait(lambda: any("were paired with another robot state" in line for line in log) and ends())
        lost = re.search(r"episode 1: (\d+) policy step\(s\) were paired with another robot state", "".join(log))
        # ours (3), and any of the stall's 15 ticks (a loaded CI host lost 7 of them once)
        assert lost and 3 <= int(lost.group(1)) <= 3 + 15 and len(ends()) == 1, log[-5:]
    finally:
        w.close()
        stop(recorder)


def test_an_episode_e_stopped_before_its_first_transition_gives_its_number_to_the_next(ros_env):
    """The recorder alone; the test plays controller, policy and T265. An e-stop as an episode begins ends
    it with nothing recorded. Its number used to be spent: the logger then read the gap in the ids as an
    episode lost on the way (an error blaming DDS), and `episodes:=N` stopped one file short."""
    from nav_msgs.msg import Odometry

    from uni_o4_ros.msg import EpisodeEvent, RobotState, Transition

    w = TransitionWatcher()
    events, pubs, obs = _recorder_peers(w)
    robot = {"mode": RobotState.MODE_ACTIVE, "stepping": False, "n": 0}

    def step() -> None:
        pubs["step"].publish(Transition(step=robot["n"], observation=obs.tolist(), action=[0.0] * 12, log_prob=-1.0))
        robot["n"] += 1

    def control_tick() -> None:  # the stand-in robot (and, once re-armed, the policy) at 100 Hz
        pubs["state"].publish(RobotState(mode=robot["mode"]))
        odom = Odometry()
        odom.twist.twist.linear.x = 0.5
        pubs["odom"].publish(odom)
        if robot["stepping"]:
            step()

    recorder = start("uni_o4_ros.nodes.episode_recorder_node", ros_env, "wait_for_subscribers:=1", "episodes:=1")
    try:
        w.node.create_timer(0.01, control_tick)
        w.wait(lambda: pubs["step"].get_subscription_count() >= 1 and len(w.node.get_publishers_info_by_topic(
            "/recorder_events")) >= 1)
        # One policy step at a time: the first the recorder takes with the robot active starts episode 1, and
        # its successor, which would make the first transition, is never sent. Another step follows only if
        # one went unanswered for 2 s (the recorder had no robot state yet).
        while not events:
            step()
            try:
                w.wait(lambda: bool(events), timeout=2.0)
            except AssertionError:
                continue
        assert [(e.episode_id, e.event) for e in events] == [(1, EpisodeEvent.STARTED)]
        robot["mode"] = RobotState.MODE_ESTOP
        w.wait(lambda: len(events) == 2)
        assert (events[1].episode_id, events[1].event, events[1].steps) == (1, EpisodeEvent.ABORTED_ESTOP, 0)
        assert w.seen == []  # nothing was recorded
        robot["mode"], robot["stepping"] = RobotState.MODE_ACTIVE, True  # re-armed
        w.wait(lambda: len(events) == 3 and len(w.seen) >= 5)
        # The limit of one episode counts the episode with data: it starts, under the same number.
        assert (events[2].episode_id, events[2].event) == (1, EpisodeEvent.STARTED)
        assert {t.episode_id for t in w.seen} == {1} and [t.step for t in w.seen[:5]] == list(range(5))
    finally:
        w.close()
        stop(recorder)
