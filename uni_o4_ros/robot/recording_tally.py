"""When a recording of N episodes (or steps) is over, for `uni-o4 bringup --episodes N` and the field
pipeline's node stages (no ROS import).

Counting the logger's files alone waited for ever when an episode never reached the logger (a
logger stopped or starved past DDS's lease, BENCHMARKS §4e) or had no transition to write (an
e-stop before its first one): the recorder had ended its N episodes and started no more, so the
N-th file never came. The recorder's end events say which episodes there are to wait for; the
files say which arrived. An episode still without a file `grace` seconds after its end is named
as lost instead of waited for.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

# Fast DDS resends to a reader that is silent for up to its ~20 s participant lease (a logger
# stopped 10 s lost nothing, BENCHMARKS §4e) and the logger writes an episode within milliseconds
# of its last row: past 30 s a missing file will not come.
LOGGER_GRACE_S = 30.0


@dataclass
class RecordingTally:
    wanted: int  # episodes the recorder was asked for (0: no limit, the recording ends on Ctrl-C)
    grace: float = LOGGER_GRACE_S
    wanted_steps: int = 0  # or transitions (the recorder's total_steps, as the field pipeline asks)
    ended: dict[int, tuple[float, int]] = field(default_factory=dict)  # episode id -> (when, transitions)
    written: set[int] = field(default_factory=set)
    lost: list[int] = field(default_factory=list)  # named once each, in the order found
    files: set[Path] = field(default_factory=set)  # the files taken in so far

    def on_end(self, episode_id: int, transitions: int, now: float) -> None:
        """The recorder ended an episode after `transitions` transitions (its event's steps). An episode
        that ended empty gives its number to the next one, whose end then counts."""
        if episode_id not in self.ended or self.ended[episode_id][1] == 0:
            self.ended[episode_id] = (now, transitions)

    def on_file(self, episode_id: int) -> None:
        """The logger wrote the episode's file."""
        self.written.add(episode_id)

    def take_files(self, paths: Iterable[Path]) -> list[Path]:
        """Take in the logger's files not taken before, matched to their episodes by their metadata; returns
        the new ones."""
        from ..data import DatasetError, read_metadata

        new = sorted(set(paths) - self.files)
        for path in new:
            self.files.add(path)
            try:
                episode_id = int(read_metadata(path)["episode_id"])
            except (DatasetError, KeyError, TypeError, ValueError):
                episode_id = -len(self.files)  # not the logger's own file: counted, not matched to an episode
            self.on_file(episode_id)
        return new

    @property
    def empty(self) -> list[int]:
        """Episodes that ended before their first transition: there is nothing to write."""
        return sorted(e for e, (_, n) in self.ended.items() if n == 0)

    def newly_lost(self, now: float) -> list[int]:
        """Episodes with transitions whose file has not come `grace` seconds after they ended, each
        returned once."""
        new = [e for e in self.waiting_for() if now - self.ended[e][0] >= self.grace]
        self.lost += new
        return new

    def waiting_for(self) -> list[int]:
        """Ended episodes with transitions whose files may still come."""
        return sorted(e for e, (_, n) in self.ended.items() if n > 0 and e not in self.written and e not in self.lost)

    def finished(self) -> bool:
        """All `wanted` episodes with transitions (or `wanted_steps` transitions) are accounted for: written or
        lost (call `newly_lost` first). An episode that ended empty is not one of them: the recorder runs its
        number again (counted as one, `bringup --episodes 1` ended with nothing recorded after an e-stop as the
        first episode began)."""
        if self.wanted_steps:
            return sum(n for _, n in self.ended.values()) >= self.wanted_steps and not self.waiting_for()
        if not self.wanted:
            return False
        with_data = sum(n > 0 for _, n in self.ended.values())
        return len(self.written) >= self.wanted or (with_data >= self.wanted and not self.waiting_for())
