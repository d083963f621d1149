"""Does a stopped reliable reader (an rviz frozen on a laptop, a plotjuggler in a debugger) stall the
controller's 50 Hz loop? odom and joint_states are published reliable keep-last (uni_o4_ros/nodes/qos.py,
RELIABLE_STREAM): a Fast DDS writer with keep-last history drops its oldest unacknowledged sample when
its history is full instead of waiting for the reader, so it should not.

pd_controller (MuJoCo Go1 backend, no policy: it damps and still publishes every tick) runs as a process;
a reader process subscribes reliable to odom and joint_states and is SIGSTOPped for `--stop` seconds,
then continued. Reported per phase (before, stopped, after): the largest and 99th-percentile gap between
consecutive robot_state stamps (the controller's own clock at each tick; a blocked publish delays the
next tick), and how many robot_state samples arrived.

    python benchmarks/slow_reader.py --stop 10 --out benchmarks/results/slow_reader.json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from uni_o4_ros.nodes.dds_transport import own_local_graph  # noqa: E402
from uni_o4_ros.nodes.processes import node_command, stop_processes  # noqa: E402

READER = """import sys
import rclpy
from nav_msgs.msg import Odometry
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
rclpy.init()
node = rclpy.create_node("slow_reader")
qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
heard = set()
def first(topic):
    def on(_m):
        if topic not in heard:
            heard.add(topic)
            print(topic, flush=True)
    return on
types = {"odom": Odometry, "joint_states": JointState}
for topic in sys.argv[1:]:
    node.create_subscription(types[topic], topic, first(topic), qos)
rclpy.spin(node)
"""
TOPICS = ("odom", "joint_states")


def gaps(stamps: list[float]) -> dict:
    d = np.diff(np.asarray(stamps)) * 1000.0
    if len(d) == 0:
        return {"samples": len(stamps)}
    return {"samples": len(stamps), "max_gap_ms": round(float(d.max()), 1),
            "p99_gap_ms": round(float(np.percentile(d, 99)), 1), "median_gap_ms": round(float(np.median(d)), 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stop", type=float, default=10.0, help="seconds the reader is stopped")
    ap.add_argument("--phase", type=float, default=5.0, help="seconds measured before and after")
    ap.add_argument("--control", action="store_true", help="leave the reader running (the machine's own jitter)")
    ap.add_argument("--out", help="write the result as JSON here")
    args = ap.parse_args()
    os.environ.update(own_local_graph(os.environ, int(os.environ.get("ROS_DOMAIN_ID", "77"))))

    import rclpy

    from uni_o4_ros.msg import RobotState
    from uni_o4_ros.nodes.qos import SENSOR

    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    ctrl = subprocess.Popen(node_command("pd_controller_node", []), cwd=ROOT, **quiet)
    reader = subprocess.Popen([sys.executable, "-c", READER, *TOPICS], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)
    rclpy.init()
    node = rclpy.create_node("slow_reader_bench")
    stamps: list[float] = []
    node.create_subscription(RobotState, "robot_state",
                             lambda m: stamps.append(m.header.stamp.sec + 1e-9 * m.header.stamp.nanosec), SENSOR)
    result: dict = {}
    try:
        heard = {reader.stdout.readline().strip() for _ in TOPICS}  # the reader hears every stream
        assert heard == set(TOPICS), heard

        def phase(seconds: float) -> dict:
            n, end = len(stamps), time.monotonic() + seconds
            while time.monotonic() < end:
                rclpy.spin_once(node, timeout_sec=0.05)
            return gaps(stamps[n:])

        result["before"] = phase(args.phase)
        if not args.control:
            reader.send_signal(signal.SIGSTOP)
        result["reader_running" if args.control else "reader_stopped"] = phase(args.stop)
        reader.send_signal(signal.SIGCONT)
        result["after"] = phase(args.phase)
    finally:
        node.destroy_node()
        rclpy.shutdown()
        stop_processes(reader, ctrl)
    result["stop_s"], result["topics"] = args.stop, list(TOPICS)
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
