"""How long one oversized PolicyUpdate from a process without the key holds up the policy node's executor,
which answers the controller's states (BENCHMARKS.md 4h). Three processes on a private domain: the real
policy node (the shipped go1_flat policy) with each `spin_once` of its executor timed, a stand-in controller
sending robot_state at 50 Hz and timing the answers, and the sender of one update of `--mb` MB of junk.

    python benchmarks/oversized_update.py --mb 256
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from uni_o4_ros.nodes.dds_transport import own_local_graph  # noqa: E402

POLICY = """import sys, time, rclpy
from rclpy.executors import SingleThreadedExecutor
from uni_o4_ros.nodes.policy_node import PolicyNode
rclpy.init(args=["--ros-args", "-p", "policy_dir:=uni_o4_ros/sim/checkpoints/go1_flat"])
node = PolicyNode(); ex = SingleThreadedExecutor(); ex.add_node(node)
end, blocked = time.monotonic() + float(sys.argv[1]), []
while time.monotonic() < end:
    a = time.monotonic(); ex.spin_once(timeout_sec=0.005); d = time.monotonic() - a
    if d > 0.03: blocked.append(round(1000 * d))
print("policy executor: spin_once calls over 30 ms (ms):", blocked[1:], flush=True)  # [0]: start-up
node.close()
"""
CONTROLLER = """import sys, time, rclpy, numpy as np
from uni_o4_ros.msg import JointCommand, RobotState
from uni_o4_ros.nodes.qos import COMMAND, SENSOR
from uni_o4_ros.robot.go1 import DEFAULT_Q
rclpy.init(); n = rclpy.create_node("controller_standin")
pub = n.create_publisher(RobotState, "robot_state", SENSOR); sent, answers = {}, []
def on_cmd(m):
    k = m.header.stamp.sec * 10**9 + m.header.stamp.nanosec
    if k in sent: answers.append((time.monotonic(), time.monotonic() - sent.pop(k)))
n.create_subscription(JointCommand, "joint_command", on_cmd, COMMAND)
def tick():
    m = RobotState(mode=RobotState.MODE_ACTIVE, quaternion=[1.0, 0.0, 0.0, 0.0], q=DEFAULT_Q.tolist())
    now = time.time_ns(); m.header.stamp.sec, m.header.stamp.nanosec = divmod(now, 10**9)
    sent[now] = time.monotonic(); pub.publish(m)
n.create_timer(0.02, tick)
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end: rclpy.spin_once(n, timeout_sec=0.01)
t, lat = np.array([a for a, _ in answers]), np.array([b for _, b in answers])
print(f"answers {len(lat)}, max latency {1000 * lat.max():.0f} ms, longest gap between answers "
      f"{1000 * np.diff(t).max():.0f} ms", flush=True)
"""
SENDER = """import hashlib, os, sys, time, rclpy
from uni_o4_ros.msg import PolicyUpdate
from uni_o4_ros.nodes.qos import POLICY_UPDATE
rclpy.init(); n = rclpy.create_node("sender")
pub = n.create_publisher(PolicyUpdate, "policy_update", POLICY_UPDATE)
while pub.get_subscription_count() < 1: rclpy.spin_once(n, timeout_sec=0.1)
time.sleep(5)  # benchmark pacing: let the loop run undisturbed first
blob = os.urandom(1 << 20) * int(sys.argv[1])
msg = PolicyUpdate(version=10**9, sha256=hashlib.sha256(blob).hexdigest(), spec_json="{}", signature=b"\\0" * 32)
msg.safetensors = blob
pub.publish(msg)
end = time.monotonic() + 10
while time.monotonic() < end: rclpy.spin_once(n, timeout_sec=0.1)
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=256, help="size of the junk update (MB)")
    ap.add_argument("--seconds", type=float, default=25.0)
    a = ap.parse_args()
    env = own_local_graph(os.environ, int(os.environ.get("ROS_DOMAIN_ID", "94"))) | {"PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", code, arg], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)
             for code, arg in ((POLICY, str(a.seconds)), (CONTROLLER, str(a.seconds)), (SENDER, str(a.mb)))]
    for p in procs[:2]:
        print(p.communicate()[0].strip())
    procs[2].wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
