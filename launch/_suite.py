"""What the launch files share; not a launch file itself (launch/ is no Python package: each launch file
loads this one by its path, `load_suite`). The arguments every launch file takes:

  params_file  the ROS parameters file every node reads (default: the launch file's own, in config/)
  namespace    the nodes' namespace, and so their relative topics' (default: none)
  log_level    the nodes' log level: debug, info, warn, error or fatal (default: info)

how a node is started with them, and the four nodes the simulator's and the robot's graphs share. Values
are read at launch time (in an OpaqueFunction), so a policy argument left unset keeps the parameters
file's value instead of overriding it with a default."""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def standard_arguments(config: str) -> list:
    default = os.path.join(get_package_share_directory("uni_o4_ros"), "config", config)
    return [
        DeclareLaunchArgument("params_file", default_value=default,
                              description=f"ROS parameters file of every node (default: the package's "
                                          f"config/{config})"),
        DeclareLaunchArgument("namespace", default_value="",
                              description="namespace of every node and of its relative topics ('': none)"),
        DeclareLaunchArgument("log_level", default_value="info",
                              description="log level of every node: debug, info, warn, error or fatal"),
    ]


def value(context, name: str) -> str:
    return LaunchConfiguration(name).perform(context)


def flag(context, name: str) -> bool:
    """A true/false launch argument, read as launch's IfCondition reads one."""
    text = value(context, name).strip().lower()
    if text not in ("true", "1", "false", "0"):
        raise ValueError(f"launch argument {name} must be true or false, got {text!r}")
    return text in ("true", "1")


def node(context, executable: str, name: str, overrides: dict | None = None) -> Node:
    """One node of the package: the parameters file, then `overrides`, in the namespace, at the log level."""
    return Node(package="uni_o4_ros", executable=executable, name=name, namespace=value(context, "namespace"),
                parameters=[value(context, "params_file"), *([overrides] if overrides else [])], output="screen",
                arguments=["--ros-args", "--log-level", value(context, "log_level")])


def policy_arguments() -> list:
    return [
        DeclareLaunchArgument("policy_dir", description="saved policy folder"),
        DeclareLaunchArgument("deterministic", default_value="",
                              description="true: the policy acts with its mean; false: it samples its actions "
                                          "(online learning needs it); '': the parameters file's value"),
    ]


def suite_nodes(context, controller: dict | None = None) -> list:
    """The four nodes of the simulator's and the robot's graphs: controller, policy, recorder, logger."""
    policy = {"policy_dir": LaunchConfiguration("policy_dir")}
    if value(context, "deterministic"):  # unset: the file's value, which a default here would silently undo
        policy["deterministic"] = LaunchConfiguration("deterministic")
    return [node(context, "pd_controller_node", "pd_controller", controller),
            node(context, "policy_node", "policy", policy),
            node(context, "episode_recorder_node", "episode_recorder"),
            node(context, "dataset_logger_node", "dataset_logger")]
