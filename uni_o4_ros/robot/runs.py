"""Which run of a node a reader keeps to (no ROS, no torch).

A node that restarts draws a new session, and a bag played back beside the robot (`ros2 bag play`) repeats an
earlier run's: a reader that hears several runs keeps to the newest by its start time and leaves out the ones
that started before it. Used for the policy node's runs (the learner signs its updates for one,
update_session.py) and the episode recorder's (the logger and the learner record and learn from one).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass


def new_session() -> str:
    """A run's session: 128 random bits, so nothing of an earlier run can name it."""
    return secrets.token_hex(16)


@dataclass(frozen=True)
class Announcement:
    session: str
    started_ns: int  # the run's start, on its node's wall clock
    signed: bool  # with the reader's key (or the reader has none, or nothing is signed): its own robot's


class SessionChoice:
    """The run a reader keeps to: the one a learner signs its updates for, the recorder run a logger records.

    - A signed announcement of a run that started after the one held is the new run (a restarted policy
      node or recorder); one that started before it is an old announcement played back, and is ignored.
    - An announcement the learner cannot check (another key than the robot's) is taken only while no signed
      one is held: a learner without the robot's key then still publishes, and hears from the policy node's
      refusal what to do; a forged one cannot take a learner away from its robot's run.
    """

    def __init__(self) -> None:
        self.current: Announcement | None = None

    def hear(self, a: Announcement) -> str:
        """'switch' (keep to `a` from now on), 'same', 'earlier' (ignored: a signed announcement of a run that
        started before the held one) or 'unchecked' (ignored: not signed, and a signed one is held)."""
        cur = self.current
        if cur is not None and a.session == cur.session:
            if a.signed and not cur.signed:
                self.current = a  # the same run, now checked: a forged one can no longer displace it
            return "same"
        if cur is not None and cur.signed:
            if not a.signed:
                return "unchecked"
            if a.started_ns <= cur.started_ns:
                return "earlier"
        self.current = a
        return "switch"
