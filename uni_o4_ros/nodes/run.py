"""The one way every node process starts and stops: configuration errors end with one line and
exit code 2; Ctrl-C, SIGTERM and an external shutdown end quietly."""

from __future__ import annotations

import sys
from collections.abc import Callable

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.node import Node


class NodeConfigError(RuntimeError):
    """A parameter or device problem a user must fix; reported as one line."""


def run_node(factory: Callable[[], Node], name: str, args: list[str] | None = None, threads: int = 1,
             errors: tuple[type[BaseException], ...] = ()) -> int:
    rclpy.init(args=args)
    try:
        node = factory()
    except (NodeConfigError, ValueError, *errors) as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        rclpy.shutdown()
        return 2
    executor = MultiThreadedExecutor(num_threads=threads) if threads > 1 else SingleThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        close = getattr(node, "close", None)
        if close is not None:
            close()
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0
