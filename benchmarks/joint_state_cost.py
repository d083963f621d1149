"""What publishing sensor_msgs/JointState costs the controller's 50 Hz tick: the time of
JointStatePublisher.publish (fill the message from the robot state, serialize, send) per call, with no
reader, and with a reliable reader in another process (as robot_state_publisher or rviz would be), beside
the RobotState the tick already builds and publishes, for scale. The state is a real MuJoCo Go1 state.

    python benchmarks/joint_state_cost.py --calls 5000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from uni_o4_ros.nodes.dds_transport import own_local_graph  # noqa: E402
from uni_o4_ros.nodes.processes import stop_processes  # noqa: E402

READER = """import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from uni_o4_ros.msg import RobotState
rclpy.init()
node = rclpy.create_node("joint_state_reader")
qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
heard = set()
def first(topic):
    def on(_m):
        if topic not in heard:
            heard.add(topic)
            print(topic, flush=True)
    return on
node.create_subscription(JointState, "joint_states", first("joint_states"), qos)
node.create_subscription(RobotState, "robot_state", first("robot_state"),
                         QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT))
rclpy.spin(node)
"""


def timed(fn, calls: int) -> dict:
    t = np.empty(calls)
    for i in range(calls):
        start = time.perf_counter()
        fn()
        t[i] = time.perf_counter() - start
        time.sleep(0.001)  # pacing: about 1 kHz, so a reader keeps up as it would at 50 Hz
    us = t * 1e6
    return {"median_us": round(float(np.median(us)), 1), "p99_us": round(float(np.percentile(us, 99)), 1),
            "max_us": round(float(us.max()), 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=5000)
    ap.add_argument("--out", help="write the result as JSON here")
    args = ap.parse_args()
    os.environ.update(own_local_graph(os.environ, int(os.environ.get("ROS_DOMAIN_ID", "77"))))

    import rclpy

    from uni_o4_ros.msg import RobotState
    from uni_o4_ros.nodes.go1_sim_node import robot_state
    from uni_o4_ros.nodes.joint_states import JointStatePublisher
    from uni_o4_ros.nodes.qos import SENSOR
    from uni_o4_ros.sim.go1_sim import Go1Sim

    state = Go1Sim().state()
    rclpy.init()
    node = rclpy.create_node("joint_state_cost")
    joints = JointStatePublisher(node)
    states = node.create_publisher(RobotState, "robot_state", SENSOR)
    clock = node.get_clock()

    def joint_state() -> None:
        joints.publish(state, clock.now().to_msg())

    def robot_state_msg() -> None:
        states.publish(robot_state(state, clock.now().to_msg()))

    result = {"calls": args.calls, "no_reader": {"joint_state": timed(joint_state, args.calls),
                                                 "robot_state": timed(robot_state_msg, args.calls)}}
    reader = subprocess.Popen([sys.executable, "-c", READER], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)
    try:
        heard: set[str] = set()
        threading.Thread(target=lambda: heard.update(line.strip() for line in reader.stdout), daemon=True).start()
        while heard != {"joint_states", "robot_state"}:  # publish until the reader has matched both
            joint_state()
            robot_state_msg()
            rclpy.spin_once(node, timeout_sec=0.01)
            if reader.poll() is not None:
                raise SystemExit("the reader process ended")
        result["reliable_reader"] = {"joint_state": timed(joint_state, args.calls),
                                     "robot_state": timed(robot_state_msg, args.calls)}
    finally:
        node.destroy_node()
        rclpy.shutdown()
        stop_processes(reader)
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
