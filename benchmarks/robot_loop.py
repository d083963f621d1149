"""Robot-side timings: policy inference latency, hot-swap cost and latency, controller tick jitter
over a real-time run of the node graph, and Transition throughput at 50 Hz x 8 robots.

    python benchmarks/robot_loop.py --run-seconds 600 --out benchmarks/results/robot_loop.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from uni_o4_ros.learning.normalizer import StateNormalizer  # noqa: E402
from uni_o4_ros.learning.offline import save_policy  # noqa: E402
from uni_o4_ros.learning.policy import make_policy  # noqa: E402
from uni_o4_ros.nodes.dds_transport import own_local_graph  # noqa: E402
from uni_o4_ros.robot.go1 import DEFAULT_Q  # noqa: E402
from uni_o4_ros.robot.policy_runner import PolicyRunner  # noqa: E402
from uni_o4_ros.robot.policy_update import encode_update, load_update_key  # noqa: E402


def robot_policy():
    # Table 5: 512-256-128 for quadrupeds; ELU as in walk-these-ways
    return make_policy(290, 12, hidden=(512, 256, 128), activation="elu", mean_activation="none")


def inference_and_swap(n: int = 3000) -> dict:
    torch.manual_seed(0)
    norm = StateNormalizer(np.zeros(290), np.ones(290))
    runner = PolicyRunner(robot_policy(), norm, version=1)
    quat, q, dq = np.array([1.0, 0, 0, 0]), DEFAULT_Q.copy(), np.zeros(12)
    for _ in range(100):
        runner.tick(quat, q, dq)
    lat = []
    for _ in range(n):
        t0 = time.perf_counter()
        runner.tick(quat, q, dq)
        lat.append(time.perf_counter() - t0)
    verify, swap_ticks = {"": [], "_signed": []}, []
    # The same checks without a key and with one (HMAC-SHA256 over the update, the nodes' default since 2026-12-06).
    for suffix, key in (("", None), ("_signed", b"benchmark key")):
        runner = PolicyRunner(robot_policy(), norm, version=1, key=key)
        for _ in range(300):  # a full history of recent states, which the update's shift is measured on
            runner.tick(quat, q, dq)
        for v in range(2, 52):
            msg = encode_update(robot_policy(), norm, v, key=key, session=runner.session)
            t0 = time.perf_counter()
            verdict = runner.offer(msg["version"], msg["sha256"], msg["safetensors"], msg["spec_json"],
                                   msg["signature"], msg["session"])
            verify[suffix].append(time.perf_counter() - t0)
            assert verdict.accepted, verdict.reason
            ticks = 0
            while True:
                ticks += 1
                if runner.tick(quat, q, dq).policy_version == v:
                    break
            swap_ticks.append(ticks)
    lat_ms = np.array(lat) * 1e3
    return {"inference_p50_ms": float(np.percentile(lat_ms, 50)), "inference_p99_ms": float(np.percentile(lat_ms, 99)),
            **{f"update_verify{s}_p50_ms": float(np.median(t) * 1e3) for s, t in verify.items()},
            **{f"update_verify{s}_max_ms": float(np.max(t) * 1e3) for s, t in verify.items()},
            "update_bytes": len(msg["safetensors"]), "ticks_until_new_version_max": int(max(swap_ticks))}


def realtime_loop(seconds: float, swaps: int = 10) -> dict:
    """pd_controller + policy as processes; jitter from the controller's RobotState stamps. During
    the run `swaps` PolicyUpdates are published over DDS; the hot-swap latency is the time from
    publishing one to the first JointCommand that carries its version."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticStatus

    from uni_o4_ros.msg import JointCommand, PolicyUpdate, RobotState
    from uni_o4_ros.nodes.qos import COMMAND, POLICY_SESSION, POLICY_UPDATE, SENSOR

    tmp = Path(tempfile.mkdtemp())
    torch.manual_seed(0)
    pol = robot_policy()
    with torch.no_grad():
        pol.body.net[-1].weight.zero_()
        pol.body.net[-1].bias.zero_()
    save_policy(tmp / "pol", "policy", pol, StateNormalizer(np.zeros(290), np.ones(290)))
    env = own_local_graph(os.environ, 150 + os.getpid() % 50)  # loopback UDP, as the nodes choose it
    procs = [subprocess.Popen([sys.executable, "-m", f"uni_o4_ros.nodes.{m}", "--ros-args", *a], env=env, cwd=ROOT)
             for m, a in (("pd_controller_node", []), ("policy_node", ["-p", f"policy_dir:={tmp / 'pol'}"]))]
    os.environ.update(env)
    rclpy.init()
    node = rclpy.create_node("bench")
    stamps, modes = [], []

    def on_state(m):
        stamps.append(m.header.stamp.sec + 1e-9 * m.header.stamp.nanosec)
        modes.append(m.mode)

    node.create_subscription(RobotState, "robot_state", on_state, SENSOR)
    first_seen: dict[int, float] = {}

    def on_command(m):
        first_seen.setdefault(int(m.policy_version), time.monotonic())

    node.create_subscription(JointCommand, "joint_command", on_command, COMMAND)
    upd_pub = node.create_publisher(PolicyUpdate, "policy_update", POLICY_UPDATE)
    sessions: list = []  # the policy node run's, which updates are signed for (as a learner does)
    node.create_subscription(DiagnosticStatus, "policy_session", sessions.append, POLICY_SESSION)
    published: dict[int, float] = {}
    try:
        while not modes or modes[-1] != 1 or not sessions:
            rclpy.spin_once(node, timeout_sec=0.1)
        session = next(kv.value for kv in sessions[-1].values if kv.key == "session")
        start = len(stamps)
        t_start = time.monotonic()
        end = t_start + seconds
        next_swap = 1
        while time.monotonic() < end:
            if next_swap <= swaps and time.monotonic() - t_start > next_swap * seconds / (swaps + 1):
                fields = encode_update(pol, StateNormalizer(np.zeros(290), np.ones(290)), next_swap,
                                       key=load_update_key("auto")[0], session=session)  # the node's own key
                published[next_swap] = time.monotonic()
                upd_pub.publish(PolicyUpdate(**fields))
                next_swap += 1
            rclpy.spin_once(node, timeout_sec=0.01)
    finally:
        node.destroy_node()
        rclpy.shutdown()
        for p in procs:
            p.terminate()
            p.wait(timeout=10)
    dt = np.diff(np.array(stamps[start:])) * 1e3
    active = np.array(modes[start:])
    swap_ms = [1e3 * (first_seen[v] - t) for v, t in published.items() if v in first_seen]
    return {"loop_seconds": seconds, "ticks": int(len(dt) + 1), "tick_period_p50_ms": float(np.median(dt)),
            "tick_jitter_p99_ms": float(np.percentile(np.abs(dt - 20.0), 99)),
            "missed_deadlines_gt_30ms": int((dt > 30.0).sum()), "ticks_not_active": int((active != 1).sum()),
            "swaps_published": len(published), "swaps_applied": len(swap_ms),
            "swap_latency_p50_ms": float(np.median(swap_ms)) if swap_ms else None,
            "swap_latency_max_ms": float(np.max(swap_ms)) if swap_ms else None}


def transition_throughput(seconds: float, robots: int = 8) -> dict:
    code = r"""
import os, sys, time, rclpy
from uni_o4_ros.msg import Transition
from uni_o4_ros.nodes.qos import TRANSITIONS
rclpy.init(); n = rclpy.create_node("robot_%s" % sys.argv[1])
pub = n.create_publisher(Transition, "transitions", TRANSITIONS)
while pub.get_subscription_count() == 0:
    rclpy.spin_once(n, timeout_sec=0.05)
t0 = time.monotonic(); k = 0
while time.monotonic() - t0 < float(sys.argv[2]):
    k += 1; m = Transition(episode_id=int(sys.argv[1]), step=k, observation=[0.1] * 290, next_observation=[0.1] * 290,
                           action=[0.0] * 12)
    pub.publish(m); time.sleep(max(0.0, t0 + k * 0.02 - time.monotonic()))
print(k, flush=True); time.sleep(2.0)
"""
    import rclpy

    from uni_o4_ros.msg import Transition
    from uni_o4_ros.nodes.qos import TRANSITIONS

    env = own_local_graph(os.environ, 200 + os.getpid() % 30)  # loopback UDP, as the nodes choose it
    os.environ.update(env)
    rclpy.init()
    node = rclpy.create_node("logger_bench")
    got: dict[int, set] = {}
    node.create_subscription(Transition, "transitions", lambda m: got.setdefault(m.episode_id, set()).add(m.step),
                             TRANSITIONS)
    procs = [subprocess.Popen([sys.executable, "-c", code, str(i), str(seconds)], env=env, cwd=ROOT,
                              stdout=subprocess.PIPE, text=True) for i in range(robots)]
    while any(p.poll() is None for p in procs):
        rclpy.spin_once(node, timeout_sec=0.05)
    end = time.monotonic() + 3
    while time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.05)
    sent = {i: int(p.stdout.read().split()[0]) for i, p in enumerate(procs)}
    node.destroy_node()
    rclpy.shutdown()
    recv = sum(len(got.get(i, ())) for i in sent)
    return {"robots": robots, "rate_hz": 50, "sent": sum(sent.values()), "received": recv,
            "lost": sum(sent.values()) - recv}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-seconds", type=float, default=600)
    ap.add_argument("--throughput-seconds", type=float, default=60)
    ap.add_argument("--out")
    args = ap.parse_args()
    res = {**inference_and_swap(), **realtime_loop(args.run_seconds),
           **transition_throughput(args.throughput_seconds), "load_average_1min": os.getloadavg()[0]}
    print(json.dumps(res, indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
