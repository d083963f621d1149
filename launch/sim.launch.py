"""ros2 launch uni_o4_ros sim.launch.py policy_dir:=/path/to/policy [sim_process:=true] [deterministic:=false]
    [params_file:=my.yaml] [namespace:=robot1] [log_level:=debug]

The node suite against the simulated Go1: by default the pd_controller's `sim` backend steps MuJoCo
in-process in lockstep; with sim_process:=true the go1_sim node runs MuJoCo as its own process and
the controller talks to it over low_cmd / low_state, as it would to the robot's motor boards.
Parameters: config/sim.yaml (params_file). Without ROS installed, `uni-o4 bringup --sim` starts the same
nodes with the same file."""

import importlib.util
import os

from launch.actions import DeclareLaunchArgument, OpaqueFunction

from launch import LaunchDescription

_spec = importlib.util.spec_from_file_location("uni_o4_launch_suite", os.path.join(os.path.dirname(__file__),
                                                                                   "_suite.py"))
suite = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(suite)


def _simulated(context) -> list:
    split = suite.flag(context, "sim_process")
    return [*([suite.node(context, "go1_sim_node", "go1_sim")] if split else []),
            *suite.suite_nodes(context, {"backend": "go1_sim" if split else "sim"})]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        *suite.standard_arguments("sim.yaml"),
        *suite.policy_arguments(),
        DeclareLaunchArgument("sim_process", default_value="false",
                              description="run MuJoCo as the go1_sim node instead of inside pd_controller"),
        OpaqueFunction(function=_simulated),
    ])
