"""Which run of the policy node an update is made for (no ROS).

Each policy node run draws a random session and announces it, signed with the update key, on
`policy_session`, with the time it started; it refuses updates signed for another session
(policy_update.StaleSession). A learner signs for the run it chooses among the announcements it hears
(`SessionChoice`): a replayed announcement of an earlier run (`ros2 bag play` of an old bag, which holds
`policy_session` too) must not take it away from the running one, or every later update would be
refused.
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass

from .policy_update import sign_status

SESSION_STATUS = "policy_session"  # the DiagnosticStatus name of a policy node's session announcement


def new_session() -> str:
    """A policy node run's session: 128 random bits, so no earlier run's updates can name it."""
    return secrets.token_hex(16)


def session_status(session: str, version: int, key: bytes | None,
                   started_ns: int | None = None) -> tuple[dict[str, str], str]:
    """The values and message of a policy node's announcement of its session, signed with its key. `started_ns`:
    when the run started (wall clock, ns; now by default), which orders runs for a learner."""
    started = time.time_ns() if started_ns is None else int(started_ns)
    message = f"updates must be signed for session {session} (this run of the policy node, at version {version})"
    values = {"session": session, "version": str(version), "started_ns": str(started)}
    if key is not None:
        values["signature"] = sign_status(values, message, key)
    return values, message


@dataclass(frozen=True)
class Announcement:
    session: str
    started_ns: int  # the run's start, on the policy node's wall clock
    signed: bool  # with the reader's key (or the reader has none): its own robot's


def session_in(values: dict[str, str], message: str, key: bytes | None) -> Announcement | None:
    """The announcement a policy_session status makes, None if it is none."""
    session = values.get("session", "")
    try:
        started = int(values.get("started_ns", ""))
    except ValueError:
        return None
    if not session:
        return None
    # As bytes: compare_digest raises on a str with non-ASCII characters, which anyone can publish.
    signed = key is None or hmac.compare_digest(sign_status(values, message, key).encode(),
                                                values.get("signature", "").encode())
    return Announcement(session, started, signed)


class SessionChoice:
    """The run a learner signs its updates for.

    - A signed announcement of a run that started after the one held is the new run (a restarted policy
      node); one that started before it is an old announcement played back, and is ignored.
    - An announcement the learner cannot check (another key than the robot's) is taken only while no signed
      one is held: a learner without the robot's key then still publishes, and hears from the policy node's
      refusal what to do; a forged one cannot take a learner away from its robot's run.
    """

    def __init__(self) -> None:
        self.current: Announcement | None = None

    def hear(self, a: Announcement) -> str:
        """'switch' (sign for `a` from now on), 'same', 'earlier' (ignored: a signed announcement of a run that
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
