"""ros2 launch uni_o4_ros robot.launch.py policy_dir:=/path/to/policy [deterministic:=false]  (on the Go1)
    [params_file:=my.yaml] [namespace:=robot1] [log_level:=debug]

The graph of sim.launch.py with config/robot.yaml (params_file) and nothing of the simulator: the pd_controller
drives the Go1 through the Unitree SDK (backend unitree_sdk, low-level UDP to 192.168.123.10:8007), and the
odometry node reads the T265. Put the robot in low-level mode first (remote: L2+A, L2+A, L2+B, L1+L2+start)
and hang it or lay it down: the controller starts e-stopped (start_latched) and damps until you re-arm it
(estop service or the remote), then follows the policy. For online learning
(learning.launch.py beside it) the policy must explore: deterministic:=false."""

import importlib.util
import os

from launch.actions import OpaqueFunction

from launch import LaunchDescription

_spec = importlib.util.spec_from_file_location("uni_o4_launch_suite", os.path.join(os.path.dirname(__file__),
                                                                                   "_suite.py"))
suite = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(suite)


def _robot(context) -> list:
    # The controller's backend is robot.yaml's (unitree_sdk); the T265 reports the base pose.
    return [*suite.suite_nodes(context), suite.node(context, "odometry_node", "odometry")]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        *suite.standard_arguments("robot.yaml"),
        *suite.policy_arguments(),
        OpaqueFunction(function=_robot),
    ])
