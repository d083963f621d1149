"""Episode events shared by the nodes that drive a simulated robot."""

from __future__ import annotations

from uni_o4_ros.msg import EpisodeEvent

# The simulated robot is stood up again when the recorder starts an episode, and only then: every
# episode starts from the standing pose, and exactly one reset separates two episodes, so the
# recorder can tell the first state after it (end events used to reset as well, and an episode's
# first transitions were then recorded from the fallen robot, before its reset arrived).
SIM_RESET_EVENTS = frozenset({EpisodeEvent.STARTED})
