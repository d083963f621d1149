"""Starting and stopping node processes (no ROS import): used by `uni-o4 bringup` and the tests."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path


def node_command(module: str, params: Sequence[str] = (), params_file: str | Path | None = None) -> list[str]:
    """`python -m uni_o4_ros.nodes.<module> --ros-args [--params-file F] -p name:=value ...`"""
    cmd = [sys.executable, "-m", f"uni_o4_ros.nodes.{module}", "--ros-args"]
    if params_file is not None:
        cmd += ["--params-file", str(params_file)]
    for p in params:
        cmd += ["-p", p]
    return cmd


def stop_processes(*procs: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM everything still running, then SIGKILL what has not exited within `timeout`."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
