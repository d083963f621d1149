"""Which run of a node a reader keeps to (no ROS, no torch).

A node that restarts draws a new session, and a bag played back beside the robot (`ros2 bag play`) repeats an
earlier run's: a reader that hears several runs keeps to the newest by its start time and leaves out the ones
that started before it. `SessionChoice`: the policy node's runs, announced once and signed (the learner signs
its updates for one, update_session.py). `StreamRuns`: the episode recorder's, named in every transition (the
logger, the learner and bag2h5 record and learn from one), where a held run's silence also counts.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

# A recorder run held but silent for this long (s, by the reader's clock) gives way to a run that started
# before it: a played-back bag interleaves with a live run, while a restarted recorder (with its clock set
# back) or a stray message dated in the future leaves the held run silent. Loses at most this much of a run.
QUIET_S = 10.0
_SESSION = re.compile(r"[0-9a-f]{32}")


def new_session() -> str:
    """A run's session: 128 random bits, so nothing of an earlier run can name it."""
    return secrets.token_hex(16)


def is_session(text: str) -> bool:
    """What new_session() draws (32 lowercase hex digits), or "" (a publisher that names no run)."""
    return text == "" or _SESSION.fullmatch(text) is not None


@dataclass(frozen=True)
class Announcement:
    session: str
    started_ns: int  # the run's start, on its node's wall clock
    signed: bool  # with the reader's key (or the reader has none, or nothing is signed): its own robot's


class SessionChoice:
    """The policy node run a learner signs its updates for.

    - A signed announcement of a run that started after every run held is the new run (a restarted policy
      node); one that started before is an old announcement played back, and is ignored.
    - An announcement the learner cannot check (another key than the robot's) is taken only while no signed
      one is held: a learner without the robot's key then still publishes, and hears from the policy node's
      refusal what to do; a forged one cannot take a learner away from its robot's run.
    - A run that refuses an update signed for the held run (`answered`: a signed refusal names both runs) is
      taken whatever its start: a policy node restarted with its clock set back announces a start before the
      held run's, as a played-back announcement does, and only its answer tells it apart. The run it replaces
      is not taken back that way: if it answers too, two policy nodes with this key run at once (two suites on
      one ROS domain), and the learner stays where it is rather than send its weights to and fro.
    """

    def __init__(self) -> None:
        self.current: Announcement | None = None
        self._latest = float("-inf")  # the latest start of a signed run held: what an announcement must pass
        self._left: dict[str, None] = {}  # runs left for one that answered (bounded)

    def hear(self, a: Announcement) -> str:
        """'switch' (sign for `a` from now on), 'same', 'earlier' (ignored: a signed announcement of a run that
        started before a run held) or 'unchecked' (ignored: not signed, and a signed one is held)."""
        cur = self.current
        if cur is not None and a.session == cur.session:
            if a.signed and not cur.signed:
                self._hold(a)  # the same run, now checked: a forged one can no longer displace it
            return "same"
        if cur is not None and cur.signed:
            if not a.signed:
                return "unchecked"
            if a.started_ns <= self._latest:
                return "earlier"
        self._hold(a)
        return "switch"

    def answered(self, a: Announcement, refused_session: str) -> str:
        """`a`'s run refused an update signed for `refused_session`, as signed for another run. 'switch' (sign for
        `a` from now on: it runs, and the update was for the held run), 'same', 'other' (ignored: the update
        refused was not for the held run, e.g. a refusal played back), 'unchecked' (ignored: not signed, and a
        signed one is held) or 'both' (ignored: a run left for another that answered answers too)."""
        cur = self.current
        if cur is not None and a.session == cur.session:
            return "same"
        if cur is None or refused_session != cur.session:
            return "other"
        if cur.signed and not a.signed:
            return "unchecked"
        if a.session in self._left:
            return "both"
        remember(self._left, cur.session)
        self._hold(a)
        return "switch"

    def _hold(self, a: Announcement) -> None:
        self.current = a
        if a.signed:
            self._latest = max(self._latest, a.started_ns)


class StreamRuns:
    """The recorder run a reader of its stream (the logger, the learner, bag2h5) keeps to.

    - A run that started after the one held is the new run (a restarted recorder): taken ('switch').
    - One that started before it is an old recording played back beside the robot (`ros2 bag play`): left out
      ('earlier'). A playback interleaves with the live run: a run heard between two of the held run's rows is
      never taken while another is held.
    - A run that started before the held one and was never heard between its rows is taken once the held run has
      been silent for `quiet` seconds ('switch_earlier'): a recorder restarted with its clock set back, or a lone
      message dated in the future, must not cost the live run more than that. A playback begun during a longer
      pause of the robot's recorder is taken then too: the reader says so, and its episodes name their run.
    """

    def __init__(self, quiet: float = QUIET_S) -> None:
        self.current: Announcement | None = None
        self.quiet = quiet
        self._heard = float("-inf")  # when the held run was last heard (the reader's monotonic clock, s)
        self._waiting: dict[str, None] = {}  # runs left out since the held run's last row
        self._interleaved: dict[str, None] = {}  # runs heard between two of the held run's rows: playbacks

    def hear(self, session: str, started_ns: int, now: float) -> str:
        """'same', 'switch', 'switch_earlier' (keep to this run from now on) or 'earlier' (leave its row out)."""
        cur = self.current
        if cur is not None and session == cur.session:
            self._heard = now
            for s in self._waiting:
                remember(self._interleaved, s)
            self._waiting.clear()
            return "same"
        if cur is None or started_ns > cur.started_ns:
            verdict = "switch"
        elif now - self._heard >= self.quiet and session not in self._interleaved:
            verdict = "switch_earlier"
        else:
            remember(self._waiting, session)
            return "earlier"
        self.current, self._heard = Announcement(session, started_ns, True), now
        self._waiting.clear()
        return verdict


def remember(seen: dict, key: object, value: object = None, limit: int = 1024) -> None:
    """Keep `key` in an insertion-ordered dict of at most `limit` entries, the oldest dropped first: what a reader
    remembers of runs stays bounded whatever a broken or hostile publisher sends."""
    seen.pop(key, None)
    seen[key] = value
    while len(seen) > limit:
        del seen[next(iter(seen))]
