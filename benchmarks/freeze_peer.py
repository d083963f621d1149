"""A node of the recording graph stopped (SIGSTOP) for a while, then let go on: what the recording lost.

Each run is `uni-o4 bringup --standin --learn` (robot.yaml against the stand-in Go1 and T265, the
learner beside it) on a ROS domain of its own. Once the first episode's file exists the chosen node is
stopped for the given seconds (a process swapped out, starved of CPU, a laptop lid closed), then
continued. After the recorder has ended its last episode the bringup is stopped, and every episode
file is read: steps present, steps missing (the file's metadata/missing_steps), and what the logs said.

    python benchmarks/freeze_peer.py --node dataset_logger_node --seconds 10 30 --episodes 4 \
        --out benchmarks/results/freeze_peer_2026-12-06.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
POLICY = ROOT / "uni_o4_ros" / "sim" / "checkpoints" / "go1_flat"


def node_pid(module: str, parent: int) -> int:
    """The pid of the `module` node process that `parent` (the bringup) started."""
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == parent and f"uni_o4_ros.nodes.{module} " in cmd:
                return int(d.name)
    raise RuntimeError(f"no {module} process started by {parent}")


def wait_for(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.5)  # polling files and a log written by other processes


def run(node: str, seconds: float, episodes: int, domain: int, work: Path) -> dict:
    from uni_o4_ros.data import read_hdf5

    out, log_path = work / "data", work / "bringup.log"
    learner = work / "learner"
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain))
    with log_path.open("w") as log:
        bringup = subprocess.Popen([sys.executable, "-m", "uni_o4_ros.cli", "bringup", "--standin", "--policy",
                                    str(POLICY), "--out", str(out), "--episodes", str(episodes), "--learn",
                                    str(learner)], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: (out / "episode_000001.hdf5").exists(), 120, "first episode")
        pid = node_pid(node, bringup.pid)
        os.kill(pid, signal.SIGSTOP)
        time.sleep(seconds)  # the freeze itself: its length is the experiment's variable
        os.kill(pid, signal.SIGCONT)
        ended = re.compile(rf"\[episode_recorder\]: episode {episodes}: (?!started)")
        wait_for(lambda: ended.search(log_path.read_text()) is not None, 60 * episodes, "last episode")
        try:  # its file, if its rows reached the logger
            wait_for(lambda: len(list(out.glob("episode_*.hdf5"))) >= episodes, 10, "last file")
        except TimeoutError:
            pass
    finally:
        bringup.send_signal(signal.SIGTERM)
        bringup.wait(timeout=120)
    text = log_path.read_text()
    files = []
    for f in sorted(out.glob("episode_*.hdf5")):
        ds = read_hdf5(f)
        steps = ds.infos["step"]
        files.append({"file": f.name, "rows": len(ds), "first_step": int(steps[0]), "last_step": int(steps[-1]),
                      "missing_steps": int(ds.metadata.get("missing_steps", 0)),
                      "missing_ranges": ds.metadata.get("missing_ranges", "")})
    return {"node": node, "seconds": seconds, "episodes": episodes, "files": files,
            "logger_errors": [line for line in text.splitlines() if "never reached the logger" in line
                              or "no transition ever reached the logger" in line],
            "updates_accepted": text.count("accepted: version"), "updates_refused": text.count("refused:")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--node", default="dataset_logger_node",
                    help="module to stop: dataset_logger_node | learner_node | odometry_node ...")
    ap.add_argument("--seconds", type=float, nargs="+", default=[10.0, 30.0], help="freeze lengths, one run each")
    ap.add_argument("--episodes", type=int, default=4, help="episodes per run (20 s each)")
    ap.add_argument("--domain", type=int, default=61, help="first ROS_DOMAIN_ID (one per run)")
    ap.add_argument("--out", type=Path, help="JSON file for the results")
    a = ap.parse_args()
    results = []
    for i, seconds in enumerate(a.seconds):
        with tempfile.TemporaryDirectory(prefix="freeze_") as work:
            res = run(a.node, seconds, a.episodes, a.domain + i, Path(work))
        results.append(res)
        rows = sum(f["rows"] for f in res["files"])
        missing = sum(f["missing_steps"] for f in res["files"])
        print(f"{a.node} stopped {seconds:g} s: {len(res['files'])} of {a.episodes} episode files, {rows} rows, "
              f"{missing} steps missing inside files; logger errors: {len(res['logger_errors'])}", flush=True)
        for line in res["logger_errors"]:
            print("   ", line[line.find("]: ") + 3:][:160])
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
