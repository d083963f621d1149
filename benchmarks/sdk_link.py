"""The pd_controller's two links to a robot, side by side in one run: the Go1 through the Unitree SDK
(`unitree_sdk` backend: robot_interface over UDP to the stand-in Go1) and the go1_sim node over DDS
topics (`go1_sim` backend). Both remotes are MuJoCo Go1 processes stepping one 20 ms tick per
command, so the difference is the transport and its encoding.

Per 50 Hz tick: the CPU time the controller's thread spends on the link (send the command, take in,
decode and convert the state it produced; waiting is not counted: the SDK is polled every 0.2 ms with a
sleep between polls, DDS waits in the executor) and the round trip from sending a command to holding the
state it produced.

    python benchmarks/sdk_link.py --ticks 1500 --out benchmarks/results/sdk_link.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from uni_o4_ros.nodes.dds_transport import own_local_graph  # noqa: E402
from uni_o4_ros.robot.go1 import DEFAULT_Q  # noqa: E402
from uni_o4_ros.robot.safety import MotorCommand  # noqa: E402
from uni_o4_ros.sim.go1_udp_robot import free_udp_ports  # noqa: E402

PERIOD = 0.02
WARMUP = 100  # ticks left out of the statistics


def standing_command() -> MotorCommand:
    z = np.zeros(12, np.float32)
    return MotorCommand(q=DEFAULT_Q.copy(), dq=z, kp=np.full(12, 20.0, np.float32), kd=np.full(12, 0.5, np.float32),
                        tau=z)


def summary(name: str, cpu: list[float], rtt: list[float], lost: int) -> dict:
    c, r = np.array(cpu) * 1e6, np.array(rtt) * 1e3
    return {"link": name, "ticks": len(cpu), "lost": lost,
            "cpu_per_tick_p50_us": float(np.median(c)), "cpu_per_tick_p99_us": float(np.percentile(c, 99)),
            "round_trip_p50_ms": float(np.median(r)), "round_trip_p99_ms": float(np.percentile(r, 99)),
            "round_trip_max_ms": float(r.max())}


def run_sdk(ticks: int) -> dict:
    from uni_o4_ros.hardware.unitree_sdk import UnitreeSdkBackend

    [port] = free_udp_ports()
    robot = subprocess.Popen([sys.executable, "-m", "uni_o4_ros.sim.go1_udp_robot", "--port", str(port)],
                             cwd=ROOT, stdout=subprocess.PIPE, text=True)
    robot.stdout.readline()  # "stand-in Go1 listening on ..."
    backend = UnitreeSdkBackend("127.0.0.1", port, 0, connect_timeout=10.0)
    cmd, cost, rtt, lost = standing_command(), [], [], 0
    try:
        while backend.read() is None:  # it sends damping once per read, as once per controller tick
            time.sleep(PERIOD)
        next_tick = time.perf_counter()
        for k in range(WARMUP + ticks):
            if k == WARMUP:  # every damping sent while the stand-in started has been answered by now
                cost, rtt, lost, first_received = [], [], 0, backend.received
            seen = backend.received
            c0, t0 = time.thread_time(), time.perf_counter()
            backend.write(cmd)
            backend.read()
            while backend.received == seen and time.perf_counter() - t0 < PERIOD:
                time.sleep(0.0002)
                backend.read()
            cost.append(time.thread_time() - c0)
            if backend.received == seen:
                lost += 1
            else:
                rtt.append(time.perf_counter() - t0)
            next_tick += PERIOD
            time.sleep(max(0.0, next_tick - time.perf_counter()))
        # one answer per command: no reply counted in a round trip belonged to an earlier command
        assert backend.received - first_received == ticks - lost, (backend.received - first_received, ticks)
    finally:
        backend.close()
        robot.terminate()
        robot.wait(timeout=10)
    return summary("unitree_sdk (UDP, SDK binary)", cost, rtt, lost)


def run_dds(ticks: int) -> dict:
    import rclpy

    from uni_o4_ros.nodes.pd_controller_node import TopicBackend

    env = own_local_graph(os.environ, 150 + os.getpid() % 50)
    sim = subprocess.Popen([sys.executable, "-m", "uni_o4_ros.nodes.go1_sim_node"], env=env, cwd=ROOT)
    os.environ.update(env)
    rclpy.init()
    node = rclpy.create_node("bench_link")
    backend = TopicBackend(node)
    cmd, cost, rtt, lost = standing_command(), [], [], 0
    try:
        while backend.read() is None:  # go1_sim announces its state twice a second until commanded
            rclpy.spin_once(node, timeout_sec=0.1)
        next_tick = time.perf_counter()
        for k in range(WARMUP + ticks):
            if k == WARMUP:
                cost, rtt, lost = [], [], 0
            seen = backend.read()
            c0, t0 = time.thread_time(), time.perf_counter()
            backend.write(cmd)
            while backend.read() is seen and time.perf_counter() - t0 < PERIOD:
                rclpy.spin_once(node, timeout_sec=0.002)  # the controller's executor delivers the state
            cost.append(time.thread_time() - c0)
            if backend.read() is seen:
                lost += 1
            else:
                rtt.append(time.perf_counter() - t0)
            next_tick += PERIOD
            time.sleep(max(0.0, next_tick - time.perf_counter()))
    finally:
        node.destroy_node()
        rclpy.shutdown()
        sim.terminate()
        sim.wait(timeout=10)
    return summary("go1_sim (DDS topics)", cost, rtt, lost)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ticks", type=int, default=1500, help="50 Hz ticks per link (default 1500: 30 s)")
    ap.add_argument("--out", help="JSON file for the results")
    a = ap.parse_args()
    rows = [run_sdk(a.ticks), run_dds(a.ticks)]
    for r in rows:
        print(json.dumps(r))
    if a.out:
        Path(a.out).write_text(json.dumps({"command": " ".join(sys.argv), "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
