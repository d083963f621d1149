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
def ros_env(monkeypatch, tmp_path_factory) -> dict[str, str]:
    """Environment for rclpy processes (the nodes and the test's own): own ROS_DOMAIN_ID (1..100),
    discovery on this host only, Fast DDS over loopback UDP as the nodes themselves choose it
    (dds_transport: no shared memory, whose ports a SIGKILLed node leaves locked), and a config folder
    of the test session's own, where the nodes make and find this "computer's" policy-update key."""
    domain = 1 + (os.getpid() * 7 + next(_domain_counter)) % 100
    env = own_local_graph(os.environ, domain) | {"PYTHONUNBUFFERED": "1",
                                                 "XDG_CONFIG_HOME": str(tmp_path_factory.getbasetemp() / "config")}
    for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE", "XDG_CONFIG_HOME", *TRANSPORT_VARIABLES):
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


def wall_clock_set_back_by_hand(env: dict[str, str], folder: Path) -> tuple[dict[str, str], Path]:
    """An environment whose processes read a wall clock the test can set back (libfaketime, LD_PRELOAD: as
    NTP or an operator's `date` steps a robot computer's clock; the monotonic clock is left alone), and the
    file that sets it: write "-60s" into it and the clock reads a minute earlier from then on."""
    import importlib.util

    spec = importlib.util.find_spec("libfaketime")  # its .so only: the Python module is not needed
    lib = Path(spec.submodule_search_locations[0]) / "vendor" / "libfaketime" / "src" / "libfaketime.so.1"
    offset = folder / "faketime_offset"
    offset.write_text("+0\n")
    return env | {"LD_PRELOAD": str(lib), "FAKETIME_TIMESTAMP_FILE": str(offset), "FAKETIME_NO_CACHE": "1",
                  "DONT_FAKE_MONOTONIC": "1"}, offset


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
