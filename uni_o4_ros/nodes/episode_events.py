"""Episode events shared by the nodes that drive a simulated robot."""

from __future__ import annotations

from uni_o4_ros.msg import EpisodeEvent

# After these the simulated robot is stood up again: every episode starts from the standing
# pose, also when the robot walked or fell while the graph waited for its readers.
SIM_RESET_EVENTS = frozenset(
    {EpisodeEvent.STARTED, EpisodeEvent.TIMEOUT, EpisodeEvent.ABORTED_FALL, EpisodeEvent.ENDED})
