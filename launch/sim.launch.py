"""ros2 launch uni_o4_ros sim.launch.py policy_dir:=/path/to/policy [sim_process:=true] [deterministic:=false]

The node suite against the simulated Go1: by default the pd_controller's `sim` backend steps MuJoCo
in-process in lockstep; with sim_process:=true the go1_sim node runs MuJoCo as its own process and
the controller talks to it over low_cmd / low_state, as it would to the robot's motor boards.
Parameters: config/sim.yaml. Without ROS installed, `uni-o4 bringup --sim` starts the same nodes
with the same file."""

import os

import yaml
from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PythonExpression
from launch_ros.actions import Node

from launch import LaunchDescription
from uni_o4_ros.nodes.parameters_file import node_parameters


def generate_launch_description(config: str = "sim.yaml") -> LaunchDescription:
    params = os.path.join(get_package_share_directory("uni_o4_ros"), "config", config)
    with open(params) as f:  # the file's value is the default, so the launch argument cannot silently undo an edit
        explore = not node_parameters(yaml.safe_load(f), "policy").get("deterministic", True)
    policy_dir = LaunchConfiguration("policy_dir")
    sim_process = LaunchConfiguration("sim_process")
    backend = PythonExpression(["'go1_sim' if '", sim_process, "' == 'true' else 'sim'"])
    nodes = [
        ("pd_controller_node", "pd_controller", [{"backend": backend}] if config == "sim.yaml" else []),
        ("policy_node", "policy", [{"policy_dir": policy_dir, "deterministic": LaunchConfiguration("deterministic")}]),
        ("episode_recorder_node", "episode_recorder", []),
        ("dataset_logger_node", "dataset_logger", []),
    ]
    if config != "sim.yaml":  # on the robot the T265 reports the base pose; in simulation MuJoCo does
        nodes.append(("odometry_node", "odometry", []))
    return LaunchDescription([
        DeclareLaunchArgument("policy_dir", description="saved policy folder"),
        DeclareLaunchArgument("deterministic", default_value="false" if explore else "true",
                              description="false: the policy samples its actions (online learning needs it)"),
        DeclareLaunchArgument("sim_process", default_value="false",
                              description="run MuJoCo as the go1_sim node instead of inside pd_controller"),
        Node(package="uni_o4_ros", executable="go1_sim_node", name="go1_sim", parameters=[params], output="screen",
             condition=IfCondition(sim_process)),
        *[Node(package="uni_o4_ros", executable=exe, name=name, parameters=[params, *extra], output="screen")
          for exe, name, extra in nodes],
    ])
