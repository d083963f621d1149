"""Starting and stopping node processes (no ROS import): used by `uni-o4 bringup` and the tests."""

from __future__ import annotations

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
