"""`uni-o4 field --sim` with a tiny budget: the whole robot story through real node processes over
DDS (record on the mattress -> offline Uni-O4 from the deployed policy -> online PPO in the
learner node with hot-swaps -> evaluation -> report), then a rerun that resumes instead of redoing."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import poll_process_table, process_table
from uni_o4_ros.robot.episodes import read_episodes


def test_tiny_field_run_records_learns_swaps_and_reports(tmp_path, ros_env, standing_policy):
    out = tmp_path / "field"
    cmd = [sys.executable, "-m", "uni_o4_ros.cli", "field", "--sim", "--budget", "tiny", "--policy",
           str(standing_policy), "--out", str(out), "--no-progress"]
    run = subprocess.run(cmd, env=ros_env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]

    recorded = read_episodes(out / "record" / "episodes")
    assert len(recorded.rewards) == 200  # the tiny budget's 200 transitions: the last episode is cut there
    assert recorded.timeouts[-1] and not recorded.terminals[-1]  # as a truncation, so it still bootstraps
    assert set(recorded.infos["policy_version"].tolist()) == {0}  # all from the deployed simulator policy
    assert np.all(recorded.rewards > 0) and np.all(recorded.rewards <= 0.03)  # Table 3 bounds

    offline = json.loads((out / "stages" / "offline.json").read_text())
    assert np.isfinite(offline["am_q"]) and offline["transitions"] == len(recorded.rewards)
    # The robot gets the paper's choice: the highest AM-Q among the simulator policy (the 4
    # starting members), the accepted behaviour policies and the final targets.
    sel = json.loads((out / "offline" / "selection.json").read_text())
    assert sel["rule"] == "am_q" and len(sel["candidates"]) == 12
    assert sel["index"] == int(np.argmax(sel["scores"]))
    assert offline["am_q"] == sel["scores"][sel["index"]]
    # The field budgets use the min of both Q heads, as the paper does (pipeline.py, BENCHMARKS §6.0a).
    final = json.loads((out / "offline" / "final" / "policy.json").read_text())
    assert final["config"]["ope"]["q_head"] == "min"

    # Online: the learner's new weights reached the running policy node and drove the robot.
    versions = []
    for f in sorted((out / "online" / "episodes").glob("episode_*.hdf5")):
        with h5py.File(f, "r") as h:
            versions += h["infos/policy_version"][()].tolist()
    timeline = [json.loads(x) for x in (out / "online" / "learner" / "timeline.jsonl").read_text().splitlines()]
    # The offline stage's policy is version 1, as the learner node published it (final/ says so): the online
    # learner starts there, and its first update is version 2
    assert json.loads((out / "offline" / "final" / "policy.json").read_text())["version"] == 1
    assert timeline and (timeline[0]["version"], timeline[0]["made_from"]) == (2, 1)
    assert min(versions) == 1 and max(versions) >= 2 and versions == sorted(versions)  # swapped in, never back
    learner = json.loads((out / "online" / "learner" / "learner.json").read_text())
    assert learner["config"]["actor_lr"] == 3e-5  # the field's online_actor_lr (Table 5) reached the node
    # The tiny budget drives the simulated robot at twice real time; the controller reports how many
    # of its active ticks applied a command that answered an older state than the newest.
    for stage in ("record", "online"):
        info = json.loads((out / "stages" / f"{stage}.json").read_text())
        ctl = info["controller"]
        assert info["realtime_factor"] == 2.0 and ctl["active_ticks"] >= 200
        assert 0 <= ctl["late_commands"] <= ctl["active_ticks"]

    n_episodes = sum(len(list((out / s / "episodes").glob("*.hdf5"))) for s in ("record", "online"))
    rows = json.loads((out / "evaluation.json").read_text())
    cells = {(r["stage"], r["terrain"], r["command_vx"]) for r in rows}
    for stage in ("simulator", "offline", "online"):
        assert {(stage, "mattress", 0.5), (stage, "mattress", 1.0)} <= cells
    report = (out / "report.md").read_text()
    assert "Commanded speed 0.50 m/s" in report and "Commanded speed 1.00 m/s" in report
    assert report.count("2x real time;") == 2 and report.count("came a tick late") == 2
    assert (out / "report.png").stat().st_size > 10_000

    again = subprocess.run(cmd, env=ros_env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and again.stdout.count("done earlier, skipped") == 5

    assert "never reached the dataset_logger" not in report
    # As if the logger had missed an online episode: the report (redone below) says so.
    online = json.loads((out / "stages" / "online.json").read_text())
    (out / "stages" / "online.json").write_text(json.dumps({**online, "lost_episodes": [7]}))
    # A changed evaluation setting redoes the evaluation and the report, not the robot stages.
    more = subprocess.run([*cmd, "--eval-episodes", "2"], env=ros_env, capture_output=True, text=True, timeout=300)
    assert more.returncode == 0, more.stderr[-3000:]
    assert more.stdout.count("done earlier, skipped") == 3 and "eval_episodes: 1 -> 2" in more.stdout
    rows = json.loads((out / "evaluation.json").read_text())
    assert all(r["episodes"] == 2 and len(r["episode_returns"]) == 2 for r in rows)
    assert sum(len(list((out / s / "episodes").glob("*.hdf5"))) for s in ("record", "online")) == n_episodes
    report = (out / "report.md").read_text()
    for r in rows:  # the table's fall counts are the evaluation's
        if r["terrain"] == "mattress":
            assert f"| {r['stage']} | {r['mean_return']:.3f} ± " in report
            assert f"| {sum(r['episode_fell'])} of 2 | {sum(r['episode_trunk_hit'])} of 2 |" in report
    assert report.count("| simulator → offline |") == 2 and report.count("| offline → online |") == 2
    assert "**online: episode(s) 7 never reached the dataset_logger**" in report


def test_field_without_sim_or_policy_is_a_one_line_error(tmp_path):
    for extra, needle in ((["--policy", str(tmp_path)], "only --sim"),
                          (["--sim", "--policy", str(tmp_path / "missing")], "no pretrained policy")):
        run = subprocess.run([sys.executable, "-m", "uni_o4_ros.cli", "field", "--out", str(tmp_path / "o"), *extra],
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 2 and needle in run.stderr and "Traceback" not in run.stderr


def test_paper_budget_is_the_papers_robot_run():
    """`--budget paper` must mean the paper's sizes (A.4, Table 5), not a relabelled small run."""
    from uni_o4_ros.field.pipeline import OFFLINE_BUDGETS, field_config
    from uni_o4_ros.learning.config import load_config

    cfg = field_config("paper")
    assert (cfg.record_steps, cfg.online_steps, cfg.rollout_steps) == (180_000, 100_000, 2048)
    offline = load_config(None, OFFLINE_BUDGETS[cfg.offline_budget])
    assert offline.ope.horizon == 20  # the robot's AM-Q horizon
    assert (offline.value.steps, offline.value.q_hidden, offline.value.expectile) == (2_000_000, (1024, 1024), 0.7)
    assert offline.improvement.steps == 10_000 and offline.value.lr == 1e-4


def test_stage_comparison_calls_a_change_inside_two_standard_errors_noise():
    from uni_o4_ros.field.report import compare_stages

    def row(returns, fell):
        n = len(returns)
        return {"mean_return": float(np.mean(returns)), "std_return": float(np.std(returns)), "episodes": n,
                "se_return": float(np.std(returns, ddof=1) / np.sqrt(n)), "falls_per_episode": sum(fell) / n}

    walker, faller = row([20.0, 19.0, 21.0, 20.0], [0, 0, 0, 0]), row([1.0, 2.0, 1.5, 1.5], [1, 1, 1, 1])
    c = compare_stages(faller, walker)
    assert c["verdict"] == "better" and c["diff"] == 18.5 and (c["falls_before"], c["falls_after"]) == (4, 0)
    assert compare_stages(walker, faller)["verdict"] == "worse"
    # one fall in five episodes: the mean drops by 3.7, but the spread makes it noise
    mixed = row([20.0, 20.0, 1.5, 20.0, 20.0], [0, 0, 1, 0, 0])
    c = compare_stages(row([20.0, 20.5, 19.5, 20.0, 20.0], [0] * 5), mixed)
    assert c["verdict"] == "within noise" and c["falls_after"] == 1 and c["diff"] < -3
    # rows written before per-episode returns: the standard error comes from the population std
    legacy = {k: v for k, v in mixed.items() if k != "se_return"}
    assert np.isclose(compare_stages(legacy, legacy)["se"], compare_stages(mixed, mixed)["se"])


def test_a_rerun_reuses_a_stage_only_under_the_settings_it_ran_with(tmp_path, standing_policy):
    """The pipeline's own skip / redo decisions; the stages themselves are replaced by ones that only
    record that they ran (the node stages are exercised by the tiny run above)."""
    import re
    import signal

    from uni_o4_ros.field.pipeline import FieldPipeline, field_config
    from uni_o4_ros.nodes.processes import _raise_exit, stop_signals

    handlers = []  # the SIGTERM and SIGHUP handlers each stage ran under

    class Recorded(FieldPipeline):
        ran: list[str] = []

        def __getattribute__(self, name):
            if name.startswith("stage_"):
                stage = name[len("stage_"):]
                return lambda: (Recorded.ran.append(stage),
                                handlers.append(tuple(map(signal.getsignal, stop_signals()))),
                                self._finish(stage, {}))
            return super().__getattribute__(name)

    def run(**overrides) -> list[str]:
        Recorded.ran = []
        Recorded(field_config("tiny", **{"policy": str(standing_policy), **overrides}), tmp_path / "run",
                 progress=False, echo=lambda s: None).run()
        return Recorded.ran

    everything = ["record", "offline", "online", "evaluate", "report"]
    assert run() == everything
    # Every stage runs with SIGTERM and SIGHUP (unless nohup ignores it) turned into SystemExit, so a killed
    # or hung-up run stops its node processes and evaluation workers; the caller's handlers are back afterwards.
    assert signal.SIGTERM in stop_signals() and len(handlers) == 5
    assert all(h is _raise_exit for hs in handlers for h in hs) and len(handlers[0]) == len(stop_signals())
    assert all(signal.getsignal(s) is not _raise_exit for s in stop_signals())
    assert run() == []
    # Learning settings redo their stage and every later one: the recording they learn from is kept.
    assert run(online_steps=300) == ["online", "evaluate", "report"]
    now = {"online_steps": 300, "online_actor_lr": 1e-4}
    assert run(**now) == ["online", "evaluate", "report"]
    # A finished recording is never redone under other settings (on a robot it is hours of walking): the
    # rerun is refused, naming them, before anything runs or config.json changes.
    config = (tmp_path / "run" / "config.json").read_bytes()
    refused = "a finished record stage that these settings would redo (seed: 0 -> 3)"
    with pytest.raises(ValueError, match=re.escape(refused)):
        run(**now, seed=3)
    assert Recorded.ran == [] and (tmp_path / "run" / "config.json").read_bytes() == config
    # The graph's pace adds no latency (the simulated robot waits for each command): nothing is redone.
    assert run(**now, realtime_factor=1.0) == []
    # An evaluation made under an earlier fall rule is redone with the report, and nothing else.
    marker = tmp_path / "run" / "stages" / "evaluate.json"
    info = json.loads(marker.read_text())
    info["settings"]["evaluation_protocol"] = 1
    marker.write_text(json.dumps(info))
    assert run(**now) == ["evaluate", "report"]
    # the same weights under another path are the same policy; other weights would redo the recording
    moved = tmp_path / "moved_policy"
    shutil.copytree(standing_policy, moved)
    assert run(**now, policy=str(moved)) == []
    blob = bytearray((moved / "policy.safetensors").read_bytes())
    blob[-1] ^= 1
    (moved / "policy.safetensors").write_bytes(bytes(blob))
    with pytest.raises(ValueError, match="finished record stage .*policy_sha256: "):
        run(**now, policy=str(moved))
    (moved / "policy.safetensors").write_bytes(standing_policy.joinpath("policy.safetensors").read_bytes())
    # markers written before stages kept their settings are judged by that run's config.json (policy: moved)
    for m in (tmp_path / "run" / "stages").glob("*.json"):
        m.write_text("{}")
    assert run(**now) == []
    for m in (tmp_path / "run" / "stages").glob("*.json"):
        m.write_text("{}")
    assert run(**now, eval_episodes=4) == ["evaluate", "report"]
    # a marker cut short, as by a power cut before markers were written atomically, is not trusted:
    # that stage and every later one run again, with no traceback
    (tmp_path / "run" / "stages" / "online.json").write_text("")
    assert run(**now, eval_episodes=4) == ["online", "evaluate", "report"]
    assert json.loads((tmp_path / "run" / "stages" / "online.json").read_text())["settings"]
    # an interrupted stage leaves no marker: it and every stage after it run again
    (tmp_path / "run" / "stages" / "online.json").unlink()
    assert run(**now, eval_episodes=4) == ["online", "evaluate", "report"]
    # the record marker above is still the old kind ("{}"), judged by config.json alone: with that cut short
    # too its settings are unknown, and the finished recording is kept, not redone
    (tmp_path / "run" / "config.json").write_text('{"policy": ')
    with pytest.raises(ValueError, match="finished record stage .*settings unknown"):
        run(**now, eval_episodes=4)
    assert (tmp_path / "run" / "config.json").read_text() == '{"policy": '


def test_a_rerun_that_would_lose_a_finished_recording_stops_before_touching_it(tmp_path, ros_env, standing_policy,
                                                                              capsys):
    """A new --policy the Go1 cannot run (a corrupt file, another task's policy) used to clear the finished
    recording and rewrite config.json before the nodes failed on it; another policy or seed redid the
    recording silently. Each now ends with one line and leaves the run as it was."""
    from uni_o4_ros.cli import main
    from uni_o4_ros.field.pipeline import FieldPipeline, field_config
    from uni_o4_ros.learning.normalizer import StateNormalizer
    from uni_o4_ros.learning.offline import save_policy
    from uni_o4_ros.learning.policy import make_policy

    class Finished(FieldPipeline):  # a finished run without its ~50 s of nodes: each stage leaves its marker
        def __getattribute__(self, name):
            if name.startswith("stage_"):
                return lambda: self._finish(name[len("stage_"):], {})
            return super().__getattribute__(name)

    out = tmp_path / "run"
    Finished(field_config("tiny", policy=str(standing_policy)), out, progress=False, echo=lambda s: None).run()
    (out / "record" / "episodes").mkdir(parents=True)
    with h5py.File(out / "record" / "episodes" / "episode_000001.hdf5", "w") as h:
        h["rewards"] = np.full(200, 0.01, np.float32)
    before = {f: f.read_bytes() for f in out.rglob("*") if f.is_file()}

    corrupt = tmp_path / "corrupt"
    shutil.copytree(standing_policy, corrupt)
    (corrupt / "policy.safetensors").write_bytes(b"not a safetensors file")
    hopper, other = tmp_path / "hopper", tmp_path / "other"
    save_policy(hopper, "policy", make_policy(11, 3, hidden=(16,)), StateNormalizer(np.zeros(11), np.ones(11)))
    save_policy(other, "policy", make_policy(290, 12, hidden=(16,)), StateNormalizer(np.zeros(290), np.ones(290)))
    for extra, needle in ((["--policy", str(corrupt)], f"the policy in {corrupt} cannot be loaded"),
                          (["--policy", str(hopper)], "expects obs/act dims 11/3; the Go1's are 290/12"),
                          (["--policy", str(other)], "holds a finished record stage that these settings would redo "
                                                     "(policy_sha256: "),
                          (["--policy", str(standing_policy), "--seed", "3"], "(seed: 0 -> 3)")):
        code = main(["field", "--sim", "--budget", "tiny", "--out", str(out), "--no-progress", *extra])
        err = capsys.readouterr().err
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
        assert {f: f.read_bytes() for f in out.rglob("*") if f.is_file()} == before, extra


def test_killing_the_pipeline_stops_its_node_processes(tmp_path, ros_env):
    """`kill` (SIGTERM) of a field run must not leave its nodes running on their own (seen: a
    controller and a recorder still up after their pipeline was killed)."""
    import os
    import signal

    marker = f"directory:={tmp_path / 'episodes'}"  # only the node's command line carries it
    child = subprocess.Popen([sys.executable, "-c", (
        "from pathlib import Path\n"
        "from uni_o4_ros.field.node_graph import run_until\n"
        f"run_until({{'dataset_logger_node': [{marker!r}]}}, lambda: False, Path({str(tmp_path / 'logs')!r}), "
        "dict(__import__('os').environ))\n")], env=ros_env)

    def node_pids() -> list[int]:
        return [pid for pid, _, cmd in process_table() if pid != child.pid and marker.encode() in cmd]

    try:
        assert poll_process_table(lambda: bool(node_pids()), 60), "the node never started"
        child.send_signal(signal.SIGTERM)
        code = child.wait(timeout=60)
        assert poll_process_table(lambda: not node_pids(), 30), f"node processes left running: {node_pids()}"
        assert code == 128 + signal.SIGTERM  # ended through its own exit path, not cut off
    finally:
        child.kill()
        for pid in node_pids():
            os.kill(pid, signal.SIGKILL)


def test_the_record_stage_is_reproducible_from_its_seed(tmp_path, ros_env):
    """Same seed, same recording to the last bit, although four node processes exchange it over DDS;
    another seed explores differently. (The graph runs in lockstep, a reset is shown before anything
    steps, the exploration noise is seeded from --seed, rewards use the state each step answered, and
    a fall ends the episode at the step that answered the fallen state.) Full-length episodes: the
    simulator policy falls on the mattress, and where a fall ends an episode is part of what must repeat."""
    import torch

    from uni_o4_ros.field.pipeline import FieldPipeline, field_config
    from uni_o4_ros.learning.termination import rule_for_env

    def record(seed: int, name: str):
        cfg = field_config("tiny", seed=seed, episode_steps=1000, record_steps=600, realtime_factor=4.0)
        FieldPipeline(cfg, tmp_path / name, progress=False, echo=lambda *_: None).stage_record()
        return read_episodes(tmp_path / name / "record" / "episodes")

    a, b, other = record(0, "a"), record(0, "b"), record(1, "c")
    assert len(a.rewards) == len(b.rewards) == 600 and a.terminals.sum() >= 1  # a fall ended an episode
    # A fall's row leads into the fallen state (the controller's fall rule and the offline stage's hold for it),
    # not s' = s as it was: a step into a fall that changed nothing, which the dynamics model learned.
    falls = torch.as_tensor(a.next_observations[a.terminals])
    assert not np.array_equal(a.next_observations[a.terminals], a.observations[a.terminals])
    assert rule_for_env("go1")(falls).all()
    for key in ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts"):
        assert np.array_equal(getattr(a, key), getattr(b, key)), key
    assert np.array_equal(a.observations[0], other.observations[0])  # the same start ...
    assert not np.array_equal(a.actions[0], other.actions[0])  # ... explored with other noise


def test_a_node_stage_goes_on_without_episodes_the_logger_never_got(tmp_path, ros_env):
    """The logger stopped (SIGSTOP: a frozen or starved process) after the first episode's file, past DDS's
    lease: the recorder spends its total_steps, and the stage used to wait for the missing files until its
    timeout (10x the stage, then a failure). It now names the episodes without files once the logger's grace
    has passed and goes on with what was recorded."""
    import os
    import signal
    import threading
    import time

    from uni_o4_ros.field.pipeline import FieldPipeline, field_config
    cfg = field_config("tiny", episode_steps=100, record_steps=300, realtime_factor=4.0)
    said: list[str] = []
    pipeline = FieldPipeline(cfg, tmp_path / "run", progress=False, echo=said.append)
    pipeline.logger_grace = 5.0  # any grace shows it: the logger never wakes (the default, 30 s, is the product's)
    first = tmp_path / "run" / "record" / "episodes" / "episode_000001.hdf5"
    stopped: list[int] = []

    def stop_the_logger() -> None:  # beside the stage, which runs in this (main) thread for its signal handlers
        if poll_process_table(first.exists, 120):
            stopped.extend(pid for pid, ppid, cmd in process_table()
                           if ppid == os.getpid() and b"dataset_logger_node" in cmd)
            for pid in stopped:
                os.kill(pid, signal.SIGSTOP)

    watcher = threading.Thread(target=stop_the_logger)
    watcher.start()
    start = time.monotonic()
    try:
        info = pipeline._drive("record", Path(cfg.policy), cfg.record_steps, explore=True, learner=False)
    finally:
        watcher.join()
    assert stopped, "the logger was never seen"
    written = sorted(int(f.stem.split("_")[1]) for f in first.parent.glob("episode_*.hdf5"))
    lost = info["lost_episodes"]  # every episode after the stop (how many: falls on the mattress decide)
    assert written == list(range(1, len(written) + 1)) and lost == list(range(len(written) + 1, written[-1] + 1 +
                                                                              len(lost))) and lost
    assert info["steps"] == len(read_episodes(first.parent).rewards) < cfg.record_steps
    assert info["episodes"] == len(written)
    named = [line.split("episode(s) ")[1].split(" ended")[0] for line in said if "ended, but no file" in line]
    assert sorted(int(e) for line in named for e in line.split(", ")) == lost  # each named once
    assert time.monotonic() - start < pipeline.logger_grace + 120  # not the stage's 600 s timeout


def test_a_damaged_or_hostile_episode_file_stops_the_run_with_one_line_naming_it(tmp_path):
    """The pipeline's progress count and the report read the episode files with h5py directly: a file whose
    'rewards' lived in another file (HDF5 external storage) was counted and read as data, and a damaged one
    ended in h5py's words without the file's name. Both go through the validated reader now."""
    from uni_o4_ros.data import DatasetError, OfflineDataset, write_hdf5
    from uni_o4_ros.field.pipeline import field_config, recorded_steps
    from uni_o4_ros.field.report import write_field_report

    def episode(path: Path, n: int, version: bool = True) -> None:
        write_hdf5(path, OfflineDataset(
            np.zeros((n, 3), np.float32), np.zeros((n, 2), np.float32), np.full(n, 0.01, np.float32),
            np.zeros(n, bool), np.r_[np.zeros(n - 1, bool), True], np.zeros((n, 3), np.float32),
            infos={"policy_version": np.full(n, 1, np.int64)} if version else {}, metadata={"episode_id": 1}))

    def refused(read, path: Path) -> str:
        with pytest.raises(DatasetError) as info:
            read()
        said = str(info.value)
        assert said.startswith(f"{path}: ") and "\n" not in said, said
        return said

    out = tmp_path / "field"
    record, online = out / "record" / "episodes", out / "online" / "episodes"
    record.mkdir(parents=True)
    online.mkdir(parents=True)
    episode(record / "episode_000001.hdf5", 5)
    assert recorded_steps(record) == 5
    secret = tmp_path / "policy_update.key"
    secret.write_bytes(bytes(range(4)))
    hostile = record / "episode_000002.hdf5"
    with h5py.File(hostile, "w") as f:  # its rewards are the key's bytes
        f["observations"] = f["next_observations"] = np.zeros((4, 3), np.float32)
        f["actions"] = np.zeros((4, 2), np.float32)
        f.create_dataset("rewards", shape=(4,), dtype="u1", external=[(str(secret), 0, 4)])
        f["terminals"] = f["timeouts"] = np.zeros(4, bool)
    assert "keeps its data outside the file" in refused(lambda: recorded_steps(record), hostile)
    hostile.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))  # a file cut short after its signature
    assert "not a readable HDF5 file" in refused(lambda: recorded_steps(record), hostile)

    (out / "stages").mkdir()
    (out / "evaluation.json").write_text("[]")
    for stage in ("record", "offline", "online"):
        (out / "stages" / f"{stage}.json").write_text("{}")
    episode(online / "episode_000001.hdf5", 5)
    shutil.copy(hostile, online / "episode_000002.hdf5")

    def report() -> None:
        write_field_report(out, field_config("tiny"))

    assert "not a readable HDF5 file" in refused(report, online / "episode_000002.hdf5")
    (online / "episode_000002.hdf5").unlink()
    episode(online / "episode_000002.hdf5", 4, version=False)
    assert "no infos/policy_version" in refused(report, online / "episode_000002.hdf5")
