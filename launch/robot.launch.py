"""ros2 launch uni_o4_ros robot.launch.py policy_dir:=/path/to/policy  (on the Go1's computer)

Same graph as sim.launch.py with config/robot.yaml (Unitree SDK backend)."""

import importlib.util
import os

_spec = importlib.util.spec_from_file_location("sim_launch", os.path.join(os.path.dirname(__file__), "sim.launch.py"))
_sim = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_sim)


def generate_launch_description():
    return _sim.generate_launch_description("robot.yaml")
