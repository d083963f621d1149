"""ros2 launch uni_o4_ros learning.launch.py policy_dir:=/path/to/offline/final run_dir:=/data/learner

The online stage on the robot: the learner node trains PPO on the streamed Transitions of the
deployed policy and publishes every new version as a verified PolicyUpdate. Start it beside
robot.launch.py (or sim.launch.py) with the policy node exploring (`deterministic:=false`); the
learner uses no batch of mean actions, and says so.
A restarted learner resumes from run_dir. On another computer than the robot's, give it a copy of the
robot's update key: hmac_key_file:=/path/to/policy_update.key (the robot's ~/.config/uni_o4_ros/).
The offline stage runs as `uni-o4 offline` on the logged episode folder (`--init-policy` for the
online -> offline path of Eq. 25)."""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription


def generate_launch_description() -> LaunchDescription:
    params = os.path.join(get_package_share_directory("uni_o4_ros"), "config", "sim.yaml")
    return LaunchDescription([
        DeclareLaunchArgument("policy_dir", description="initial policy folder (with V), e.g. an offline result"),
        DeclareLaunchArgument("run_dir", default_value="runs/learner", description="checkpoints; resume point"),
        DeclareLaunchArgument("hmac_key_file", default_value="auto",
                              description="key that signs the updates: 'auto' (this computer's own; right when the "
                                          "learner runs on the robot's computer) or a copy of the robot's key file"),
        Node(package="uni_o4_ros", executable="learner_node", name="learner", output="screen",
             parameters=[params, {"policy_dir": LaunchConfiguration("policy_dir"),
                                  "run_dir": LaunchConfiguration("run_dir"),
                                  "hmac_key_file": LaunchConfiguration("hmac_key_file")}]),
    ])
