"""ros2 launch uni_o4_ros sim.launch.py policy_dir:=/path/to/policy

The node suite against the simulated Go1 (the pd_controller's `sim` backend steps MuJoCo in
lockstep). Parameters: config/sim.yaml. Without ROS installed, `uni-o4 bringup --sim` starts the
same nodes with the same file."""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription


def generate_launch_description(config: str = "sim.yaml") -> LaunchDescription:
    params = os.path.join(get_package_share_directory("uni_o4_ros"), "config", config)
    policy_dir = LaunchConfiguration("policy_dir")
    nodes = [
        ("pd_controller_node", "pd_controller", []),
        ("policy_node", "policy", [{"policy_dir": policy_dir}]),
        ("episode_recorder_node", "episode_recorder", []),
        ("dataset_logger_node", "dataset_logger", []),
    ]
    return LaunchDescription([
        DeclareLaunchArgument("policy_dir", description="saved policy folder"),
        *[Node(package="uni_o4_ros", executable=exe, name=name, parameters=[params, *extra], output="screen")
          for exe, name, extra in nodes],
    ])
