"""Starting and stopping node processes (no ROS import): used by `uni-o4 bringup` and the tests."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path


def node_command(module: str, params: Sequence[str] = (), params_file: str | Path | None = None) -> list[str]:
    """`python -m uni_o4_ros.nodes.<module> --ros-args [--params-file F] -p name:=value ...`"""
    cmd = [sys.executable, "-m", f"uni_o4_ros.nodes.{module}", "--ros-args"]
    if params_file is not None:
        cmd += ["--params-file", str(params_file)]
    for p in params:
        cmd += ["-p", p]
    return cmd


# Set by a starter (uni-o4 bringup, the field pipeline) in its children's environment: its pid.
STOP_WITH_PARENT = "UNI_O4_STOP_WITH_PARENT"
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def child_env(env: dict[str, str]) -> dict[str, str]:
    """`env` for a child that must not outlive this process (see stop_with_parent)."""
    return {**env, STOP_WITH_PARENT: str(os.getpid())}


def stop_with_parent() -> None:
    """In a process started with child_env(): SIGTERM (its own shutdown: damping, closing files) when the
    starter dies, even killed with SIGKILL or by the OOM killer, whose children otherwise ran on by
    themselves (the simulated robot still walking and recording, nodes still on the ROS domain).
    Opt-in through the environment, so a node a user starts under `nohup` from a shell does not stop
    with that shell. Linux only (prctl); elsewhere nothing changes."""
    parent = os.environ.pop(STOP_WITH_PARENT, "")  # not inherited by this process's own children
    if not parent or not sys.platform.startswith("linux"):
        return
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != int(parent):  # the starter died before the request was made
        os.kill(os.getpid(), signal.SIGTERM)


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


def stop_signals() -> tuple[signal.Signals, ...]:
    """The signals that ask a process to stop besides Ctrl-C: `kill` (SIGTERM) and a hangup (SIGHUP:
    its terminal closed, e.g. the SSH session to the robot dropped), unless SIGHUP is ignored on
    entry (`nohup`: the user asked it to outlive the terminal)."""
    hangup = () if signal.getsignal(signal.SIGHUP) == signal.SIG_IGN else (signal.SIGHUP,)
    return (signal.SIGTERM, *hangup)


@contextmanager
def stop_signals_raise_exit() -> Iterator[None]:
    """SIGTERM and SIGHUP end Python without running `finally` blocks, which would leave child
    processes (node processes, evaluation workers) running on their own. Inside this block they raise
    SystemExit(128 + signal) instead, so the children are stopped as on Ctrl-C. Only the main thread
    may set handlers; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _raise_exit) for s in stop_signals()}
    try:
        yield
    finally:
        for s, handler in previous.items():  # None: not set from Python, i.e. the default
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)


def _raise_exit(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)
