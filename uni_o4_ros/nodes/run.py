"""The one way every node process starts and stops: configuration errors end with one line and
exit code 2; Ctrl-C, SIGTERM, a hangup (SIGHUP, unless nohup ignores it) and an external shutdown
end quietly, through the node's own shutdown (the controller's parting damping, the logger's files)."""

from __future__ import annotations

import difflib
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence

import rclpy
import yaml
from rcl_interfaces.msg import SetParametersResult
from rclpy._rclpy_pybind11 import RCLError  # rclpy raises it, and exports it nowhere else
from rclpy.exceptions import InvalidParameterTypeException
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

from .dds_transport import without_shared_memory
from .parameters_file import shared_only
from .processes import stop_signals, stop_with_parent


class NodeConfigError(RuntimeError):
    """A parameter or device problem a user must fix; reported as one line."""


# How long one executor wait may block before the loop looks at the stop flag again.
_STOP_POLL_S = 0.1


def run_node(factory: Callable[[], Node], name: str, args: list[str] | None = None, threads: int = 1,
             errors: tuple[type[BaseException], ...] = ()) -> int:
    # rclpy's own SIGINT/SIGTERM handling lost a SIGTERM about once in 20-40 stops of a learner training
    # on a worker thread (py-spy: the main thread still waiting in rcl_wait a minute later, the context
    # never shut down). Python-level handlers only set a flag, and the executor waits at most
    # _STOP_POLL_S at a time, so the flag is seen whatever rclpy's signal thread does.
    stop = threading.Event()
    stop_with_parent()
    # Before rclpy starts: the middleware reads its transport settings when the participant is made.
    transport = without_shared_memory(os.environ)
    os.environ.update(transport.settings)
    try:
        rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    except RCLError as exc:  # a --params-file that is missing or no YAML, `-p name` without `:=value`
        print(f"{name}: error: {str(exc).strip().splitlines()[0]}", file=sys.stderr)
        return 2
    # A hangup counts: an SSH session to the robot that drops while the nodes run in its foreground
    # sends them SIGHUP, whose default ends the controller without its parting damping command.
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, *stop_signals())}
    try:
        try:
            node = factory()
        except (NodeConfigError, ValueError, *errors) as exc:
            print(f"{name}: error: {exc}", file=sys.stderr)
            rclpy.shutdown()
            return 2
        except InvalidParameterTypeException as exc:
            # `max_tilt:=1` on a command line, `max_tilt: 1` in a YAML file: ROS will not read an integer
            # as a double (nor 15.0 as an integer), and said so in a traceback.
            text = str(exc)
            hint = (" (a DOUBLE parameter needs a decimal point: 1.0, not 1)" if "expecting type 'DOUBLE'" in text
                    else " (an INTEGER parameter takes a whole number: 15, not 15.0)"
                    if "expecting type 'INTEGER'" in text else "")
            print(f"{name}: error: {text}{hint}", file=sys.stderr)
            rclpy.shutdown()
            return 2
        try:
            check_started(node, sys.argv if args is None else args)
        except NodeConfigError as exc:
            print(f"{name}: error: {exc}", file=sys.stderr)
            if (close := getattr(node, "close", None)) is not None:  # what the node opened (a device, a thread)
                close()
            node.destroy_node()
            rclpy.shutdown()
            return 2
        if transport.shared_memory:  # two call sites: rclpy refuses two severities from one
            node.get_logger().warning(transport.note)
        else:
            node.get_logger().debug(transport.note)
        executor = MultiThreadedExecutor(num_threads=threads) if threads > 1 else SingleThreadedExecutor()
        executor.add_node(node)
        try:
            while not stop.is_set() and rclpy.ok():
                executor.spin_once(timeout_sec=_STOP_POLL_S)
        except ExternalShutdownException:  # the context was shut down from outside; our handlers never raise
            pass
        finally:
            close = getattr(node, "close", None)
            if close is not None:
                close()
            node.destroy_node()
            if rclpy.ok():
                rclpy.shutdown()
        return 0
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


SIM_TIME_REFUSED = ("use_sim_time is not supported: the control loop, its watchdog and the recorder's timeouts run on "
                    "this computer's clock, and under a simulated clock they wait for a /clock (the controller "
                    "stopped ticking, holding the motors' last targets, with nothing said)")


def check_started(node: Node, argv: Sequence[str] = ()) -> None:
    """What every node refuses once it has declared its parameters: a simulated clock (at start and when set
    at run time), and parameters given that it does not have (a misspelt `max_tlit:=0.5` was ignored,
    unseen, and the default limit kept). Parameters given only in a section for many nodes (`/**:` of a
    file in `argv`'s --params-file) are left to the nodes that have them."""
    if node.get_parameter("use_sim_time").value:
        raise NodeConfigError(SIM_TIME_REFUSED)

    def refuse_sim_time(params: list) -> SetParametersResult:
        if any(p.name == "use_sim_time" and p.value for p in params):
            return SetParametersResult(successful=False, reason=SIM_TIME_REFUSED)
        return SetParametersResult(successful=True)

    node.add_on_set_parameters_callback(refuse_sim_time)  # runs before rclpy's own, which would switch clocks
    # rclpy keeps the overrides a node was started with (-p, parameter files) but has no public accessor; pinned.
    given = getattr(node, "_parameter_overrides", {})
    unknown = sorted(name for name in given if not node.has_parameter(name))
    if unknown:
        unknown = [u for u in unknown if u not in _left_to_other_nodes(node.get_name(), argv)]
    if unknown:
        rclpys_own = ("use_sim_time", "start_type_description_service")
        declared = sorted(n for n in node._parameters if n not in rclpys_own)  # noqa: SLF001 - as above
        hints = [f"{u} (did you mean {close[0]}?)" if (close := difflib.get_close_matches(u, declared, 1)) else u
                 for u in unknown]
        raise NodeConfigError(f"unknown parameter(s) {', '.join(hints)}: {node.get_name()} has "
                              f"{', '.join(declared)}")


def _left_to_other_nodes(node: str, argv: Sequence[str]) -> set[str]:
    """Parameters given in --params-file sections shared by many nodes and nowhere for `node` alone (not
    with -p either): another node's, not a misspelling of this one's."""
    given, files = [], []
    ros_args, words = False, iter(argv)
    for word in words:
        if word == "--ros-args":
            ros_args = True
        elif word == "--":
            ros_args = False
        elif ros_args and word in ("-p", "--param"):
            given.append(next(words, "").split(":=", 1)[0])
        elif ros_args and word == "--params-file":
            files.append(next(words, ""))
    parsed = []
    for path in files:
        try:
            with open(path) as f:
                parsed.append(yaml.safe_load(f))
        except (OSError, yaml.YAMLError):
            continue  # rcl read it before the node started, or refused it there
    return shared_only(parsed, node) - set(given)
