"""ros2 launch uni_o4_ros learning.launch.py policy_dir:=/path/to/offline/final [run_dir:=/data/learner]
    [hmac_key_file:=/path/to/policy_update.key] [params_file:=my.yaml] [namespace:=robot1] [log_level:=debug]

The online stage on the robot: the learner node trains PPO on the streamed Transitions of the
deployed policy and publishes every new version as a verified PolicyUpdate. Start it beside
robot.launch.py (or sim.launch.py) with the policy node exploring (`deterministic:=false`); the
learner uses no batch of mean actions, and says so. Its parameters: config/robot.yaml's learner section
(params_file; beside sim.launch.py, config/sim.yaml's is the same). Give it the namespace of the suite it
learns from.
A restarted learner resumes from run_dir. On another computer than the robot's, give it a copy of the
robot's update key: hmac_key_file:=/path/to/policy_update.key (the robot's ~/.config/uni_o4_ros/).
run_dir and hmac_key_file, unset, are the parameters file's (robot.yaml: runs/learner, auto): a default here
would override a params_file's own values. Unsigned updates ('') are set in the parameters file.
The offline stage runs as `uni-o4 offline` on the logged episode folder (`--init-policy` for the
online -> offline path of Eq. 25)."""

import importlib.util
import os

from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration

from launch import LaunchDescription

_spec = importlib.util.spec_from_file_location("uni_o4_launch_suite", os.path.join(os.path.dirname(__file__),
                                                                                   "_suite.py"))
suite = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(suite)


def _learner(context) -> list:
    overrides = {"policy_dir": LaunchConfiguration("policy_dir")}
    for name in ("run_dir", "hmac_key_file"):
        if suite.value(context, name):  # unset: the file's value, which a default here would silently undo
            overrides[name] = LaunchConfiguration(name)
    return [suite.node(context, "learner_node", "learner", overrides)]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        *suite.standard_arguments("robot.yaml"),
        DeclareLaunchArgument("policy_dir", description="initial policy folder (with V), e.g. an offline result"),
        DeclareLaunchArgument("run_dir", default_value="",
                              description="checkpoints; resume point ('': the parameters file's value)"),
        DeclareLaunchArgument("hmac_key_file", default_value="",
                              description="key that signs the updates: 'auto' (this computer's own; right when the "
                                          "learner runs on the robot's computer) or a copy of the robot's key file "
                                          "('': the parameters file's value)"),
        OpaqueFunction(function=_learner),
    ])
