"""Run a set of node processes until a condition holds (no ROS import: processes and files only).

The field pipeline supervises the same node processes `ros2 launch` would start; it watches the
files they write (recorded episodes) to know when a stage is done, and stops everything after.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ..nodes.processes import child_env, node_command, stop_processes, stop_signals_raise_exit


class NodeGraphError(RuntimeError):
    pass


def ros_environment(default_domain_id: int | None = None) -> dict[str, str]:
    """The caller's environment, kept on this host unless the user said otherwise (ROS_DOMAIN_ID and
    ROS_AUTOMATIC_DISCOVERY_RANGE from the caller win). The nodes pick their transport themselves
    (run_node -> dds_transport)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    if default_domain_id is not None:
        env.setdefault("ROS_DOMAIN_ID", str(default_domain_id))
    return env


def run_until(nodes: dict[str, list[str]], done: Callable[[], bool], log_dir: Path, env: dict[str, str],
              params_file: Path | None = None, timeout: float = 3600.0,
              on_poll: Callable[[], None] | None = None) -> float:
    """Start `nodes` ({module: ["name:=value", ...]}), poll `done()` twice a second, stop them.

    Raises NodeGraphError (with the tail of its log) if a node exits early or time runs out.
    Returns the seconds the graph ran.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    procs: dict[str, subprocess.Popen] = {}
    logs = []
    start = time.monotonic()
    with stop_signals_raise_exit():
        try:
            for module, params in nodes.items():
                log = open(log_dir / f"{module}.log", "w")  # noqa: SIM115 - closed in finally
                logs.append(log)
                procs[module] = subprocess.Popen(node_command(module, params, params_file), env=child_env(env),
                                                 stdout=log, stderr=subprocess.STDOUT)
            while not done():
                for module, p in procs.items():
                    if p.poll() is not None:
                        tail = (log_dir / f"{module}.log").read_text()[-1500:]
                        raise NodeGraphError(f"{module} exited with code {p.returncode}:\n{tail}")
                if time.monotonic() - start > timeout:
                    raise NodeGraphError(f"stage not finished within {timeout:.0f} s; logs in {log_dir}")
                if on_poll is not None:
                    on_poll()
                time.sleep(0.5)  # supervision cadence, not synchronisation: done() reads the files
        finally:
            killed = stop_processes(*procs.values())
            for module, p in procs.items():
                if p in killed:
                    print(f"{module} ignored SIGTERM for 10 s and was killed; its log: {log_dir / f'{module}.log'}",
                          file=sys.stderr)
            for log in logs:
                log.close()
    return time.monotonic() - start
