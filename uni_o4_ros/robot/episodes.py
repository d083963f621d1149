"""Episode recording without ROS: transitions from policy steps, reward from Table 3, boundaries,
and a crash-safe writer (one D4RL-layout HDF5 file per finished episode, written atomically).

A crash of the logger loses at most the episode in progress; every finished episode is a complete
file. `read_episodes(dir)` concatenates them into one OfflineDataset for the learner.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..data import (
    DatasetError,
    OfflineDataset,
    describe_dims,
    finite_transition,
    read_hdf5,
    transition_dims,
    write_hdf5,
)
from ..data.atomic import make_folders
from .observation import is_fresh
from .reward import reward
from .runs import StreamRuns, is_session, remember


@dataclass
class PolicyStep:
    """What the policy did at one tick (as published on `policy_step`)."""

    step_id: int
    observation: np.ndarray
    action: np.ndarray
    log_prob: float
    policy_version: int
    # The velocity command (vx, vy, yaw rate) the policy followed at this tick, as its observation shows
    # it; None: the episode's command. The reward is for this one, so a joystick's change mid-episode
    # is rewarded as the policy saw it.
    command: tuple[float, float, float] | None = None


@dataclass
class RobotMotion:
    """What the robot did during the tick (from odometry and the controller's state)."""

    v_xy: np.ndarray
    v_z: float
    yaw_rate: float
    tau: np.ndarray
    dq: np.ndarray
    ddq: np.ndarray


class StepPairing:
    """Pairs each policy step with the robot state it answered and the odometry of that moment.

    A policy step carries the stamp of the state it answered. In simulation the controller publishes
    that state and its odometry with the same stamp, but the three topics reach the recorder in no
    fixed order (one executor takes whichever is ready first), so a step waits until its own state and
    odometry are in. On the robot the T265 stamps its own clock: a step then takes the newest odometry
    once a newer sample than the step exists. A step never waits longer than `max_wait` seconds (a
    lost sample): it then takes the newest of each, as a recorder without pairing would.
    """

    def __init__(self, max_wait: float = 0.1, keep: int = 64) -> None:
        self.max_wait, self.keep = max_wait, keep
        self._states: dict[int, object] = {}  # insertion ordered: oldest first
        self._odoms: dict[int, object] = {}
        self._pending: deque[tuple[int, float, object]] = deque()  # (stamp, arrival time, step)
        self.newest_state: object | None = None
        self.newest_odom: object | None = None
        self._newest_state_stamp = self._newest_odom_stamp = -1
        self.unpaired = 0  # steps that took the newest samples instead of their own
        # Steps whose own state never came (the controller stamps both, so on the robot too this is a loss:
        # a starved recorder, a lossy link), while odometry pairs by stamp only in simulation.
        self.lost_states = 0

    @property
    def newest_state_stamp(self) -> int:
        """The stamp of the newest state added (-1: none yet)."""
        return self._newest_state_stamp

    def add_state(self, stamp: int, state: object) -> None:
        self.newest_state, self._newest_state_stamp = state, max(self._newest_state_stamp, stamp)
        _keep(self._states, stamp, state, self.keep)

    def add_odom(self, stamp: int, odom: object) -> None:
        self.newest_odom, self._newest_odom_stamp = odom, max(self._newest_odom_stamp, stamp)
        _keep(self._odoms, stamp, odom, self.keep)

    def add_step(self, stamp: int, step: object, now: float) -> None:
        self._pending.append((stamp, now, step))

    def ready(self, now: float) -> list[tuple[object, object, object]]:
        """(step, state, odometry) for every step that can be paired now, oldest first."""
        out = []
        while self._pending:
            stamp, arrived, step = self._pending[0]
            state, odom = self._states.get(stamp), self._odoms.get(stamp)
            odom_known = odom is not None or self._newest_odom_stamp > stamp
            state_known = state is not None or self._newest_state_stamp > stamp
            if not (state_known and odom_known) and now - arrived < self.max_wait:
                break
            if state is None or odom is None:
                self.unpaired += 1
            self.lost_states += state is None
            out.append((step, state if state is not None else self.newest_state,
                        odom if odom is not None else self.newest_odom))
            self._pending.popleft()
        return out


@dataclass
class DampingWatch:
    """How long the robot has been damped in the running episode, from the stamps of its states. The
    controller damps a robot whose policy stopped answering (its watchdog: the policy node died or
    hangs); past `limit` seconds (0 = never) the episode is over, since a transition joining the
    states before and after that would span time the policy did not act in."""

    limit: float = 0.0
    since: int | None = None  # stamp (ns) of the first damped state of this stretch

    def exceeded(self, damped: bool, stamp: int) -> float:
        """Seconds damped so far once past the limit, else 0."""
        if not damped:
            self.since = None
            return 0.0
        if self.since is None or stamp < self.since:
            # A stamp before the stretch began: the controller's wall clock was set back (NTP). Counted from here,
            # the stretch ends at most `limit` late, not as long as the clock went back.
            self.since = stamp
        seconds = (stamp - self.since) * 1e-9
        return seconds if self.limit > 0 and seconds > self.limit else 0.0


def _keep(items: dict[int, object], stamp: int, item: object, keep: int) -> None:
    items[stamp] = item
    while len(items) > keep:
        del items[next(iter(items))]


@dataclass
class EpisodeRecorderCore:
    max_steps: int = 1000
    command_velocity: tuple[float, float, float] = (0.5, 0.0, 0.0)
    episode_id: int = 0
    steps: int = 0
    episode_return: float = 0.0
    _prev: PolicyStep | None = None
    _prev_motion: RobotMotion | None = None
    _last_action: np.ndarray | None = None
    active: bool = False
    stop_requested: bool = False
    # Simulation: the start resets the robot, and policy steps computed before that reset reached
    # the controller still arrive; the episode begins at the first step after it (fresh history).
    wait_for_reset: bool = False
    awaiting_reset: bool = False
    skipped: int = 0  # steps dropped while waiting for the reset, this episode
    # A recording of exactly this many transitions (0 = no limit): the episode running when it is
    # reached ends there as a timeout, so a pipeline does not wait for (and record) a whole extra
    # episode past its budget.
    step_budget: int = 0
    recorded: int = 0  # transitions over every episode

    @property
    def budget_spent(self) -> bool:
        return bool(self.step_budget) and self.recorded >= self.step_budget

    def start(self) -> int:
        self.episode_id += 1
        self.steps, self.episode_return, self._prev, self._last_action = 0, 0.0, None, None
        self.active, self.stop_requested = True, False
        self.awaiting_reset, self.skipped = self.wait_for_reset, 0
        return self.episode_id

    def request_stop(self) -> bool:
        """End the episode at the next step, as a timeout (a truncation, not a failure): that step
        supplies the true next observation, so the last transition can still bootstrap."""
        if not self.active:
            return False
        self.stop_requested = True
        return True

    def on_step(self, step: PolicyStep, motion: RobotMotion) -> dict | None:
        """Pairs consecutive policy steps into a transition (s, a, r, s'); returns it or None."""
        if not self.active:
            return None
        if self.awaiting_reset:
            if not is_fresh(step.observation):
                self.skipped += 1
                return None
            self.awaiting_reset = False
        out = None
        if self._prev is not None:
            out = self._transition(self._prev, step.observation, motion, terminal=False)
            timeout = self.steps >= self.max_steps or self.stop_requested or self.budget_spent
            out["timeout"] = timeout
            if timeout:
                self.active = False
        self._prev, self._prev_motion = step, motion
        return out

    def started_steps(self) -> bool:
        """The episode has its first policy step (the one answering the robot's starting state)."""
        return self.active and not self.awaiting_reset and self._prev is not None

    def truncate(self) -> None:
        """End the episode at its last transition: the pending step's successor was never observed (the
        robot stopped acting on the policy), so no transition is made from it. The caller marks the
        last transition it published as the episode's timeout."""
        self.active = False

    def give_back_if_empty(self) -> bool:
        """An episode that ended before its first transition (an e-stop or a fall as it began) was never
        recorded: its number goes to the next episode. So episode ids stay those of the files (a gap in
        them is how the logger tells an episode lost on the way) and an `episodes` limit counts
        episodes with data."""
        if self.active or self.steps:
            return False
        self.episode_id -= 1
        return True

    def abort(self, next_observation: np.ndarray | None = None, motion: RobotMotion | None = None) -> dict | None:
        """A fall: the pending step ends the episode as a terminal transition into `next_observation`, the
        policy's observation of the first fallen state; that state's `motion` gives the reward, as every other
        step's successor does. Without it (the policy never answered that state) s' is unknown and is written
        as s, with the reward of the pending step's own state: IQL does not read a terminal's s', and the
        dynamics model leaves a terminal with s' = s out (a made-up transition, not the robot's)."""
        out = None
        if self.active and self._prev is not None:
            if next_observation is None:
                out = self._transition(self._prev, self._prev.observation, self._prev_motion, terminal=True)
            else:
                out = self._transition(self._prev, next_observation, motion or self._prev_motion, terminal=True)
        self.active = False
        return out

    def _transition(self, prev: PolicyStep, next_obs: np.ndarray, motion: RobotMotion, terminal: bool) -> dict:
        vx, vy, wz = prev.command if prev.command is not None else self.command_velocity
        last = self._last_action if self._last_action is not None else np.zeros_like(prev.action)
        r, _ = reward(motion.v_xy, np.array([vx, vy]), motion.yaw_rate, wz, motion.v_z, motion.tau, motion.dq,
                      motion.ddq, prev.action, last)
        self._last_action = prev.action
        self.steps += 1
        self.recorded += 1
        self.episode_return += r
        return {"episode_id": self.episode_id, "step": self.steps - 1, "observation": prev.observation,
                "next_observation": np.asarray(next_obs), "action": prev.action, "log_prob": prev.log_prob,
                "reward": r, "terminal": terminal, "timeout": False, "policy_version": prev.policy_version}


@dataclass
class Arrival:
    """What the first row of an episode tells about the rows before it (EpisodeWriter.add)."""

    skipped: list[int] = field(default_factory=list)  # episodes of which no row arrived
    cut_off: list[int] = field(default_factory=list)  # earlier episodes whose last row never arrived
    # Why this row was left out ("" if kept): its observation, next_observation or action has another length
    # than the episode's first row's (or next_observation than observation), so no file could hold both.
    left_out: str = ""
    # Left out as well: a row of a recorder run that started before the one being recorded (an old bag played
    # back beside the robot): its run's session ("" for a publisher naming none), None otherwise.
    earlier_run: str | None = None
    # Left out: a row whose recorder_session is no recorder's (not 32 hex digits): the text, "" otherwise.
    bad_session: str = ""
    # This row is the first of a recorder run never heard before, after another (a restarted recorder): `skipped`
    # then names its episodes before this one.
    new_run: bool = False
    # This row's run, which started before the run recorded so far, is recorded from now on: that one was silent
    # for runs.QUIET_S (a recorder restarted with its clock set back, or a playback while it is paused). The
    # session given up, None otherwise.
    gave_up: str | None = None


@dataclass
class EpisodeWriter:
    """One `episode_NNNNNN.hdf5` per finished episode, numbered by the recorder's episode ids moved
    past every file already in the folder: a second session into the same folder (or a restarted
    recorder, whose ids begin at 1 again) adds files and never replaces one.

    Rows are kept by recorder run (`recorder_session`) and episode: a restarted recorder's episode 1 is
    never merged into the previous run's episode 1. The newest run by start time is the one recorded
    (`runs`, runs.StreamRuns); rows of a run that started before it are left out (`Arrival.earlier_run`) while
    the run recorded is heard; `add`'s `now` (s, monotonic; the clock by default) times its silence."""

    directory: Path
    # Memory for finished episodes waiting for a folder that can take them (disk full, folder gone).
    # Past it the newest is dropped, with an error, instead of the logger growing until the kernel
    # kills it and every waiting episode with it.
    max_unwritten_bytes: int = 10**9
    dropped: list[int] = field(default_factory=list)  # recorder ids of the episodes dropped so far
    _rows: dict[tuple[str, int], list[dict]] = field(default_factory=dict)  # by (recorder session, episode id)
    _unwritten: dict[Path, OfflineDataset] = field(default_factory=dict)  # by destination, oldest first
    _offset: int = 0  # file number - recorder episode id
    _newest_id: int | None = None  # the newest episode id a row arrived for
    # Steps of the episode finish() last wrote that never arrived: (first, last) runs, empty if none.
    last_missing: list[tuple[int, int]] = field(default_factory=list)
    _malformed: dict[tuple[str, int], list[int]] = field(default_factory=dict)  # steps of rows add() left out
    # per episode, how many of its rows have each (observation, action) dimension (insertion-ordered: ties go to
    # the first to arrive)
    _dims: dict[tuple[str, int], Counter[tuple[int, int]]] = field(default_factory=dict)
    last_malformed: int = 0  # rows left out of the episode finish() last wrote for their dimensions
    runs: StreamRuns = field(default_factory=StreamRuns)  # the recorder run being recorded
    earlier_rows: dict[str, int] = field(default_factory=dict)  # rows left out by earlier_run, by session (bounded)
    _heard_runs: dict[str, None] = field(default_factory=dict)  # recorder runs a row was kept of (runs.remember)
    removed_temporary: list[int] = field(default_factory=list)  # sizes of half-written files removed at start
    written: int = 0  # episode files this writer wrote

    def __post_init__(self) -> None:
        self.directory = Path(self.directory)
        make_folders(self.directory)  # synced into its parent: episodes synced into it survive a power cut
        # Half-written episodes of a logger killed mid-write (SIGKILL, power): never read (hidden, no episode's
        # name), but never removed either, on the disk that may have filled up under them.
        # Only those untouched for a minute: another logger sharing the folder may be writing one now.
        for tmp in self.directory.glob(".episode_*.hdf5.*.tmp"):
            with contextlib.suppress(OSError):
                st = tmp.stat()
                if time.time() - st.st_mtime > 60.0:
                    tmp.unlink()
                    self.removed_temporary.append(st.st_size)

    def add(self, t: dict, now: float | None = None) -> Arrival:
        """Keep a row. The recorder's stream is ordered (one publisher, reliable) and numbers episodes 1,
        2, ... (from 1 again when restarted), so the first row of an episode also tells what was lost:
        episodes skipped entirely, and earlier episodes whose last row never came (cut_off, as
        (recorder session, episode id); finish() them to write what did). A row of a newer recorder run
        (a restarted recorder) cuts off every episode of the run before.

        A row that cannot be one (not 1-D, empty, s' of another length) is left out at once; one whose
        dimensions differ from those most of the episode's rows have so far (another publisher on the domain, a
        damaged message) is said (`Arrival.left_out`). The file keeps the dimensions most of the episode's rows
        have, and counts the others in metadata/left_out_malformed: stacked, they failed the episode after its
        rows were taken (the episode and the logger were lost), and judged by the first row alone, one odd first
        row cost every good row after it."""
        session, eid = recorder_run(t)
        arrival = Arrival()
        if not is_session(session):  # written into each file's metadata: only what a recorder draws
            arrival.bad_session = session[:40]
            return arrival
        held = self.runs.current
        choice = self.runs.hear(session, int(t.get("recorder_started_ns", 0)), time.monotonic() if now is None else now)
        if choice == "earlier":
            remember(self.earlier_rows, session, self.earlier_rows.get(session, 0) + 1)
            arrival.earlier_run = session
            return arrival
        if choice == "switch_earlier":
            arrival.gave_up = held.session
        newest = self._newest_id if choice == "same" else None
        if choice == "switch" and held is not None and session not in self._heard_runs:
            # A recorder restarted while this writer listened numbers from 1: episodes of it before this row
            # never arrived (it began before the logger heard it). Not said of a run heard before (taken back), nor
            # of one taken after the held run's silence, whose earlier rows were left out on purpose.
            newest, arrival.new_run = 0, True
        remember(self._heard_runs, session)
        if eid != newest:
            if newest is not None and eid > newest + 1:
                arrival.skipped = list(range(newest + 1, eid))
            arrival.cut_off = [k for k in self._rows if k != (session, eid)]
        self._newest_id = eid
        rows = self._rows.setdefault((session, eid), [])
        dims = transition_dims(t)
        if dims is None:
            self._malformed.setdefault((session, eid), []).append(int(t["step"]))
            arrival.left_out = f"observation/next_observation/action lengths {describe_dims(t)}"
            return arrival
        counts = self._dims.setdefault((session, eid), Counter())
        ahead = _most(counts)  # the episode's dimensions so far
        counts[dims] += 1
        rows.append(t)
        if ahead is not None and dims != ahead:
            arrival.left_out = (f"observation/next_observation/action lengths {describe_dims(t)}, most of the "
                                f"episode's rows so far {ahead[0]}/{ahead[0]}/{ahead[1]}")
        return arrival

    def finish(self, episode_id: int, metadata: dict | None = None,
               session: str | None = None) -> tuple[Path | None, int]:
        """Write the episode of recorder run `session` (None: the run being recorded): its file (None when no
        transition was usable) and how many transitions were left out for NaN/inf values. The file's
        metadata/recorder_session names the run.

        If a file cannot be written (OSError: disk full, the folder gone or replaced), the episode
        stays in memory and the error is raised; the next finish() or flush() writes it first. If the
        episodes waiting would then hold more than `max_unwritten_bytes`, this one is dropped
        (`dropped`) instead."""
        if session is None:
            session = self.runs.current.session if self.runs.current is not None else ""
        rows = self._rows.pop((session, episode_id), [])
        malformed = self._malformed.pop((session, episode_id), [])
        self._dims.pop((session, episode_id), None)
        self.last_missing = missing_steps([*(int(t["step"]) for t in rows), *malformed])
        dims = episode_dims(rows)
        self.last_malformed = len(malformed) + sum(transition_dims(t) != dims for t in rows)
        if session:
            metadata = {**(metadata or {}), "recorder_session": session}
        ds, left_out = episode_dataset(rows, episode_id, metadata, left_out_steps=malformed)
        path = None
        if ds is not None:
            path = self._free_path(episode_id)
            self._unwritten[path] = ds
        try:
            written = self._write_waiting()
        except OSError:
            if path in self._unwritten and self.unwritten_bytes > self.max_unwritten_bytes:
                del self._unwritten[path]
                self.dropped.append(episode_id)
            raise
        # the name it went to: another logger into this folder may have taken the one chosen above meanwhile
        return next((p for d, p in written if d is ds), path), left_out

    def flush(self) -> list[Path]:
        """Write the episodes kept in memory after a failed write, oldest first."""
        return [path for _, path in self._write_waiting()]

    def _write_waiting(self) -> list[tuple[OfflineDataset, Path]]:
        written = []
        for path in list(self._unwritten):
            ds = self._unwritten[path]
            while True:
                if os.path.lexists(path):  # taken while it waited or was written (a link to nothing counts)
                    del self._unwritten[path]
                    path = self._free_path(int(ds.metadata["episode_id"]))  # after the newest
                    self._unwritten[path] = ds
                try:
                    written.append((ds, write_hdf5(path, ds, make_folder=False)))  # made at start: gone is an error
                    break
                except FileExistsError:  # another logger into this folder took the name first: never replaced
                    if not os.path.lexists(path):
                        raise
            del self._unwritten[path]
            self.written += 1
        return written

    @property
    def unwritten(self) -> list[int]:
        """Finished episodes not yet on disk (recorder episode ids)."""
        return [int(ds.metadata["episode_id"]) for ds in self._unwritten.values()]

    @property
    def unwritten_bytes(self) -> int:
        return sum(ds.nbytes for ds in self._unwritten.values())

    def free_bytes(self) -> int | None:
        """Free space where the episodes go (None when the folder cannot be looked at)."""
        try:
            return shutil.disk_usage(self.directory).free
        except OSError:
            return None

    def _free_path(self, episode_id: int) -> Path:
        path = self._path(episode_id + self._offset)
        if os.path.lexists(path) or path in self._unwritten:  # a dangling link is never replaced
            taken = [int(m.group(1)) for f in self.directory.glob("episode_*.hdf5")
                     if (m := _EPISODE_FILE.fullmatch(f.name))]
            taken += [int(_EPISODE_FILE.fullmatch(p.name).group(1)) for p in self._unwritten]
            self._offset = max(taken) + 1 - episode_id
            path = self._path(episode_id + self._offset)
        return path

    def _path(self, number: int) -> Path:
        return self.directory / f"episode_{number:06d}.hdf5"


_EPISODE_FILE = re.compile(r"episode_(\d+)\.hdf5")


def transition_row(m: object) -> dict:
    """A Transition message (rclpy's, or rosbags' from a bag) as the row EpisodeWriter and the learner take. A
    bag recorded before transitions named their recorder run has no recorder_session: "" (one run)."""
    return {"episode_id": int(m.episode_id), "step": int(m.step), "observation": np.asarray(m.observation),
            "next_observation": np.asarray(m.next_observation), "action": np.asarray(m.action),
            "log_prob": float(m.log_prob), "reward": float(m.reward), "terminal": bool(m.terminal),
            "timeout": bool(m.timeout), "policy_version": int(m.policy_version),
            "recorder_session": str(getattr(m, "recorder_session", "")),
            "recorder_started_ns": int(getattr(m, "recorder_started_ns", 0))}


def wall_time(ns: int) -> str:
    """A wall-clock time in ns as the log shows it (UTC, to the second); one no calendar holds as the number."""
    try:
        return datetime.fromtimestamp(ns / 1e9, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, ValueError, OSError):  # a status's started_ns is any integer its sender wrote
        return f"{ns} ns"


def run_name(session: str) -> str:
    """A recorder run as the log names it: its session's first 8 hex digits."""
    return f"{session[:8]}..." if session else "(unnamed)"


def recorder_run(t: dict) -> tuple[str, int]:
    """(recorder session, episode id) of a transition: the episode it belongs to. A row without a session (a
    bag recorded before transitions named their recorder run) is of the run "", one run for the whole
    stream, as before."""
    return str(t.get("recorder_session", "")), int(t["episode_id"])


def missing_steps(steps: Iterable[int]) -> list[tuple[int, int]]:
    """The runs (first, last) of steps 0 .. max(steps) absent from `steps`."""
    runs, expected = [], 0
    for k in sorted(set(steps)):
        if k > expected:
            runs.append((expected, k - 1))
        expected = k + 1
    return runs


def describe_runs(runs: list[tuple[int, int]]) -> str:
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs)


def episode_dims(rows: Iterable[dict]) -> tuple[int, int] | None:
    """The (observation, action) dimensions most of an episode's rows have (a tie: the first to arrive), None if
    no row can be one: one odd row, the first included, costs only itself."""
    return _most(Counter(d for t in rows if (d := transition_dims(t)) is not None))


def _most(counts: Counter) -> tuple[int, int] | None:
    """The most counted, ties to the first counted (Counter keeps that order), None if none."""
    return counts.most_common(1)[0][0] if counts else None


def episode_dataset(rows: list[dict], episode_id: int, metadata: dict | None = None,
                    left_out_steps: Iterable[int] = ()) -> tuple[OfflineDataset | None, int]:
    """One episode's transitions (any order, duplicates of a step dropped) in the D4RL layout (None
    if none is usable), and how many were left out for NaN/inf values (also in
    metadata['left_out_non_finite']): one sensor glitch would otherwise fail the file's validation
    and lose the whole episode. Each row carries its own next_observation, so a left-out row costs
    only itself; if it was the episode's end, the episode ends one row earlier, as a timeout.
    Steps that never arrived (a reader starved or stopped for longer than DDS keeps it matched) are
    counted in metadata['missing_steps'] and listed in metadata['missing_ranges']: the file says it
    holds part of an episode instead of passing for a whole one. Rows of other dimensions than most of the
    episode's (`episode_dims`) are left out before that and counted, with those left out already
    (`left_out_steps`: they arrived, so they are not missing), in metadata['left_out_malformed']."""
    dims = episode_dims(rows)
    left_out_steps = [*left_out_steps, *(int(t["step"]) for t in rows if dims is None or transition_dims(t) != dims)]
    by_step = {int(t["step"]): t for t in rows if dims is not None and transition_dims(t) == dims}
    gaps = missing_steps([*by_step, *left_out_steps])
    rows = [by_step[k] for k in sorted(by_step) if finite_transition(by_step[k])]
    left_out = len(by_step) - len(rows)
    if left_out_steps:
        metadata = {**(metadata or {}), "left_out_malformed": len(left_out_steps)}
    if gaps:
        metadata = {**(metadata or {}), "missing_steps": sum(b - a + 1 for a, b in gaps),
                    "missing_ranges": describe_runs(gaps)}
    if not rows:
        return None, left_out
    timeouts = np.array([t["timeout"] for t in rows], bool)
    terminals = np.array([t["terminal"] for t in rows], bool)
    if not (terminals[-1] or timeouts[-1]):
        timeouts[-1] = True  # stopped early: the episode ends here without a termination
    return OfflineDataset(
        observations=np.stack([t["observation"] for t in rows]).astype(np.float32),
        actions=np.stack([t["action"] for t in rows]).astype(np.float32),
        rewards=np.array([t["reward"] for t in rows], np.float32), terminals=terminals, timeouts=timeouts,
        next_observations=np.stack([t["next_observation"] for t in rows]).astype(np.float32),
        infos={"action_log_probs": np.array([t["log_prob"] for t in rows], np.float32),
               "policy_version": np.array([t["policy_version"] for t in rows], np.int64),
               "step": np.array([t["step"] for t in rows], np.int64)},
        metadata={"episode_id": int(episode_id), **({"left_out_non_finite": left_out} if left_out else {}),
                  **(metadata or {})},
    ), left_out


def episode_files(directory: str | Path) -> list[Path]:
    """The logger's episode files of a folder, in order: `episode_<number>.hdf5` only. A file manager's copy
    ("episode_000001 (copy).hdf5") matched the glob and was read as one more episode, its data twice."""
    return sorted(f for f in Path(directory).glob("episode_*.hdf5") if _EPISODE_FILE.fullmatch(f.name))


def read_episodes(directory: str | Path) -> OfflineDataset:
    """Every episode file of a folder as one dataset; its metadata counts the episodes and totals
    what their files say was lost (missing_steps, left_out_non_finite)."""
    files = episode_files(directory)
    if not files:
        raise FileNotFoundError(f"no episode_*.hdf5 files in {directory}")
    parts = [read_hdf5(f) for f in files]
    # Episodes of two recordings in one folder (another robot's, another observation layout): named, where
    # concatenating them failed with numpy's shape message alone.
    first = (parts[0].obs_dim, parts[0].act_dim)
    for f, part in zip(files, parts):
        if (part.obs_dim, part.act_dim) != first:
            raise DatasetError(f"{f}: observation/action dims {part.obs_dim}/{part.act_dim}, while {files[0].name} "
                               f"has {first[0]}/{first[1]}: one folder must hold one recording's episodes")
    ds = OfflineDataset.concatenate(parts)
    ds.metadata = {"source": str(directory), "episodes": len(parts)}
    for key in ("missing_steps", "left_out_non_finite", "left_out_malformed"):
        if total := sum(_count(f, p.metadata, key) for f, p in zip(files, parts)):
            ds.metadata[key] = total
    for key, flag in (("partial_episodes", "missing_steps"), ("end_missing_episodes", "end_missing")):
        if count := sum(1 for p in parts if p.metadata.get(flag)):
            ds.metadata[key] = count
    return ds


def _count(path: Path, metadata: dict, key: str) -> int:
    """metadata[key] of an episode file as the count the logger writes (0 if absent); a file edited or made by
    another program holding something else is named, not a TypeError from int()."""
    value = metadata.get(key, 0)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 0:
        raise DatasetError(f"{path}: metadata/{key} is {value!r}, not a count of transitions")
    return int(value)


def episode_series(directory: str | Path) -> dict[tuple[str, str], list[tuple[int, float]]]:
    """Per recorded episode (x: its file's number): return, steps, whether it ended in a fall (a
    terminal) and the newest policy version that acted in it; for `uni-o4 plot` of a recording."""
    series: dict[tuple[str, str], list[tuple[int, float]]] = {}
    files = episode_files(directory)
    if not files:
        raise FileNotFoundError(f"no episode_*.hdf5 files in {directory}")
    for f in files:
        ds, number = read_hdf5(f), int(_EPISODE_FILE.fullmatch(f.name).group(1))
        versions = ds.infos.get("policy_version")
        if versions is not None and not np.issubdtype(np.asarray(versions).dtype, np.number):
            versions = None  # not numbers (a file another program wrote): the curve leaves them out
        for name, value in (("return", float(ds.rewards.sum())), ("steps", len(ds)),
                            ("fell (ended as a terminal)", float(ds.terminals[-1])),
                            ("policy version", float(versions.max()) if versions is not None else None)):
            if value is not None:
                series.setdefault(("episodes", name), []).append((number, float(value)))
    return series


def lost_in_recording(ds: OfflineDataset) -> str:
    """One line on the transitions a recording lacks ("" if none): learning goes on with the rest."""
    said = []
    if ds.metadata.get("missing_steps"):
        said.append(f"{ds.metadata['missing_steps']} transition(s) of this recording never reached its logger "
                    f"({ds.metadata.get('partial_episodes', 'some')} episode file(s) lack steps: "
                    "metadata/missing_ranges)")
    if ds.metadata.get("end_missing_episodes"):
        said.append(f"{ds.metadata['end_missing_episodes']} episode(s) lack their last transitions "
                    "(metadata/end_missing; they end as truncations)")
    return "; ".join(said) + "; learning uses what arrived" if said else ""
