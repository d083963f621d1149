"""How long the controller's loop stalls when the policy process is SIGKILLed beside it, with Fast DDS
shared memory (what rmw_fastrtps gives ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST) and with the UDP
transport the nodes choose for themselves (uni_o4_ros/nodes/dds_transport.py), kills interleaved so
both see the same machine load.

Each kill: pd_controller (MuJoCo Go1, 50 Hz, watchdog 0.1 s) and policy_node run as processes; once
50 ACTIVE states arrived the policy gets SIGKILL. Reported per transport: the largest gap between
consecutive robot_state stamps after the kill (the controller's tick is blocked for that long: with
the real robot the motors hold the last target meanwhile), and how long after the kill damping began.

    python benchmarks/peer_crash.py --kills 30 --load --out benchmarks/results/peer_crash.json
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from uni_o4_ros.nodes.dds_transport import own_local_graph  # noqa: E402
from uni_o4_ros.nodes.processes import node_command, stop_processes  # noqa: E402

# A profile of the user's own keeps the nodes' hands off the transport; with LOCALHOST discovery
# rmw_fastrtps then adds shared memory, as it does for any ROS 2 process started that way.
_BUILTIN_PROFILE = """<?xml version="1.0" encoding="UTF-8" ?>
<dds xmlns="http://www.eprosima.com"><profiles>
  <participant profile_name="builtin" is_default_profile="true"><rtps/></participant>
</profiles></dds>
"""
_HOG = """import sys, time, torch
torch.set_num_threads(2)
a = torch.randn(512, 512)
while True:
    a = torch.tanh(a @ a.T / 512)
"""


def _standing_policy(directory: Path) -> Path:
    import torch

    from uni_o4_ros.learning.normalizer import StateNormalizer
    from uni_o4_ros.learning.offline import save_policy
    from uni_o4_ros.learning.policy import make_policy

    pol = make_policy(290, 12, hidden=(16,), mean_activation="none")
    with torch.no_grad():
        for p in pol.parameters():
            p.zero_()
    save_policy(directory, "policy", pol, StateNormalizer(np.zeros(290), np.ones(290)))
    return directory


def trial(policy_dir: str) -> dict:
    """One kill, in this process's ROS environment (set by the caller)."""
    import rclpy

    from uni_o4_ros.msg import RobotState
    from uni_o4_ros.nodes.qos import SENSOR

    def stamp(m) -> float:
        return m.header.stamp.sec + 1e-9 * m.header.stamp.nanosec

    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    ctrl = subprocess.Popen(node_command("pd_controller_node", ["watchdog_timeout:=0.1"]), **quiet)
    pol = subprocess.Popen(node_command("policy_node", [f"policy_dir:={policy_dir}"]), **quiet)
    rclpy.init()
    node = rclpy.create_node("peer_crash")
    states: list = []
    node.create_subscription(RobotState, "robot_state", lambda m: states.append((m, time.monotonic())), SENSOR)

    def spin_until(cond, timeout: float) -> None:
        end = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > end:
                raise TimeoutError("the node graph did not get there in time")
            rclpy.spin_once(node, timeout_sec=0.05)

    try:
        spin_until(lambda: sum(m.mode == 1 for m, _ in states) >= 50, 60)
        n = len(states)
        killed_at = time.monotonic()
        pol.kill()
        pol.wait(10)
        spin_until(lambda: sum(m.mode == 0 for m, _ in states[n:]) >= 60, 60)
        after = states[n - 1:]  # from the last state before the kill
        gaps = np.diff([stamp(m) for m, _ in after])
        first_damping = next(t for m, t in after if m.mode == 0)
        return {"max_tick_gap_s": float(gaps.max()), "damping_after_kill_s": first_damping - killed_at}
    finally:
        node.destroy_node()
        rclpy.shutdown()
        stop_processes(pol, ctrl)


def _environment(transport: str, domain: int, profile: Path) -> dict[str, str]:
    env = own_local_graph(os.environ, domain) | {"PYTHONUNBUFFERED": "1"}
    if transport == "shared_memory":  # LOCALHOST with a profile of the user's own: the nodes keep out
        env.update(ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", FASTDDS_DEFAULT_PROFILES_FILE=str(profile))
    return env


def _unmapped_fastdds_segments() -> list[Path]:
    """Segments in /dev/shm that no running process maps: what SIGKILLed participants left behind."""
    mapped = set()
    for maps in Path("/proc").glob("[0-9]*/maps"):
        try:
            mapped |= {ln.split()[-1] for ln in maps.read_text().splitlines() if "/dev/shm/" in ln}
        except OSError:
            continue
    return [p for p in Path("/dev/shm").glob("*fastdds_*") if str(p) not in mapped]


def summarise(rows: list[dict]) -> dict:
    gaps = np.array([r["max_tick_gap_s"] for r in rows])
    damp = np.array([r["damping_after_kill_s"] for r in rows])
    return {"kills": len(rows), "stalls_over_0.2s": int((gaps > 0.2).sum()), "max_tick_gap_s": float(gaps.max()),
            "tick_gap_p50_s": float(np.median(gaps)), "damping_after_kill_p50_s": float(np.median(damp)),
            "damping_after_kill_max_s": float(damp.max())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=30, help="kills per transport")
    ap.add_argument("--load", action="store_true", help="keep both cores busy with a torch loop meanwhile")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--trial", default=None, help=argparse.SUPPRESS)  # internal: one kill, policy dir
    args = ap.parse_args()
    if args.trial:
        print(json.dumps(trial(args.trial)))
        return
    from tqdm import tqdm

    tmp = Path(tempfile.mkdtemp())
    policy = _standing_policy(tmp / "policy")
    (tmp / "builtin.xml").write_text(_BUILTIN_PROFILE)
    hog = subprocess.Popen([sys.executable, "-c", _HOG]) if args.load else None
    rows: dict[str, list[dict]] = {"shared_memory": [], "udp": []}
    failures: dict[str, int] = {k: 0 for k in rows}
    started = time.time()
    try:
        with tqdm(total=2 * args.kills, desc="kills") as bar:
            for i in range(args.kills):
                for transport in rows:
                    env = _environment(transport, 110 + (2 * i + (transport == "udp")) % 100, tmp / "builtin.xml")
                    run = subprocess.run([sys.executable, __file__, "--trial", str(policy)], env=env, cwd=ROOT,
                                         capture_output=True, text=True, timeout=180)
                    if run.returncode == 0:
                        rows[transport].append(json.loads(run.stdout.strip().splitlines()[-1]))
                    else:
                        failures[transport] += 1
                    bar.update()
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
    left = _unmapped_fastdds_segments()
    for p in left:
        p.unlink(missing_ok=True)
    result = {"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "load": args.load,
              "load_average_1min_at_end": os.getloadavg()[0], "seconds": round(time.time() - started),
              "stale_shared_memory_segments_removed": len(left), "trials_failed": failures,
              **{t: summarise(r) for t, r in rows.items() if r}, "per_kill": rows}
    print(json.dumps({k: v for k, v in result.items() if k != "per_kill"}, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
