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


def stop_processes(*procs: subprocess.Popen, timeout: float = 10.0) -> list[subprocess.Popen]:
    """SIGTERM everything still running, then SIGKILL what has not exited within `timeout`.

    Every process is reaped (its returncode set), and the ones that had to be killed are returned:
    a node that ignores SIGTERM skipped its own shutdown (damping command, file close), which the
    caller should report rather than hide.
    """
    for p in procs:
        if p.poll() is None:
            p.terminate()
    killed = []
    for p in procs:
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            killed.append(p)
    return killed
