"""rosbag2 (MCAP) -> dataset: Transition messages serialised by the real rclpy type support (as
`ros2 bag record` stores them), written with rosbags, converted by `uni-o4 bag2h5`."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from rclpy.serialization import serialize_message

from uni_o4_ros.data import DatasetError, read_hdf5
from uni_o4_ros.data.bag import TransitionBagWriter, bag_to_dataset
from uni_o4_ros.msg import Transition


def transition(eid: int, step: int, last: str = "") -> Transition:
    m = Transition(episode_id=eid, step=step, log_prob=-1.5 - step, reward=0.01 * step, policy_version=eid,
                   terminal=last == "terminal", timeout=last == "timeout")
    m.header.stamp.sec, m.header.stamp.nanosec = 100 + eid * 10 + step, 0
    m.observation = [float(eid), float(step)] * 3
    m.next_observation = [float(eid), float(step + 1)] * 3
    m.action = [0.1 * step, -0.1 * step]
    return m


def write_bag(path, msgs) -> None:
    w = TransitionBagWriter(path)
    for m in msgs:
        w.write(serialize_message(m), m.header.stamp.sec * 10**9)
    w.close()


def test_bag2h5_rebuilds_episodes_from_an_mcap_bag(tmp_path):
    # episode 1: 3 steps ending in a fall; episode 2: 4 steps, a timeout; messages out of order, one repeated
    msgs = [transition(1, 0), transition(2, 0), transition(1, 2, "terminal"), transition(1, 1), transition(2, 1),
            transition(2, 2), transition(2, 2), transition(2, 3, "timeout")]
    bag = tmp_path / "robot_bag"
    write_bag(bag, msgs)
    assert list(bag.glob("*.mcap")) and (bag / "metadata.yaml").is_file()
    out = tmp_path / "robot.hdf5"
    run = subprocess.run([sys.executable, "-m", "uni_o4_ros.cli", "bag2h5", str(bag), "--out", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "7 transitions in 2 episode(s), 1 terminal, 1 timeouts" in run.stdout
    ds = read_hdf5(out)
    np.testing.assert_array_equal(ds.infos["step"], [0, 1, 2, 0, 1, 2, 3])
    np.testing.assert_array_equal(ds.infos["episode_id"], [1, 1, 1, 2, 2, 2, 2])
    np.testing.assert_array_equal(ds.terminals, [0, 0, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(ds.timeouts, [0, 0, 0, 0, 0, 0, 1])
    np.testing.assert_allclose(ds.observations[:, 1], [0, 1, 2, 0, 1, 2, 3])
    np.testing.assert_allclose(ds.next_observations[:, 1], [1, 2, 3, 1, 2, 3, 4])
    np.testing.assert_allclose(ds.rewards, [0, 0.01, 0.02, 0, 0.01, 0.02, 0.03], rtol=1e-6)
    np.testing.assert_allclose(ds.infos["action_log_probs"], [-1.5, -2.5, -3.5, -1.5, -2.5, -3.5, -4.5])
    np.testing.assert_array_equal(ds.infos["policy_version"], [1, 1, 1, 2, 2, 2, 2])


def test_a_bag_cut_mid_episode_ends_that_episode_with_a_timeout(tmp_path):
    write_bag(tmp_path / "cut", [transition(5, 0), transition(5, 1)])
    ds = bag_to_dataset(tmp_path / "cut")
    assert len(ds) == 2 and ds.timeouts.tolist() == [False, True] and not ds.terminals.any()


def test_wrong_bags_are_clear_errors(tmp_path):
    write_bag(tmp_path / "b", [transition(1, 0, "timeout")])
    with pytest.raises(DatasetError, match="no /odom topic"):
        bag_to_dataset(tmp_path / "b", topic="/odom")
    with pytest.raises(FileNotFoundError):
        bag_to_dataset(tmp_path / "missing")
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "metadata.yaml").write_text("not: a bag\n")
    with pytest.raises(DatasetError, match="cannot read bag"):
        bag_to_dataset(junk)
    run = subprocess.run([sys.executable, "-m", "uni_o4_ros.cli", "bag2h5", str(junk), "--out", str(tmp_path / "o.h5")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "cannot read bag" in run.stderr and "Traceback" not in run.stderr
