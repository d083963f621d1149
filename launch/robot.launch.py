"""ros2 launch uni_o4_ros robot.launch.py policy_dir:=/path/to/policy [deterministic:=false]  (on the Go1)

Same graph as sim.launch.py with config/robot.yaml: the pd_controller drives the Go1 through the Unitree
SDK (backend unitree_sdk, low-level UDP to 192.168.123.10:8007), and the odometry node reads the T265.
Put the robot in low-level mode first (remote: L2+A, L2+A, L2+B, L1+L2+start) and hang it or lay it down:
the controller damps until a fresh policy command arrives. For online learning (learning.launch.py
beside it) the policy must explore: deterministic:=false."""

import importlib.util
import os

_spec = importlib.util.spec_from_file_location("sim_launch", os.path.join(os.path.dirname(__file__), "sim.launch.py"))
_sim = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_sim)


def generate_launch_description():
    return _sim.generate_launch_description("robot.yaml")
