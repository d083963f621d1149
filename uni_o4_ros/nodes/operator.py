"""The operator's e-stop from a terminal, for computers without ros2cli (`uni-o4 estop`): engage the
controller's e-stop, or re-arm it after a fall, an e-stop or a silent policy. A convenience, not a
safety device: on the robot the e-stop at hand is the Go1's own remote (L2+B, `remote_estop`)."""

from __future__ import annotations

import os

import rclpy
from rclpy.signals import SignalHandlerOptions
from std_srvs.srv import SetBool

from .dds_transport import without_shared_memory


class NoController(RuntimeError):
    """No pd_controller answered on `estop`."""


def call_estop(engage: bool, timeout: float = 5.0, service: str = "estop") -> tuple[bool, str]:
    """Ask the running pd_controller to engage (True) or release (False) its e-stop: (success, its
    message). Raises NoController when none answers within `timeout` seconds."""
    # The transport the nodes themselves use (run_node), so this client finds them wherever they run.
    os.environ.update(without_shared_memory(os.environ).settings)
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node("uni_o4_estop")
    try:
        client = node.create_client(SetBool, service)
        if not client.wait_for_service(timeout_sec=timeout):
            raise NoController(f"no pd_controller answered on /{service} within {timeout:g} s: is the suite "
                               "running, with this terminal's ROS_DOMAIN_ID?")
        future = client.call_async(SetBool.Request(data=engage))
        rclpy.spin_until_future_complete(node, future, timeout_sec=timeout)
        if not future.done():
            raise NoController(f"the pd_controller did not answer the e-stop request within {timeout:g} s")
        result = future.result()
        return bool(result.success), str(result.message)
    finally:
        node.destroy_node()
        rclpy.shutdown()
