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
import time
from dataclasses import dataclass

from .policy_update import sign_status
from .runs import Announcement, SessionChoice, new_session

__all__ = ["SESSION_STATUS", "Announcement", "SessionChoice", "StaleAnswer", "new_session", "session_in",
           "session_status", "stale_answer_in"]

SESSION_STATUS = "policy_session"  # the DiagnosticStatus name of a policy node's session announcement


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


@dataclass(frozen=True)
class StaleAnswer:
    """A policy node run's refusal of an update as signed for another run (policy_status, `stale_session`), which
    names the refusing run: `run.signed` says the status is signed with the reader's key."""
    run: Announcement
    refused_session: str  # the run the refused update was signed for
    version: int  # refused
    sha256: str  # of the bytes refused: a learner acts only on an answer to the update it published last


def stale_answer_in(values: dict[str, str], message: str, key: bytes | None) -> StaleAnswer | None:
    """The StaleAnswer a policy_status reports, None if it is none (or names no run: a policy node of before)."""
    if values.get("accepted") != "False" or values.get("stale_session") != "True":
        return None
    run = session_in(values, message, key)  # the refusing run, as its announcement names it (signed alike)
    try:
        version = int(values.get("version", ""))
    except ValueError:
        return None
    if run is None:
        return None
    return StaleAnswer(run, values.get("refused_session", ""), version, values.get("sha256", ""))
