"""dataset_logger node: Transition -> one D4RL-layout HDF5 file per finished episode, written atomically (a
crash loses at most the episode in progress; finished files are always complete). An episode is finished
by its terminal or timeout transition (the recorder ends every episode with one), never by an event on
another topic, which could overtake the episode's last transition. Transitions with NaN/inf values (a
sensor glitch), or with arrays of other lengths than most of their episode's rows (another publisher
on the domain), are left out of the file, with a warning, instead of failing its validation and taking
the episode and the logger with them. An episode whose file cannot be written (disk full, the folder
gone) stays in memory, with an error, and is written with the next episode that can be, at the next try
(every RETRY_S, 5 s) or at shutdown, up to max_unwritten_mb of them: past that the newest is dropped,
with an error, rather than the logger growing until it is killed with all of them. A failing bag stops
the bag, not the episode files. Below min_free_mb of free space the logger warns at start and after
every episode, with how many more episodes fit. Transitions that never arrive (the logger stopped or
starved for longer than DDS keeps a silent reader matched) are not silent: an episode written without
some of its steps says which (error in the log, metadata/missing_steps and missing_ranges in its file),
one whose last transition never came is written when the next episode begins, ending as a truncation
(metadata/end_missing), and an episode of which nothing arrived is named in the log.
Each transition names its recorder run: a restarted recorder's episodes (numbered from 1 again) are kept apart
from the run before's, whose unfinished episode is written as a truncation, and transitions of a run that
started before the one being recorded (an old bag played back beside the robot) are left out, said once per run,
while that one is heard: silent for runs.QUIET_S (10 s), it gives way, with a warning (a recorder restarted with
its clock set back). Each file's metadata/recorder_session names its run.
Parameters: directory, bag_path (optional: also keep every Transition, CDR as received, in an
MCAP rosbag2 at this path, put on disk at every episode's end; `uni-o4 bag2h5` converts it, as it
does bags from `ros2 bag record`, and salvages it up to the last finished episode if the logger was
killed),
min_free_mb (1000), max_unwritten_mb (1000).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from rclpy.serialization import serialize_message

from uni_o4_ros.msg import Transition
from uni_o4_ros.robot.episodes import EpisodeWriter, describe_runs, run_name, transition_row, wall_time
from uni_o4_ros.robot.runs import QUIET_S

from .params import Doc, declare_read_only, writable_folder
from .qos import DIAGNOSTICS, TRANSITIONS
from .run import NodeConfigError, run_node
from .timers import steady_timer

# Measured with the stand-in graph: a logger stopped (SIGSTOP) for 10 s loses nothing (DDS resends),
# for 30 s it lost every transition of those 30 s without a word, and came back as if nothing happened.
# Episodes kept in memory after a failed write are tried again this often: before, only the next episode's end
# (or a clean shutdown) wrote them, so with the recording over they sat in memory until a kill lost them.
RETRY_S = 5.0
STARVED = ("was this process stopped, starved of CPU or cut off from the recorder for longer than DDS keeps "
           "a silent reader matched (Fast DDS: about 20 s)?")


PARAMETERS = {
    "directory": Doc("folder; one episode_NNNNNN.hdf5 (D4RL layout) per finished episode is written here"),
    "bag_path": Doc("path; '' for none: also keep every Transition, as received, in an MCAP rosbag2 here (refused "
                    "if it exists)"),
    "min_free_mb": Doc("MB; warn at start and after every episode while less is free in directory", ">=0"),
    "max_unwritten_mb": Doc("MB; episodes that could not be written wait in memory up to this size; past it the "
                            "newest is dropped", ">=0"),
}


class DatasetLoggerNode(Node):
    def __init__(self) -> None:
        super().__init__("dataset_logger")
        p = declare_read_only(self, PARAMETERS, {"directory": "data/robot", "bag_path": "", "min_free_mb": 1000,
                                     "max_unwritten_mb": 1000})
        directory, bag_path = writable_folder(p["directory"], "directory"), p["bag_path"]
        self.min_free = int(p["min_free_mb"]) * 10**6
        max_unwritten = int(p["max_unwritten_mb"])
        self.writer = EpisodeWriter(directory, max_unwritten_bytes=max_unwritten * 10**6)
        self.bag = None
        if bag_path:
            from uni_o4_ros.data.bag import TransitionBagWriter

            try:
                self.bag = TransitionBagWriter(bag_path)
            except Exception as exc:  # noqa: BLE001 - e.g. the bag exists already: refuse to start
                raise NodeConfigError(f"cannot open bag {bag_path}: {exc}") from exc
        self.bad_sessions = 0  # transitions left out for a recorder_session that is no recorder's
        self.free: int | None = None  # bytes free where the episodes go, at the last look (_check_free_space)
        self.create_subscription(Transition, "transitions", self.on_transition, TRANSITIONS)
        steady_timer(self, RETRY_S, self._retry_unwritten)
        # What a monitor (rqt_robot_monitor, diagnostic_aggregator) shows of the recording, once a second as
        # diagnostic_updater does: episodes waiting in memory or dropped, and the disk running full, were in the
        # log only.
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", DIAGNOSTICS)
        steady_timer(self, 1.0, self._diagnose)
        self.get_logger().info(f"logging episodes to {self.writer.directory}")
        if removed := self.writer.removed_temporary:
            self.get_logger().warning(f"removed {len(removed)} half-written episode file(s) "
                                      f"({sum(removed) / 1e6:.1f} MB) that a logger ended mid-write (killed, or a "
                                      "power cut) left in the folder")
        self._check_free_space(None)

    def on_transition(self, m: Transition) -> None:
        if self.bag is not None:
            self._write_bag(m)
        arrival = self.writer.add(transition_row(m))
        held = self.writer.runs.current
        if arrival.bad_session:
            self.bad_sessions += 1
            if self.bad_sessions == 1 or self.bad_sessions % 100 == 0:  # a broken publisher must not flood the log
                self.get_logger().warning(f"left out {self.bad_sessions} transition(s) so far whose recorder_session "
                                          "is no recorder's (32 hex digits), latest "
                                          f"{arrival.bad_session!r} (episode {m.episode_id}, step {m.step}): another "
                                          "publisher on this ROS domain, or a damaged message?")
            return
        if arrival.earlier_run is not None:
            if self.writer.earlier_rows[arrival.earlier_run] == 1:
                self.get_logger().warning(
                    f"left out transitions of recorder run {run_name(arrival.earlier_run)} (started "
                    f"{wall_time(m.recorder_started_ns)}): it started before the run being recorded "
                    f"({run_name(held.session)}, started {wall_time(held.started_ns)}), so they are an old "
                    "recording played back (ros2 bag play?) and go into no episode file while that run is heard")
            return
        if arrival.gave_up is not None:
            self.get_logger().warning(
                f"recording recorder run {run_name(held.session)} (started {wall_time(held.started_ns)}) from now on, "
                f"though it started before run {run_name(arrival.gave_up)}, silent for {QUIET_S:.0f} s: a recorder "
                "restarted with its clock set back, or an old recording played back while the robot's recorder is "
                "paused (ros2 bag play?). Its episode files name it in metadata/recorder_session")
        if arrival.left_out:
            self.get_logger().warning(f"episode {m.episode_id} step {m.step}: a transition of other dimensions "
                                      f"({arrival.left_out}): another publisher on this ROS domain, or a damaged "
                                      "message? The episode's file keeps the dimensions most of its rows have")
        for session, episode_id in arrival.cut_off:
            if session == m.recorder_session:
                self.get_logger().error(f"episode {episode_id}: its last transition never reached the logger; "
                                        "written with what did, ending as a truncation: " + STARVED)
            else:
                self.get_logger().error(f"episode {episode_id} of recorder run {run_name(session)}: cut off by "
                                        f"another run of the recorder ({run_name(m.recorder_session)}, restarted?); "
                                        "written with what arrived, ending as a truncation")
            self._finish(episode_id, {"end_missing": True}, session)
        if arrival.skipped:
            episodes = describe_runs([(arrival.skipped[0], arrival.skipped[-1])])
            self.get_logger().error(
                f"episode(s) {episodes}: no transition ever reached the logger, no file: " + STARVED
                if not arrival.new_run else
                f"episode(s) {episodes} of recorder run {run_name(m.recorder_session)}: no transition ever reached the "
                "logger, no file: the recorder (restarted?) sent them before this logger heard it (its "
                "wait_for_subscribers: 1 waits for the logger)")
        if m.terminal or m.timeout:
            self._finish(m.episode_id, None, m.recorder_session)

    def _finish(self, episode_id: int, metadata: dict | None = None, session: str | None = None) -> None:
        kept, dropped = self.writer.unwritten, len(self.writer.dropped)
        try:
            path, left_out = self.writer.finish(episode_id, metadata, session)
        except OSError as exc:
            if len(self.writer.dropped) > dropped:
                self.get_logger().error(
                    f"episode {episode_id} not written ({exc}) and dropped: episodes {self.writer.unwritten} "
                    f"({self.writer.unwritten_bytes / 1e6:.0f} MB) already wait in memory, the most "
                    f"max_unwritten_mb allows; {len(self.writer.dropped)} dropped so far")
            else:
                self.get_logger().error(f"episode {episode_id} not written ({exc}); episodes "
                                        f"{self.writer.unwritten} are kept in memory and written with the "
                                        "next episode that can be")
            self._check_free_space(None)
            return
        if kept:
            self.get_logger().info(f"episodes {kept}, kept in memory, are now written to {self.writer.directory}")
        if self.writer.last_missing:
            gone = sum(b - a + 1 for a, b in self.writer.last_missing)
            self.get_logger().error(f"episode {episode_id}: {gone} transition(s) never reached the logger (steps "
                                    f"{describe_runs(self.writer.last_missing)}); the file holds the rest and "
                                    "says so in metadata/missing_steps: " + STARVED)
        without = [f"{n} transition(s) {why}" for n, why in ((left_out, "with NaN/inf values"),
                   (self.writer.last_malformed, "of other dimensions than most of its rows")) if n]
        if path is None:
            said = f" ({', '.join(without)})" if without else ""
            self.get_logger().warning(f"episode {episode_id}: no usable transition{said}, not written")
        elif without:
            self.get_logger().warning(f"episode {episode_id} written to {path}, without {' and '.join(without)}")
        else:
            self.get_logger().info(f"episode {episode_id} written to {path}")
        self._check_free_space(path)

    def _check_free_space(self, written: Path | None) -> None:
        """Warn while less than min_free_mb is free where the episodes go: on a robot computer's small
        disk the operator hears of it before episodes have to wait in memory."""
        free = self.free = self.writer.free_bytes()
        if free is None or free >= self.min_free:
            return
        size = written.stat().st_size if written is not None and written.is_file() else 0
        fit = f": room for about {free // size} more episodes like the last" if size else ""
        self.get_logger().warning(f"only {free / 1e6:.0f} MB free in {self.writer.directory} "
                                  f"(min_free_mb {self.min_free // 10**6}){fit}")

    def _write_bag(self, m: Transition) -> None:
        try:
            # When it arrived, as `ros2 bag record` stamps messages: bag2h5 times a recorder run's silence by it, and
            # a playback's messages carry the header stamps of the day they were recorded.
            self.bag.write(serialize_message(m), time.time_ns())
            if m.terminal or m.timeout:  # on disk with the episode's file: a kill loses no more of the bag
                self.bag.flush()
        except OSError as exc:
            self.get_logger().error(f"bag write failed ({exc}); the bag stops here, episode files go on")
            self._close_bag()

    def _close_bag(self) -> None:
        bag, self.bag = self.bag, None
        try:
            bag.close()
        except OSError as exc:
            self.get_logger().error(f"closing the bag failed: {exc}")

    def _diagnose(self) -> None:
        w = self.writer
        # Free space as the last episode (or the start) left it: a statvfs a second on a hung network disk would
        # block this executor, and with it the transitions.
        waiting, dropped, free = w.unwritten, len(w.dropped), self.free
        if waiting:
            level, message = DiagnosticStatus.ERROR, (f"{len(waiting)} episode(s) wait in memory: their files could "
                                                      "not be written (disk full? folder gone?)")
        elif dropped:
            level, message = DiagnosticStatus.WARN, f"{dropped} episode(s) dropped after failed writes"
        elif free is not None and free < self.min_free:
            level = DiagnosticStatus.WARN
            message = f"only {free / 1e6:.0f} MB free (min_free_mb {self.min_free // 10**6})"
        else:
            level, message = DiagnosticStatus.OK, "logging episodes"
        values = {"directory": str(w.directory), "episodes_written": str(w.written),
                  "waiting_in_memory": str(len(waiting)), "waiting_mb": f"{w.unwritten_bytes / 1e6:.1f}",
                  "dropped": str(dropped), "free_mb": "unknown" if free is None else f"{free / 1e6:.0f}"}
        arr = DiagnosticArray(status=[DiagnosticStatus(
            level=level, name=f"{self.get_name()}: episodes", message=message,
            values=[KeyValue(key=k, value=v) for k, v in values.items()])])
        arr.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(arr)

    def _retry_unwritten(self) -> None:
        if not (kept := self.writer.unwritten):
            if self.free is not None and self.free < self.min_free:  # a disk freed with the recording over
                self.free = self.writer.free_bytes()  # is OK again on the monitor, without a log line each time
            return
        try:
            self.writer.flush()
        except OSError:
            return  # said when it failed; tried again in RETRY_S
        self.get_logger().info(f"episodes {kept}, kept in memory, are now written to {self.writer.directory}")
        self._check_free_space(None)

    def close(self) -> None:
        if self.bag is not None:
            self._close_bag()
        try:
            self.writer.flush()
        except OSError as exc:
            self.get_logger().error(f"episodes {self.writer.unwritten} lost at shutdown: {exc}")


def main(args: list[str] | None = None) -> int:
    return run_node(DatasetLoggerNode, "dataset_logger", args)


if __name__ == "__main__":
    sys.exit(main())
