"""`uni-o4`: the command line of uni_o4_ros. The learning commands need no ROS; field, bringup and estop
run ROS 2 nodes from the rclpy wheels this environment installs (no ROS installation).

    uni-o4 collect   train a behaviour agent with PPO and write D4RL-layout datasets
    uni-o4 offline   offline Uni-O4 on a dataset (BC ensemble, IQL, dynamics, AM-Q improvement)
    uni-o4 online    online PPO from an offline policy (or from scratch)
    uni-o4 evaluate  returns and D4RL score of a saved policy
    uni-o4 demo      the D4RL-style job (`make demo-d4rl`): collect -> offline -> online -> report
    uni-o4 plot      PNG of a run's curves, a learner's updates or a recording's episodes
    uni-o4 pretrain  online PPO of the simulated Go1 on flat ground (the paper's simulator stage)
    uni-o4 field     the README's main job (`make demo`): simulator policy -> mattress data ->
                     offline Uni-O4 -> online fine-tuning with hot-swaps, through the node graph
    uni-o4 bringup   the ROS 2 node suite without `ros2 launch`: against the simulated Go1, or
                     robot.launch.py's graph against a stand-in Go1 and T265
    uni-o4 bag2h5    a rosbag2 of Transition messages -> one D4RL-layout HDF5 dataset
    uni-o4 estop     engage or re-arm the running controller's e-stop
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from .learning.budgets import BUDGETS
from .learning.run_folder import check_not_inside, check_run_folder
from .robot.recording_tally import LOGGER_GRACE_S

if TYPE_CHECKING:  # torch is imported lazily so that `--help` stays fast
    from .learning.policy import GaussianPolicyEnsemble
    from .nodes.recorder_watch import RecorderWatch
    from .robot.recording_tally import RecordingTally

EPILOG = "Configuration, each over the one before: the paper's defaults (Table 5); --budget, which shrinks " \
         "them; --config FILE.yaml; --seed and --env; --set section.key=value."


def _whole_number(lowest: int):
    """argparse type: an int >= lowest, with the bound in the error message."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < lowest:
            raise argparse.ArgumentTypeError(f"must be at least {lowest}, got {value}")
        return value

    return parse


_positive_int = _whole_number(1)
_count = _whole_number(0)  # 0 switches the feature off


def _seed(text: str) -> int:
    """argparse type: a seed of 32 bits, what the policy node's `seed` parameter takes (and numpy, torch and
    Gymnasium all do); a larger one was refused only once `uni-o4 field` had started its node graph."""
    value = _count(text)
    if value > 2**32 - 1:
        raise argparse.ArgumentTypeError(f"must be at most 4294967295, got {value}")
    return value


def _speed(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a speed in m/s, got {text!r}") from None
    if not 0.0 < value <= 3.0:  # NaN fails too; the Go1's top speed is ~3.5 m/s, the policy tracks forward only
        raise argparse.ArgumentTypeError(f"must be in (0, 3] m/s, got {text}")
    return value


def _realtime_factor(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a factor such as 1 or 4, got {text!r}") from None
    if not 0.1 <= value <= 20.0:  # NaN fails too; beyond ~20x the controller's timer cannot keep its rate
        raise argparse.ArgumentTypeError(f"must be in [0.1, 20], got {text}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not 0.0 < value < 3600.0:  # NaN fails too; a negative wait gave up before asking
        raise argparse.ArgumentTypeError(f"must be in (0, 3600) seconds, got {text}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction such as 0.45, got {text!r}") from None
    if not 0.0 < value <= 1.0:  # NaN fails too
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def _env_name(text: str) -> str:
    """argparse type: an environment's name. An empty one (`--env "$ENV"` with ENV unset) ended in Gymnasium's
    traceback, or was taken for the default task."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty (an unset shell variable?): name a task such as Hopper-v5")
    return text.strip()


def _n_envs(text: str) -> int:
    """argparse type: simulator copies, each a MuJoCo model in memory: 100000 sat silent while it made them."""
    n = _positive_int(text)
    if n > 1024:
        raise argparse.ArgumentTypeError(f"at most 1024 (each copy is a MuJoCo model in memory), got {n}")
    return n


def _path(text: str) -> str:
    """argparse type: a file or folder to write. An empty one (`--out "$OUT"` with OUT unset) was the current
    folder: `field` and `pretrain` wrote their config.json and checkpoints into wherever they were started."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty (an unset shell variable?): name a folder")
    return text


def _check_ros_domain() -> None:
    """ROS_DOMAIN_ID as DDS can use it, checked before any node starts: `abc` ended `estop` in rcl's traceback,
    and 999 in Fast DDS's port errors (a domain's ports are 7400 + 250 * id: past 232 they pass 65535)."""
    text = os.environ.get("ROS_DOMAIN_ID", "").strip()
    if text and not (re.fullmatch("[0-9]+", text) and int(text) <= 232):  # isdigit() takes '²', int() does not
        raise ValueError(f"ROS_DOMAIN_ID {text!r} is no ROS domain: set a whole number 0..232 (or unset it for 0)")


def _check_env(env: str, mujoco: bool = False) -> None:
    """Fail before any work when a Gymnasium task name is wrong (gymnasium's own error is a traceback), or,
    with `mujoco`, is no MuJoCo task: collect records each state's qpos and qvel (D4RL's infos)."""
    import gymnasium as gym

    try:
        gym.spec(env)
    except gym.error.Error as exc:
        raise ValueError(f"unknown environment {env!r}: {exc} (Gymnasium MuJoCo tasks such as Hopper-v5, "
                         "HalfCheetah-v5, Walker2d-v5; 'go1' for robot data)") from None
    try:
        with warnings.catch_warnings():  # Gymnasium's "out of date" warning for v2-v4: said below, in one line
            warnings.simplefilter("ignore", DeprecationWarning)
            probe = gym.make(env)
    except Exception as exc:  # noqa: BLE001 - e.g. a task whose physics package is not installed (ImportError)
        old = re.fullmatch(r"(Hopper|HalfCheetah|Walker2d|Ant)-v[0-3]", env)
        raise ValueError(f"cannot create environment {env!r}: {exc}" + (
            f" (D4RL's tasks ran on mujoco-py, which Gymnasium dropped: use {old[1]}-v5; scores are normalised "
            "with D4RL's v2 reference returns)" if old else "")) from None
    spaces = probe.observation_space, probe.action_space
    simulated = hasattr(probe.unwrapped, "data")
    probe.close()
    if mujoco and not simulated:
        raise ValueError(f"{env} is not a MuJoCo task: datasets are made on MuJoCo tasks (their qpos and qvel "
                         "are recorded), such as Hopper-v5, HalfCheetah-v5, Walker2d-v5")
    # The policy is a Gaussian over a vector of actions and the networks read a vector of states.
    for what, space in zip(("observation", "action"), spaces):
        if not (isinstance(space, gym.spaces.Box) and len(space.shape) == 1):
            raise ValueError(f"{env} has a {type(space).__name__}{getattr(space, 'shape', '')} {what} space; Uni-O4 "
                             "needs vectors of continuous observations and actions (Box of one dimension)")


def _saved_policy(path: str) -> str:
    """A policy folder as given, or a one-line pointer to it when the user named its run folder."""
    p = Path(path)
    if p.is_file():
        raise ValueError(f"{p} is a file; a saved policy is a folder (policy.safetensors and policy.json)")
    if not (p / "policy.json").exists() and (p / "final" / "policy.json").exists():
        raise ValueError(f"{p} is a run folder, not a saved policy; its selected policy is {p / 'final'}")
    return path


def _add_config_args(p: argparse.ArgumentParser, example: str = "bc.alpha=0.0") -> None:
    p.add_argument("--budget", default="small", choices=list(BUDGETS),
                   help="compute budget, the starting point --config and --set refine (default: small)")
    p.add_argument("--config", help="YAML file overriding config values (over the budget's)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help=f"override one config value, repeatable, over --config (e.g. --set {example})")
    p.add_argument("--seed", type=_seed, help="seed of every stage: networks, minibatches, environments "
                   "(default: the --config file's, else 0)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="uni-o4", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("collect", help="train a PPO behaviour agent and write medium / medium-replay / "
                       "medium-expert datasets (D4RL layout)")
    p.add_argument("--env", type=_env_name, default="Hopper-v5", help="Gymnasium MuJoCo task (default Hopper-v5)")
    p.add_argument("--out", type=_path, default="data/hopper", help="output folder (resumable; datasets it holds "
                   "are never replaced by ones made with other settings)")
    p.add_argument("--train-steps", type=_positive_int, default=1_000_000, help="PPO environment steps")
    p.add_argument("--dataset-steps", type=_positive_int, default=200_000, help="transitions per policy dataset")
    p.add_argument("--eval-every", type=_positive_int, default=20_000,
                   help="PPO steps between snapshots; each is evaluated and a candidate for the medium policy")
    p.add_argument("--medium-fraction", type=_fraction, default=0.45,
                   help="medium = snapshot whose return is closest to this fraction of the best")
    p.add_argument("--seed", type=_seed, default=0, help="seed of the PPO agent and the environments")
    p.add_argument("--threads", type=_positive_int,
                   help="torch threads (default: every core). The same seed and thread count reproduce a "
                   "dataset bit for bit; another thread count sums in another order, and over a long "
                   "training run that grows into a different behaviour agent (collect.json records it)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")

    p = sub.add_parser("offline", help="offline Uni-O4 on a dataset; selects the policy by AM-Q only",
                       epilog=EPILOG)
    p.add_argument("--dataset", required=True, help="HDF5 file in D4RL layout, or a folder of recorded episodes")
    p.add_argument("--env", type=_env_name,
                   help="environment the dataset came from (checks dims; picks the termination rule); 'go1' for "
                   "robot data (default: go1 for a recording folder, else the config's, Hopper-v5)")
    p.add_argument("--run-dir", type=_path, required=True,
                   help="output folder; rerunning resumes and reuses cached stages")
    p.add_argument("--init-policy", help="folder of a saved policy: online -> offline path (no BC, Eq. 25)")
    p.add_argument("--eval-episodes", type=_count, default=0,
                   help="after training, report the selected policy's return in the env (never used to select)")
    _add_config_args(p)

    p = sub.add_parser("online", help="online PPO fine-tuning of a saved policy, or PPO from scratch",
                       epilog=EPILOG)
    p.add_argument("--policy", help="folder with policy.safetensors/json (e.g. RUN/final); omit with --scratch")
    p.add_argument("--scratch", action="store_true", help="PPO from scratch instead of fine-tuning")
    p.add_argument("--env", type=_env_name, required=True, help="Gymnasium MuJoCo task to fine-tune in, e.g. Hopper-v5")
    p.add_argument("--run-dir", type=_path, required=True, help="output folder (checkpoints, scalars.csv, PNG); "
                   "rerunning resumes")
    p.add_argument("--steps", type=_positive_int, help="environment steps (default from the budget)")
    _add_config_args(p, example="online.clip=0.2")

    p = sub.add_parser("evaluate", help="evaluate a saved policy (deterministic mean actions)")
    p.add_argument("--policy", required=True, help="folder with policy.safetensors/json (e.g. RUN/final)")
    p.add_argument("--env", type=_env_name, required=True, help="Gymnasium MuJoCo task, e.g. Hopper-v5")
    p.add_argument("--episodes", type=_positive_int, default=10, help="episodes (default 10, as D4RL)")
    p.add_argument("--seed", type=_seed, default=0, help="episode k starts from reset seed SEED + k, so two "
                   "policies evaluated with one seed meet the same initial states")

    p = sub.add_parser("demo", help="D4RL-style job (make demo-d4rl): small Hopper dataset -> offline Uni-O4 -> "
                       "online PPO -> report",
                       epilog=EPILOG)
    p.add_argument("--env", type=_env_name, default="Hopper-v5", help="Gymnasium MuJoCo task (default Hopper-v5)")
    p.add_argument("--out", type=_path, default="runs/demo",
                   help="output folder (default runs/demo); rerunning resumes")
    p.add_argument("--train-steps", type=_positive_int, default=200_000, help="behaviour PPO steps for the dataset")
    p.add_argument("--dataset-steps", type=_positive_int, default=50_000, help="transitions per dataset")
    p.add_argument("--kind", default="medium", choices=["medium", "medium-replay", "medium-expert"],
                   help="which dataset to learn from (default: medium)")
    _add_config_args(p)

    p = sub.add_parser("bringup", help="start the ROS 2 node suite without `ros2 launch` (each node its own "
                       "process, parameters from config/*.yaml)",
                       description="Starts the node suite without `ros2 launch`. --sim: sim.launch.py's graph, the "
                       "pd_controller stepping MuJoCo itself (config/sim.yaml). --standin: robot.launch.py's graph "
                       "with config/robot.yaml (the Unitree SDK backend, the T265 odometry node) against a stand-in "
                       "Go1 (MuJoCo behind the low-level UDP protocol) carrying a stand-in T265: a rehearsal of "
                       "the robot's launch on any computer. --learn adds the online stage (learning.launch.py's "
                       "learner, the policy sampling its actions). For the Go1 itself: `ros2 launch uni_o4_ros "
                       "robot.launch.py`.")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--sim", action="store_true", help="the simulated Go1 (config/sim.yaml)")
    mode.add_argument("--standin", action="store_true",
                      help="the robot's graph and config/robot.yaml against a stand-in Go1 and T265")
    p.add_argument("--policy", required=True, help="saved policy folder to deploy")
    p.add_argument("--out", type=_path, default="data/robot", help="folder for the recorded episodes")
    p.add_argument("--episodes", type=_count, default=0,
                   help="stop after this many episodes (0: until Ctrl-C); one that never reaches the logger is "
                   "named --logger-grace seconds after it ended, and bringup then exits 1")
    p.add_argument("--logger-grace", type=_seconds, default=LOGGER_GRACE_S, metavar="SECONDS",
                   help=f"how long after the recorder ends an episode its file may take to appear before it is "
                   f"named lost (default {LOGGER_GRACE_S:g}: Fast DDS resends to a reader silent for up to its "
                   "~20 s lease, so a later file will not come)")
    p.add_argument("--params", help="parameters file (default config/sim.yaml, with --standin config/robot.yaml)")
    p.add_argument("--terrain", default="flat", help="--standin: what the stand-in Go1 walks on (flat | mattress)")
    p.add_argument("--operator-delay", type=float, default=3.0, metavar="SECONDS",
                   help="--standin: after a fall a stand-in operator waits this long, stands the robot up and "
                   "re-arms it with the remote's remote_rearm buttons, so a rehearsal runs on unattended "
                   "(default 3; 0: nobody, re-arm yourself with `uni-o4 estop rearm`)")
    p.add_argument("--battery", type=float, default=100.0, metavar="PERCENT",
                   help="--standin: the stand-in Go1's battery charge at the start (its bms.SOC), to rehearse "
                   "robot.yaml's min_battery_soc stop (default 100)")
    p.add_argument("--battery-drain", type=float, default=0.0, metavar="PERCENT_PER_MIN",
                   help="--standin: how fast that battery empties per minute (default 0: it does not)")
    p.add_argument("--learn", type=_path, metavar="RUN_DIR",
                   help="also run the learner (learning.launch.py's node): online PPO on the recorded transitions, "
                   "each new version verified and hot-swapped into the running policy, which then samples its "
                   "actions (deterministic:=false). RUN_DIR keeps its checkpoints; rerunning resumes there")

    p = sub.add_parser("pretrain", help="online PPO on the flat-ground MuJoCo Go1 (the paper's simulator stage)",
                       description="Vectorised PPO on the simulated Go1 (flat ground, no domain randomisation) "
                       "tracking forward-speed commands. Resumable: rerun the same command to continue (more --steps "
                       "or another evaluation may be given; other settings, env.* included, are refused). Exports "
                       "OUT/latest periodically and OUT/final at the end (policy + V, deployable and fine-tunable).")
    p.add_argument("--out", type=_path, default="runs/pretrain", help="output folder (default runs/pretrain)")
    p.add_argument("--steps", type=_positive_int, help="total environment steps (default 6,000,000)")
    p.add_argument("--n-envs", type=_n_envs, help="environment copies stepped together (default 16, at most 1024)")
    p.add_argument("--config", help="YAML file overriding PretrainConfig values (env.*, ppo.*, hidden, ...)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one value, e.g. --set ppo.actor_lr=1e-4 (repeatable)")
    p.add_argument("--seed", type=_seed, default=0, help="seed of the policy and the simulated robots")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")

    p = sub.add_parser("field", help="main job: the paper's robot pipeline (simulator policy -> mattress data -> "
                       "offline Uni-O4 -> online fine-tuning with live hot-swaps) through the node graph",
                       description="Runs the ROS 2 node graph (simulated Go1 on an elastic mattress) in three "
                       "stages: record with the simulator-pretrained policy, offline Uni-O4 initialised from it "
                       "(Eq. 25), online PPO in the learner node with hot-swaps; then evaluates every stage at a "
                       "low and a high commanded speed and writes OUT/report.md + report.png. Rerun to resume.")
    p.add_argument("--sim", action="store_true", help="MuJoCo stands in for the Go1 and the T265 (required here)")
    p.add_argument("--out", type=_path, default="runs/field", help="output folder (default runs/field)")
    p.add_argument("--budget", default="small", choices=["small", "tiny", "paper"],
                   help="small (default, ~20 min on 2 cores) | tiny (a smoke test) | "
                   "paper (180k recorded + 100k online steps, Table 5 offline sizes)")
    p.add_argument("--policy", help="simulator-pretrained policy folder (default: the shipped checkpoint)")
    p.add_argument("--terrain", choices=("mattress", "flat"), help="target terrain (default mattress)")
    p.add_argument("--record-steps", type=_positive_int, help="transitions to record with the simulator policy "
                   "(default: the budget's)")
    p.add_argument("--online-steps", type=_positive_int, help="online fine-tuning transitions (default: the budget's)")
    p.add_argument("--low-speed", type=_speed, help="low commanded speed, m/s (default 0.5)")
    p.add_argument("--high-speed", type=_speed, help="high commanded speed, m/s (default 1.0)")
    p.add_argument("--realtime-factor", type=_realtime_factor,
                   help="simulated seconds per second in the record and online stages (the controller ticks "
                   "at 50 Hz times this; the simulated robot steps in lockstep). The report says how many "
                   "commands came a tick late at that pace (default: the budget's)")
    p.add_argument("--offline-threads", type=_positive_int,
                   help="torch threads of the offline stage (default: every core; give it fewer when other "
                   "heavy work shares the machine: oversubscribed cores slow both)")
    p.add_argument("--eval-episodes", type=_positive_int,
                   help="evaluation episodes per policy and speed (small budget: 5; changing it on a "
                   "finished run redoes only the evaluation and the report)")
    p.add_argument("--seed", type=_seed, default=0, help="seed of every stage (recording, offline, online, "
                   "evaluation)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")

    p = sub.add_parser("bag2h5", help="turn a rosbag2 (MCAP or SQLite) of Transition messages into a D4RL-layout "
                       "HDF5 dataset", description="Reads the Transition topic of a bag recorded on the robot "
                       "(`ros2 bag record -s mcap /transitions`, or the dataset_logger's bag_path), rebuilds the "
                       "episodes from (recorder run, episode_id, step) and writes one HDF5 file the learner reads. "
                       "A recorder restarted while the bag recorded gives episodes of its own (infos/recorder_run); "
                       "an earlier run's transitions played back beside the robot (ros2 bag play) are left out "
                       "while the run recorded is heard, and counted. Bags recorded before transitions named their "
                       "recorder run read as one run.")
    p.add_argument("bag", help="bag folder or .mcap file; one its recorder never closed (killed, power cut: "
                   "no metadata.yaml, no MCAP footer) or damaged since (chunks failing their CRC) is salvaged, "
                   "with a warning saying what was lost")
    p.add_argument("--out", type=_path, required=True, help="output .hdf5 file (must not exist)")
    p.add_argument("--topic", default="/transitions", help="Transition topic to read (default /transitions)")

    p = sub.add_parser("estop", help="engage or re-arm the running controller's e-stop (no ros2cli needed)",
                       description="Calls the pd_controller's `estop` service, as `ros2 service call /estop "
                       "std_srvs/srv/SetBool` would (data true / false): `engage` damps the robot and latches; "
                       "`rearm` releases a latched e-stop, fall or silent policy (stand the robot up first). A "
                       "convenience for bringup on computers without ros2cli, not a safety device: on the Go1 the "
                       "e-stop at hand is its own remote (L2+B).")
    p.add_argument("action", choices=["engage", "rearm"],
                   help="engage: damping, latched until re-armed; rearm: active again on the next command")
    p.add_argument("--timeout", type=_seconds, default=5.0, help="seconds to wait for the controller (default 5)")

    p = sub.add_parser("plot", help="draw a run's learning curves, a learner's updates or a recording's "
                       "episodes as PNG",
                       description="One panel per quantity, written into the folder: a training run's "
                       "scalars.csv -> scalars.png; a learner's run folder (learning.launch.py, bringup --learn: "
                       "timeline.jsonl) -> timeline.png, its batches' return and PPO statistics per published "
                       "version; a recording (the dataset_logger's episode_*.hdf5) -> episodes.png, return, "
                       "steps, falls and policy version per episode. Rerun it while a run goes on to see it so "
                       "far.")
    p.add_argument("run_dir", help="the folder: a run, a learner's run, or a recording")
    for name, command in sub.choices.items():
        command.formatter_class = _DefaultsShown
        if command.description is None:  # `uni-o4 collect --help` opened with its options alone
            command.description = next(a.help for a in sub._choices_actions if a.dest == name)
    return parser


class _DefaultsShown(argparse.HelpFormatter):
    """Each option's default after its help, unless the help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        shown = not any(action.default is v for v in (None, False, argparse.SUPPRESS)) and action.default != []
        if action.option_strings and shown and "default" not in text:  # 0 is a default worth showing
            text += " (default: %(default)s)"
        return text


def _config(args: argparse.Namespace, env: str | None, base: list[str] | None = None):
    from .learning.budgets import budget_overrides
    from .learning.config import load_config

    # The budget is a starting point the user's --config file and --set refine (before, the budget came last
    # and silently undid the file's steps). --set comes last, so `--set seed=1` wins over --seed. `base`
    # goes beneath the budget (the from-scratch PPO settings of `online --scratch`).
    overrides = [] if args.seed is None else [f"seed={args.seed}"]
    if env:
        overrides.append(f"env={env}")
    return load_config(args.config, overrides + list(args.overrides),
                       base=list(base or []) + budget_overrides(args.budget))


def _load_dataset(path: str, env: str | None):
    from .data import DatasetError, read_hdf5, validate

    p = Path(path)
    if p.suffix in (".mcap", ".db3") or (p.is_dir() and any((p / "metadata.yaml").exists() or f.suffix in (
            ".mcap", ".db3") for f in p.iterdir())):
        raise DatasetError(f"{path} is a rosbag2: turn it into a dataset first with "
                           f"`uni-o4 bag2h5 {path} --out data.hdf5`")
    if p.is_dir():  # episodes recorded by the dataset_logger node
        from .robot.episodes import lost_in_recording, read_episodes

        ds = read_episodes(path)
        if lost := lost_in_recording(ds):
            print(f"warning: {path}: {lost}", file=sys.stderr)
    else:
        max_steps = None
        if env and not env.lower().startswith("go1"):
            import gymnasium as gym

            max_steps = gym.spec(env).max_episode_steps  # D4RL's rule for a file without timeouts
        ds = read_hdf5(path, max_episode_steps=max_steps)
        if found := ds.metadata.get("episode_ends_found"):
            print(f"note: {path}: {found} episode end(s) the file does not mark were found, "
                  f"{ds.metadata['episode_ends_rule']}; each is read as a timeout", file=sys.stderr)
        if why := ds.metadata.get("episode_ends_not_found"):
            print(f"note: {path}: {why}", file=sys.stderr)
    obs_dim = act_dim = bound = None
    if env and env.lower().startswith("go1"):
        from .robot.observation import POLICY_DIMS

        obs_dim, act_dim = POLICY_DIMS
    elif env:
        import gymnasium as gym
        import numpy as np

        e = gym.make(env)
        obs_dim, act_dim = e.observation_space.shape[0], e.action_space.shape[0]
        low, high = e.action_space.low, e.action_space.high
        e.close()
        # The policy's mean is tanh-bounded to the task's [-1, 1]: actions beyond it (another
        # robot's, or unnormalised torques) cannot be imitated and would swamp the BC loss.
        if np.all(np.isfinite(high)) and np.allclose(low, -high) and np.allclose(high, high.flat[0]):
            bound = float(high.flat[0])
    validate(ds, obs_dim=obs_dim, act_dim=act_dim, action_bound=bound, source=path)
    return ds


def _score(env: str, value: float) -> float | None:
    from .data import normalized_score

    try:
        return float(normalized_score(env, value))
    except (KeyError, ValueError):
        return None


def _score_note(env: str) -> str | None:
    from .data import score_note

    return score_note(env)


def cmd_collect(args: argparse.Namespace) -> int:
    from .learning.collect import CollectConfig, collect

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    check_run_folder(args.out, "collect", "--out")
    _check_env(args.env, mujoco=True)
    cfg = CollectConfig(env=args.env, seed=args.seed, train_steps=args.train_steps, eval_every=args.eval_every,
                        dataset_steps=args.dataset_steps, medium_fraction=args.medium_fraction)
    paths = collect(cfg, args.out, progress=not args.no_progress)
    meta = json.loads((Path(args.out) / "collect.json").read_text())
    print(f"behaviour PPO: medium snapshot at step {meta['medium_step']} (evaluation return "
          f"{meta['medium_eval_return']:.1f}), expert at step {meta['expert_step']} ({meta['expert_eval_return']:.1f})")
    for kind, path in paths.items():
        s = meta["summary"][kind]
        print(f"{kind}: {path} ({s['transitions']} transitions, {s['episodes']} episodes, "
              f"return {s['mean_return']:.1f} +- {s['std_return']:.1f})")
    return 0


def run_offline(args: argparse.Namespace, dataset_path: str, env: str | None, run_dir: str,
                init_policy: str | None = None) -> dict:
    import torch

    from .data.atomic import write_json
    from .learning.config import to_dict
    from .learning.offline import OfflineTrainer, load_policy
    from .learning.scalars import plot_log

    if env is None and Path(dataset_path).is_dir():
        # A folder of episode files is the dataset_logger's, robot data: without this its falls would be judged
        # by the default env's (Hopper's) termination rule, silently.
        env = "go1"
        print(f"{dataset_path} is a robot recording: env go1 (its termination rule and dimensions)", file=sys.stderr)
    if init_policy:
        check_not_inside(run_dir, init_policy, "--init-policy", "offline")
    check_run_folder(run_dir, "offline", "--run-dir")
    cfg = _config(args, env)
    robot = cfg.env.lower().startswith("go1")
    if not robot:
        _check_env(cfg.env)  # also when it came from --config or --set
    episodes = getattr(args, "eval_episodes", 0)
    if episodes and robot:
        raise ValueError("--eval-episodes needs a Gymnasium task; a Go1 policy is evaluated by `uni-o4 field`")
    torch.manual_seed(cfg.seed)
    # cfg.env, not --env: the dataset is checked against the env whose rules the run uses, the default included
    ds = _load_dataset(dataset_path, cfg.env)
    init = None
    if init_policy:
        pol, norm, _, _ = load_policy(_saved_policy(init_policy))
        init = (pol, norm)
    run = Path(run_dir)
    trainer = OfflineTrainer(cfg, ds, run, init_policy=init, progress=not args.no_progress)  # checks, then mkdir
    write_json(run / "config.json", to_dict(cfg))
    t0 = time.time()
    with _stop_on_first_ctrl_c() as stop:
        trainer.should_stop = stop.is_set
        res = trainer.run()
    summary = {"am_q": res.am_q, "seconds": round(time.time() - t0, 1), "policy": str(run / "final")}
    if episodes:
        from .learning.online import make_gym_env
        from .learning.ppo import evaluate_policy

        # The starts of online's evaluations and offline_quality's (with 10_000 + seed, seeds 0 and 1 shared 9 of 10)
        rets = evaluate_policy(res.policy, res.normalizer, make_gym_env(cfg.env), episodes,
                               seed=10_000 + 100 * cfg.seed)
        summary.update(eval_return=float(rets.mean()), eval_return_std=float(rets.std()),
                       eval_score=_score(cfg.env, float(rets.mean())), score_note=_score_note(cfg.env))
    plot_log(run / "scalars.csv", run / "offline.png", title=f"offline Uni-O4: {Path(dataset_path).name}")
    write_json(run / "summary.json", summary)
    return summary


@contextlib.contextmanager
def _stop_on_first_ctrl_c() -> Iterator[threading.Event]:
    """Ctrl-C sets the event: the training loop checkpoints the step it is at and stops (TrainingStopped), so a
    rerun resumes there rather than at the last periodic checkpoint, minutes back. A second Ctrl-C stops at once."""
    import signal

    stop = threading.Event()

    def on_sigint(*_) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        print("\nstopping after this step, with a checkpoint (Ctrl-C again: at once)", file=sys.stderr)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


def cmd_offline(args: argparse.Namespace) -> int:
    summary = run_offline(args, args.dataset, args.env, args.run_dir, args.init_policy)
    print(json.dumps(summary, indent=2))
    return 0


def _env_dims(env: str) -> tuple[int, int]:
    import gymnasium as gym

    probe = gym.make(env)
    try:
        return probe.observation_space.shape[0], probe.action_space.shape[0]
    finally:
        probe.close()


def _check_policy_fits(actor: GaussianPolicyEnsemble, env: str, dims: tuple[int, int]) -> None:
    """A policy saved for another task must stop with one line, not a shape error deep in torch."""
    obs_dim, act_dim = dims
    if actor.spec.obs_dim != obs_dim or actor.spec.act_dim != act_dim:
        raise ValueError(f"policy expects obs/act dims {actor.spec.obs_dim}/{actor.spec.act_dim}, "
                         f"{env} has {obs_dim}/{act_dim}")


def run_online(args: argparse.Namespace, policy_dir: str | None, env: str, run_dir: str,
               steps: int | None = None, scratch: bool = False) -> dict:
    import torch

    from .learning.normalizer import RunningNormalizer
    from .learning.offline import load_policy, load_value
    from .learning.online import SCRATCH_SETTINGS, OnlineTrainer, make_gym_env, scratch_agent
    from .learning.scalars import plot_log

    if scratch and policy_dir:
        raise ValueError("--scratch starts from nothing: drop --policy, or drop --scratch to fine-tune that policy")
    if policy_dir:
        # `--policy runs/x/final --run-dir runs/x`: the online run would write its own final over the offline
        # pick it starts from (and the V fine-tuning needs), with nothing said.
        check_not_inside(run_dir, policy_dir, "--policy", "online")
    check_run_folder(run_dir, "online", "--run-dir")
    _check_env(env)
    # From scratch, CleanRL's PPO settings replace Table 5's fine-tuning ones; the budget, --config and --set
    # still refine them (before, they were set last and undid `--set online.clip=0.3` without a word).
    cfg = _config(args, env, [f"online.{key}={json.dumps(value)}" for key, value in SCRATCH_SETTINGS.items()]
                  if scratch else None)
    if steps:
        cfg.online.total_steps = steps
    torch.manual_seed(cfg.seed)
    obs_dim, act_dim = _env_dims(env)
    online = cfg.online
    if scratch:
        actor, critic, normalizer = scratch_agent(obs_dim, act_dim)
    else:
        if not policy_dir:
            raise ValueError("online needs --policy DIR (a saved policy) or --scratch")
        actor, normalizer, meta, tensors = load_policy(_saved_policy(policy_dir))
        _check_policy_fits(actor, env, (obs_dim, act_dim))
        critic = load_value(policy_dir, meta, tensors, obs_dim)
        if critic is None:
            raise ValueError(f"{policy_dir} has no value function; fine-tuning needs the offline V")
    run = Path(run_dir)
    trainer = OnlineTrainer(online, make_gym_env(env, cfg.seed), actor, critic, normalizer, run, seed=cfg.seed,
                            progress=not args.no_progress, score_fn=lambda r: _score(env, r))
    from .data.atomic import write_json
    from .learning.config import to_dict

    # As every run folder: the settings it ran with, written once the trainer's resume check passed
    trainer.check_resumable()
    write_json(run / "config.json", {**to_dict(cfg), "policy": policy_dir, "scratch": scratch})
    hist = trainer.run()
    from .learning.offline import save_policy

    # The statistics the actor was trained on: the trainer's own when they ran (from scratch, or
    # online.fixed_state_norm false), fixed for deployment as pretrain's are. Before, the ones it started with.
    trained_on = trainer.ppo.normalizer
    if isinstance(trained_on, RunningNormalizer):
        trained_on = trained_on.frozen_copy()
    save_policy(run / "final", "policy", actor, trained_on, extra={"env": env, "env_steps": trainer.env_steps})
    plot_log(run / "scalars.csv", run / "online.png", title=f"online PPO on {env}")
    return {"eval_steps": hist.eval_steps, "eval_returns": hist.eval_returns,
            "eval_scores": [_score(env, r) for r in hist.eval_returns], "score_note": _score_note(env)}


def cmd_online(args: argparse.Namespace) -> int:
    res = run_online(args, args.policy, args.env, args.run_dir, args.steps, args.scratch)
    print(json.dumps(res, indent=2))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .learning.offline import load_policy
    from .learning.online import make_gym_env
    from .learning.ppo import evaluate_policy

    _check_env(args.env)
    actor, normalizer, _, _ = load_policy(_saved_policy(args.policy))
    _check_policy_fits(actor, args.env, _env_dims(args.env))
    rets = evaluate_policy(actor, normalizer, make_gym_env(args.env), args.episodes, args.seed)
    out = {"return_mean": float(rets.mean()), "return_std": float(rets.std()),
           "score": _score(args.env, float(rets.mean())), "score_note": _score_note(args.env),
           "episodes": args.episodes}
    print(json.dumps(out, indent=2))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .learning.collect import CollectConfig, collect
    from .learning.report import write_demo_report

    out = Path(args.out)
    # Each stage's folder, before minutes of collecting: a demo into another run's folder wrote over it
    check_run_folder(out, "demo", "--out")
    for stage, kind in (("data", "collect"), ("offline", "offline"), ("online", "online")):
        check_run_folder(out / stage, kind, f"--out {out}: its {stage}/ folder")
    t0 = time.time()
    seed = _config(args, args.env).seed  # --config, --set and --budget checked before minutes of collecting
    print(f"[1/4] collecting datasets with a PPO behaviour agent on {args.env} ({args.train_steps} steps)")
    paths = collect(CollectConfig(env=args.env, seed=seed, train_steps=args.train_steps,
                                  eval_every=max(10_000, args.train_steps // 15),
                                  dataset_steps=args.dataset_steps), out / "data", progress=not args.no_progress)
    if args.kind not in paths:
        raise ValueError(f"--kind must be one of {sorted(paths)}")
    print(f"[2/4] offline Uni-O4 on {paths[args.kind].name} (budget {args.budget})")
    args.eval_episodes = 10
    offline = run_offline(args, str(paths[args.kind]), args.env, str(out / "offline"))
    print("[3/4] online PPO fine-tuning from the selected policy")
    online = run_online(args, str(out / "offline" / "final"), args.env, str(out / "online"))
    print("[4/4] report")
    report = write_demo_report(out, args.env, paths, offline, online, time.time() - t0)
    print(f"report: {report}")
    return 0


def cmd_bringup(args: argparse.Namespace) -> int:
    import os

    from .robot.episodes import episode_files

    if not Path(args.policy).is_dir():
        raise FileNotFoundError(f"policy folder {args.policy} " + ("is a file; name the folder that holds it"
                                                                   if Path(args.policy).exists() else "not found"))
    _saved_policy(args.policy)
    from .field.pipeline import check_go1_policy

    check_go1_policy(args.policy)  # here, in one line, not as a traceback of the policy node
    if args.learn:  # the learner exports its versions to RUN_DIR/policy: over the policy it starts from
        check_not_inside(args.learn, args.policy, "--policy", "learner", option="--learn")
    standin_only = [f"--{name.replace('_', '-')}" for name, default in (
        ("terrain", "flat"), ("operator_delay", 3.0), ("battery", 100.0), ("battery_drain", 0.0))
        if getattr(args, name) != default]
    if args.sim and standin_only:
        raise ValueError(f"{', '.join(standin_only)}: settings of the stand-in Go1, used with --standin only "
                         "(--sim takes its terrain from the parameters file)")
    for option, folder in (("--out", args.out), ("--learn", args.learn)):
        if folder and Path(folder).exists() and not Path(folder).is_dir():
            raise ValueError(f"{option} {folder} is a file; it names a folder")
    config = "robot.yaml" if args.standin else "sim.yaml"
    params = Path(args.params or Path(__file__).resolve().parents[1] / "config" / config)
    if not params.is_file():
        raise FileNotFoundError(f"parameters file {params} not found")
    _check_parameters_file(params)
    from .nodes.processes import child_env, node_command, stop_processes, stop_signals_raise_exit
    from .nodes.recorder_watch import RecorderWatch
    from .robot.recording_tally import RecordingTally

    out = Path(args.out)
    env = child_env(dict(os.environ))  # none runs on if bringup itself is killed
    nodes = {
        "dataset_logger_node": ([f"directory:={out}"], env),
        "episode_recorder_node": ([f"episodes:={args.episodes}"], env),
        "pd_controller_node": ([], env),
        "policy_node": ([f"policy_dir:={Path(args.policy).resolve()}"], env),
    }
    if args.learn:  # as robot.launch.py deterministic:=false beside learning.launch.py
        nodes["policy_node"][0].append("deterministic:=false")
        nodes["learner_node"] = ([f"policy_dir:={Path(args.policy).resolve()}",
                                  f"run_dir:={Path(args.learn).resolve()}"], env)

    procs, robot = [], []  # the stand-in robot stops last: the controller's parting damping reaches it
    dead, watch, tally = [], None, RecordingTally(args.episodes, grace=args.logger_grace)
    # `kill` or a closed terminal stops the nodes as Ctrl-C does (exit 143 / 129), instead of leaving them
    # running on their own, the simulated robot still walking and recording.
    before = set(episode_files(out))
    with stop_signals_raise_exit():
        try:
            if args.standin:
                robot.append(_start_standin(args.terrain, params, env, nodes, args.operator_delay,
                                            (args.battery, args.battery_drain)))
            for module, (overrides, node_env) in nodes.items():
                procs.append(subprocess.Popen(node_command(module, overrides, params), env=node_env))
                print(f"started {module} (pid {procs[-1].pid})")
            seen: dict[str, int] = {}  # the learner's rows already told (a resumed run folder holds earlier ones)
            if args.learn:
                _learner_news(Path(args.learn), seen)
            # Only a counted recording needs the recorder's episode ends (and the DDS participant that hears
            # them); without a limit the logger's own log names an episode it never got.
            watch = RecorderWatch() if args.episodes else None
            while all(p.poll() is None for p in procs + robot):
                time.sleep(1.0)  # supervising loop: report progress, notice a dead node
                for line, bad in _learner_news(Path(args.learn), seen) if args.learn else []:
                    print(line, file=sys.stderr if bad else sys.stdout)
                if _tally_recording(tally, watch, out, before):
                    break
            dead = [p.args[2] for p in procs + robot if p.poll() not in (None, 0)]  # args[2] is the module
            if dead:
                print(f"node(s) exited: {', '.join(dead)}", file=sys.stderr)
        finally:
            if watch is not None:
                watch.close()
            for p in stop_processes(*procs) + stop_processes(*robot):
                print(f"{p.args[2]} ignored SIGTERM for 10 s and was killed", file=sys.stderr)
    if tally.lost:
        print(f"{len(tally.written)} episode(s) recorded in {out}; episode(s) {_ids(tally.lost)} never reached "
              "the dataset_logger (its log says which steps arrived and why)", file=sys.stderr)
    return 1 if dead or tally.lost else 0


def _check_parameters_file(params: Path) -> None:
    """A ROS parameters file every node can read, or one line: each node's own parser failed in a traceback of
    its own (four of them) after bringup had started it."""
    import yaml

    from .learning.config import yaml_problem

    try:
        data = yaml.safe_load(params.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"parameters file {params} is not valid YAML ({yaml_problem(exc)})") from None
    except UnicodeDecodeError:
        raise ValueError(f"parameters file {params} is not a YAML file (not text)") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) and isinstance(v.get("ros__parameters"), dict)
                                             for v in data.values()):
        raise ValueError(f"parameters file {params} must map node names to ros__parameters, as config/sim.yaml "
                         "does (/**/node_name: {ros__parameters: {name: value}})")


def _tally_recording(tally: RecordingTally, watch: RecorderWatch | None, out: Path, before: set[Path]) -> bool:
    """Take in the logger's new files and the recorder's episode ends, say what changed; True once the
    episodes asked for are all accounted for."""
    from .robot.episodes import episode_files

    # This session's files only: a folder used before (the default --out) holds earlier ones.
    if tally.take_files(set(episode_files(out)) - before):
        print(f"{len(tally.written)} episode(s) recorded in {out}")
    now = time.monotonic()
    for end in watch.ends() if watch is not None else []:
        tally.on_end(end.episode_id, end.transitions, now)
        if end.transitions == 0:
            print(f"episode {end.episode_id} ended before its first transition ({end.reason}): nothing to record")
    if lost := tally.newly_lost(now):
        print(f"episode(s) {_ids(lost)}: ended by the recorder, but no file from the dataset_logger "
              f"{tally.grace:g} s later; not waiting for it (see the logger's log)", file=sys.stderr)
    return tally.finished()


def _ids(ids: list[int]) -> str:
    return ", ".join(str(i) for i in ids)


def cmd_estop(args: argparse.Namespace) -> int:
    from .nodes.operator import NoController, call_estop

    try:
        ok, message = call_estop(args.action == "engage", args.timeout)
    except NoController as exc:
        print(f"uni-o4 estop: error: {exc}", file=sys.stderr)
        return 2
    print(message)
    return 0 if ok else 1


def _learner_news(run_dir: Path, seen: dict[str, int]) -> list[tuple[str, bool]]:
    """What the learner in `run_dir` did since the last call, as (line, is it bad news): the versions it
    published (its timeline) and the policy node's refusals of them (refused.jsonl). `seen` keeps the
    rows already told."""
    from .learning.jsonlines import read_jsonl

    news = []
    for name in ("timeline", "refused"):
        path = run_dir / f"{name}.jsonl"
        rows = read_jsonl(path) if path.is_file() else []
        for row in rows[seen.get(name, 0):]:
            if name == "timeline":
                news.append((f"the learner published policy version {row['version']} (its policy folder: "
                             f"{run_dir / 'policy'})", False))
            elif row.get("rolled_back"):
                news.append((f"the policy node refused version {row['version']}: the learner went back to version "
                             f"{row['running']}, which the robot runs, and learns on (the policy node's log says "
                             "why)", True))
            else:
                news.append((f"the policy node refused version {row['version']} and the robot runs version "
                             f"{row['running']}: the learner waits (the policy node's log says why)", True))
        seen[name] = len(rows)
    return news


def _start_standin(terrain: str, params: Path, env: dict[str, str], nodes: dict,
                   operator_delay: float, battery: tuple[float, float] = (100.0, 0.0)) -> subprocess.Popen:
    """Start the stand-in Go1 carrying a stand-in T265 where the parameters file mounts the camera (and
    an operator for its falls, who re-arms with the controller's remote_rearm buttons), and point the
    controller and the odometry node (added to `nodes`) at them."""
    import yaml

    from .sim.go1_env import TERRAINS
    from .sim.go1_udp_robot import standin_bringup

    if terrain not in TERRAINS:
        raise ValueError(f"unknown terrain {terrain!r} ({' | '.join(sorted(TERRAINS))})")
    if not (math.isfinite(operator_delay) and operator_delay >= 0):  # nan read as "no operator", inf as forever
        raise ValueError(f"--operator-delay must be a number of seconds >= 0, got {operator_delay}")
    if not (0 < battery[0] <= 100 and 0 <= battery[1] < math.inf):
        raise ValueError(f"--battery must be in (0, 100] and --battery-drain >= 0, got {battery[0]} and {battery[1]}")
    from .nodes.parameters_file import node_parameters

    sections = yaml.safe_load(params.read_text())
    odometry, controller = node_parameters(sections, "odometry"), node_parameters(sections, "pd_controller")
    rearm = str(controller.get("remote_rearm", ""))
    operator = (operator_delay, rearm, float(controller.get("max_tilt", 1.0))) if operator_delay > 0 else None
    robot_cmd, robot_overrides, camera_env = standin_bringup(
        terrain, env, odometry.get("mount_xyz", [0.25, 0.0, 0.05]), odometry.get("mount_rpy", [0.0] * 3), operator,
        battery)
    robot = subprocess.Popen(robot_cmd, env=env, stdout=subprocess.PIPE, text=True)
    print(f"started the stand-in Go1 with a T265 ({terrain}; pid {robot.pid})")
    _wait_until_listening(robot)
    if operator is not None:
        print(f"after a fall a stand-in operator stands it up {operator_delay:g} s later and "
              + (f"re-arms with {rearm} on the remote" if rearm else
                 "leaves the re-arm to you (no remote_rearm in the parameters): `uni-o4 estop rearm`"))
    nodes["pd_controller_node"] = (robot_overrides, env)
    nodes["odometry_node"] = ([], camera_env)
    return robot


def _wait_until_listening(robot: subprocess.Popen, timeout: float = 120.0) -> None:
    """Return once the stand-in Go1 serves its low-level link; its later output is passed on. Started at
    once, the controller could ask before MuJoCo had loaded (seen on a loaded 2-core machine): no LowState
    within connect_timeout latched its e-stop, for a person to re-arm, and the rehearsal has none."""
    deadline = threading.Timer(timeout, robot.kill)
    deadline.start()
    try:
        for line in robot.stdout:  # ends if it exits
            print(line, end="", flush=True)
            if "listening on" in line:
                break
        else:
            robot.wait()
            from .field.node_graph import NodeGraphError

            raise NodeGraphError(f"the stand-in Go1 never listened: it exited with code {robot.returncode} "
                                 f"(it is stopped if not listening after {timeout:g} s)")
    except BaseException:
        robot.kill()
        robot.wait()
        raise
    finally:
        deadline.cancel()
    threading.Thread(target=_pass_on, args=(robot.stdout,), daemon=True).start()


def _pass_on(stream) -> None:
    for line in stream:
        print(line, end="", flush=True)


def cmd_plot(args: argparse.Namespace) -> int:
    from .learning.scalars import plot_series, read_log, timeline_series
    from .robot.episodes import episode_files, episode_series

    run = Path(args.run_dir)
    if not run.is_dir():
        raise FileNotFoundError(f"{run} is not a folder")
    if (run / "scalars.csv").is_file():
        source, series, png, x = run / "scalars.csv", read_log(run / "scalars.csv"), run / "scalars.png", "step"
    elif (run / "timeline.jsonl").is_file():  # a learner's run folder (learning.launch.py, bringup --learn)
        source, png, x = run / "timeline.jsonl", run / "timeline.png", "policy version"
        series = timeline_series(source)
    elif episode_files(run):  # a recording (the dataset_logger's folder)
        source, series, png, x = run, episode_series(run), run / "episodes.png", "episode (file number)"
    else:
        # `uni-o4 demo`'s folder holds its runs one level down (offline/, online/): name them
        inside = sorted({f.parent.name + "/" for pattern in ("*/scalars.csv", "*/timeline.jsonl", "*/episode_*.hdf5")
                         for f in run.glob(pattern)})
        raise FileNotFoundError(f"{run} holds no scalars.csv (a training run), timeline.jsonl (a learner's run) "
                                "or episode_*.hdf5 files (a recording)" +
                                (f"; its subfolder(s) {', '.join(inside)} do: uni-o4 plot {run / inside[0]}"
                                 if inside else ""))
    if not series:
        rows = 0 if source.is_dir() else sum(1 for line in source.read_text(errors="replace").splitlines()[
            1 if source.suffix == ".csv" else 0:] if line.strip())
        raise ValueError(f"{source}: none of its {rows} rows could be read (damaged?)" if rows else
                         f"{source}: nothing logged yet")
    print(plot_series(series, png, title=str(source), xlabel=x))
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    from .learning.config import apply_overrides
    from .sim.pretrain import PretrainConfig, pretrain

    check_run_folder(args.out, "pretrain", "--out")
    cfg = apply_overrides(PretrainConfig(seed=args.seed), args.config, args.overrides)
    if args.steps:
        cfg.ppo.total_steps = args.steps
    if args.n_envs:
        cfg.ppo.n_envs = args.n_envs
    final = pretrain(cfg, args.out, progress=not args.no_progress)
    print(f"pretrained policy: {final}")
    return 0


def cmd_bag2h5(args: argparse.Namespace) -> int:
    from .data import validate, write_hdf5
    from .data.bag import bag_to_dataset

    if os.path.lexists(args.out):  # a dangling link too; before reading what may be gigabytes of bag
        raise FileExistsError(f"{args.out} exists: not replaced (choose another path, or remove it first)")
    # Likewise a folder it cannot be written into: said after the whole bag was read, as the OS's "File exists"
    # for a file on its path, or naming the temporary file it was written to first.
    folder = next(p for p in Path(args.out).absolute().parents if p.exists())
    if not folder.is_dir():
        raise NotADirectoryError(f"--out {args.out}: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"--out {args.out}: cannot write into {folder}")
    ds = bag_to_dataset(args.bag, args.topic)
    if ds.metadata.get("salvaged_from_unclosed_bag"):
        damage = ds.metadata.get("salvage_damage")
        print(f"warning: {args.bag} was never closed (its recorder was killed or lost power): read every "
              f"message written out before that; not read: {ds.metadata['salvage_cut_bytes']} byte(s) cut "
              "short at its end" + (f"; {damage}" if damage else ""), file=sys.stderr)
    if ds.metadata.get("salvaged_from_damaged_bag"):
        print(f"warning: {args.bag} was damaged after it was written (a bad copy, a failing disk?): read every "
              f"message of its undamaged chunks; not read: {ds.metadata['salvage_damage']}", file=sys.stderr)
    validate(ds)
    path = write_hdf5(args.out, ds)
    left_out = int(ds.metadata.get("left_out_non_finite", 0))
    runs = int(ds.metadata.get("recorder_runs", 1))
    print(f"{path}: {len(ds)} transitions in {ds.metadata['episodes']} episode(s)"
          + (f" of {runs} recorder runs (infos/recorder_run)" if runs > 1 else "") + ", "
          f"{int(ds.terminals.sum())} terminal, {int(ds.timeouts.sum())} timeouts"
          + (f"; {left_out} left out for NaN/inf values" if left_out else "")
          + (f"; {ds.metadata['left_out_malformed']} left out for other dimensions than most of their episode's"
             if ds.metadata.get("left_out_malformed") else "")
          + (f"; {ds.metadata['left_out_episodes']} episode(s) left out whole, no transition of them usable"
             if ds.metadata.get("left_out_episodes") else "")
          + (f"; {ds.metadata['missing_steps']} never recorded (steps missing inside episodes)"
             if ds.metadata.get("missing_steps") else "")
          + (f"; {ds.metadata['left_out_bad_session']} left out for a recorder_session that is no recorder's"
             if ds.metadata.get("left_out_bad_session") else "")
          + (f"; {ds.metadata['left_out_earlier_run']} left out as a recorder run's that started before one "
             "already recorded (an old bag played back while this one recorded)"
             if ds.metadata.get("left_out_earlier_run") else ""))
    return 0


def cmd_field(args: argparse.Namespace) -> int:
    from .field.pipeline import FieldPipeline, field_config

    if not args.sim:
        raise ValueError("only --sim is available in this build; on the robot start the nodes with "
                         "`ros2 launch uni_o4_ros robot.launch.py` and run the learner there")
    check_run_folder(args.out, "field", "--out")
    cfg = field_config(args.budget, policy=args.policy, terrain=args.terrain, record_steps=args.record_steps,
                       online_steps=args.online_steps, low_speed=args.low_speed, high_speed=args.high_speed,
                       offline_threads=args.offline_threads, eval_episodes=args.eval_episodes, seed=args.seed,
                       realtime_factor=args.realtime_factor)
    FieldPipeline(cfg, args.out, progress=not args.no_progress).run()
    return 0


COMMANDS = {
    "collect": cmd_collect, "field": cmd_field, "bag2h5": cmd_bag2h5, "pretrain": cmd_pretrain, "offline": cmd_offline,
    "online": cmd_online, "evaluate": cmd_evaluate, "demo": cmd_demo, "plot": cmd_plot, "bringup": cmd_bringup,
    "estop": cmd_estop,
}


# Gymnasium's half_cheetah.xml uses an attribute MuJoCo 3.3+ deprecates; MuJoCo prints the
# notice on every environment made, which reads like a fault of ours and buries our one-line
# errors. Only that notice is dropped: every other MuJoCo warning (unstable simulation, NaN
# controls) still reaches stderr as MuJoCo prints it.
_HARMLESS_MUJOCO_WARNINGS = ("compiler attribute 'settotalmass' is deprecated",)


def _quiet_known_mujoco_warnings() -> None:
    import mujoco

    def warn(msg: str) -> None:
        if not msg.startswith(_HARMLESS_MUJOCO_WARNINGS):
            print(f"WARNING: {msg}", file=sys.stderr)

    mujoco.set_mju_user_warning(warn)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # said by the command's own parser: its usage, and `uni-o4 collect: error:` as for other mistakes
        commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        commands.choices[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    from .data import DatasetError
    from .field.node_graph import NodeGraphError
    from .learning.checkpoint import CheckpointError
    from .learning.offline import TrainingStopped

    try:
        env = getattr(args, "env", None)
        if env and env.lower().startswith("go1") and args.command != "offline":
            raise ValueError(f"--env {env}: the Go1 is no Gymnasium task; `uni-o4 field` and `uni-o4 bringup` run "
                             f"it (simulated), `uni-o4 offline --env go1` learns from its recordings")
        if args.command in ("estop", "bringup", "field"):  # the commands that start ROS nodes
            _check_ros_domain()
        if env and not env.lower().startswith("go1"):
            _quiet_known_mujoco_warnings()
            _check_env(env, mujoco=args.command in ("collect", "demo"))
        return COMMANDS[args.command](args)
    except (DatasetError, CheckpointError, OSError, ValueError, KeyError, NodeGraphError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        if isinstance(exc, OSError) and exc.filename and exc.strerror:  # an output under a file, a full disk
            msg = f"{exc.filename}: {exc.strerror}"
        print(f"uni-o4 {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except TrainingStopped as exc:
        print(f"uni-o4 {args.command}: interrupted: {exc}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(f"\nuni-o4 {args.command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
