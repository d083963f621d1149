"""Shared fixtures: an isolated ROS 2 domain per test and a helper to start Python processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# One intra-op thread for torch in the tests and every process they start: node processes and
# training share 2 cores, and torch's spinning worker threads then slowed small updates ~100x.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest

from uni_o4_ros.nodes.dds_transport import TRANSPORT_VARIABLES, own_local_graph
from uni_o4_ros.nodes.processes import node_command, stop_processes

ROOT = Path(__file__).resolve().parents[1]
_domain_counter = iter(range(1000))


@pytest.fixture
def ros_env(monkeypatch) -> dict[str, str]:
    """Environment for rclpy processes (the nodes and the test's own): own ROS_DOMAIN_ID (1..100),
    discovery on this host only, Fast DDS over loopback UDP as the nodes themselves choose it
    (dds_transport: no shared memory, whose ports a SIGKILLed node leaves locked)."""
    domain = 1 + (os.getpid() * 7 + next(_domain_counter)) % 100
    env = own_local_graph(os.environ, domain) | {"PYTHONUNBUFFERED": "1"}
    for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE", *TRANSPORT_VARIABLES):
        if k in env:
            monkeypatch.setenv(k, env[k])
        else:
            monkeypatch.delenv(k, raising=False)
    return env


def wait_until(rclpy, node, cond, timeout: float) -> None:
    """Spin `node` until `cond()` holds; fail after `timeout` seconds (no sleeps as synchronisation)."""
    import time

    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not met in time"
        rclpy.spin_once(node, timeout_sec=0.05)


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


def process_table() -> list[tuple[int, int, bytes]]:
    """(pid, parent pid, command line) of every process, read from /proc: no procps needed."""
    from pathlib import Path

    table = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
                table.append((int(d.name), ppid, (d / "cmdline").read_bytes()))
            except OSError:  # the process ended while we looked
                continue
    return table


def poll_process_table(cond, seconds: float) -> bool:
    """Whether `cond()` (a look at /proc) holds within `seconds`; for processes the test does not
    own, where there is no event to wait on."""
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.2)  # polling a process table, not synchronising on a guess
    return False


def spawn_python(code: str, env: dict[str, str], **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def start_node(module: str, env: dict[str, str], *params: str) -> subprocess.Popen:
    """Start a node module (e.g. "uni_o4_ros.nodes.policy_node") as its own process."""
    return subprocess.Popen(node_command(module.rsplit(".", 1)[-1], params), env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


stop_nodes = stop_processes


@pytest.fixture
def standing_policy(tmp_path) -> Path:
    """A saved policy whose mean action is 0 everywhere: it holds the default pose."""
    import numpy as np
    import torch

    from uni_o4_ros.learning.normalizer import StateNormalizer
    from uni_o4_ros.learning.offline import save_policy
    from uni_o4_ros.learning.policy import make_policy

    pol = make_policy(290, 12, hidden=(16,), mean_activation="none")
    with torch.no_grad():
        for p in pol.parameters():
            p.zero_()
    save_policy(tmp_path / "standing_policy", "policy", pol, StateNormalizer(np.zeros(290), np.ones(290)))
    return tmp_path / "standing_policy"
