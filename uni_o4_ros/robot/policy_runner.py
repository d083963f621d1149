"""The policy side of the control loop without ROS: observation -> action -> joint targets, and
weight hot-swaps that happen only between ticks, only after verification.

`offer` verifies an update at once (so a bad one is refused with its reason immediately) but
only stages it; the next `tick` swaps it in before computing its action, so every tick runs
wholly on one version and no tick waits for verification. Besides its form, an update's behaviour is
checked: on the states of the last 5 s, and on the robot standing still, it may move the joint targets
at most `max_update_shift` rad from the policy the motors run, and must give finite actions whatever that
setting. Weights refused for what they would do are refused again when offered again (under any version).

A swapped-in version whose action on some later state is not finite is withdrawn at that tick: the
newest of the last KEEP_EARLIER versions that answers it finitely answers instead (`withdrawn` says which were
dropped, for the policy node to report). When none does, the state is the likelier fault: nothing is withdrawn,
the tick raises NonFiniteAction and no command is sent (the controller's watchdog damps).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np
import torch

from ..learning.normalizer import StateNormalizer
from ..learning.policy import GaussianPolicyEnsemble
from .go1 import DEFAULT_Q, action_to_joint_targets
from .observation import ObservationBuilder, command_vector
from .policy_update import StaleSession, UpdateRejected, VerifiedPolicy, joint_target_shifts, verify_update
from .update_session import new_session

RECENT_STATES = 250  # 5 s at 50 Hz: the states an update's behaviour is compared on
KEEP_EARLIER = 3  # versions kept to answer a state the running one cannot (a policy is a few MB at most)
JUDGE_TRIES = 5  # times an update is judged again when a tick changed the running version meanwhile


@dataclass(frozen=True)
class Verdict:
    """The policy node's answer to an update offered to it."""

    accepted: bool
    reason: str
    authentic: bool  # signed with this robot's key (or none is used): a verdict the learner may act on
    sha256: str  # of the bytes received, which a verdict names: a forgery cannot borrow the learner's update's
    stale_session: bool = False  # signed for another run of the policy node (policy_update.StaleSession)


class NonFiniteAction(ValueError):
    """The running policy's action on this state is not finite, and there is no earlier version to answer."""


@dataclass(frozen=True)
class Withdrawal:
    """A swapped-in version withdrawn at a tick for a non-finite action, and the version answering instead."""

    version: int
    sha256: str
    running: int
    reason: str


@dataclass
class TickResult:
    q_des: np.ndarray
    action: np.ndarray
    log_prob: float
    observation: np.ndarray
    policy_version: int


class PolicyRunner:
    def __init__(self, policy: GaussianPolicyEnsemble, normalizer: StateNormalizer, version: int = 0,
                 deterministic: bool = True, key: bytes | None = None, seed: int = 0,
                 max_update_shift: float = 1.0) -> None:
        if policy.n != 1:
            raise ValueError("the robot runs a single policy")
        if not max_update_shift >= 0:
            raise ValueError(f"max_update_shift must be >= 0 (0: unchecked), got {max_update_shift}")
        self.max_update_shift = max_update_shift
        self.recent: deque[np.ndarray] = deque(maxlen=RECENT_STATES)
        self._active = VerifiedPolicy(version, policy.eval(), normalizer, "")
        self._pending: VerifiedPolicy | None = None
        # What the last swaps replaced, newest last: they answer, newest first, a state the running one cannot.
        self._earlier: list[VerifiedPolicy] = []
        self.withdrawn: list[Withdrawal] = []  # versions withdrawn at a tick, for the node to report (then cleared)
        # Weights (sha256) refused for what they would do, with the reason: the shift is judged on recent states,
        # so the same bytes offered again a moment later (a restarted learner, a replay) could otherwise pass.
        self.refused_weights: dict[str, str] = {}
        self.deterministic = deterministic
        self._lock = threading.Lock()
        self.key = key
        self.session = new_session()  # this run's: updates signed for another run are refused (update_session.py)
        self.started_ns = time.time_ns()  # this run's start (wall clock), announced with the session
        self.obs = ObservationBuilder()
        self.last_action = np.zeros(policy.spec.act_dim, np.float32)
        self.command = command_vector(0.0)
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)
        torch.set_num_threads(1)

    @property
    def version(self) -> int:
        return self._active.version

    @property
    def next_version(self) -> int:
        """The version the robot acts with from the next tick on: a staged update, else the active one."""
        with self._lock:
            return (self._pending or self._active).version

    @property
    def obs_dim(self) -> int:
        return self._active.policy.spec.obs_dim

    def offer(self, version: int, sha256: str, blob: bytes, spec_json: str, signature: bytes,
              session: str = "") -> Verdict:
        """Verify and stage an update, signed for `session`, which must be this runner's."""
        with self._lock:
            replaced = self._pending or self._active  # what the robot will run if this is refused
        try:
            verified = verify_update(version, sha256, blob, spec_json, signature, current_version=replaced.version,
                                     expected_obs_dim=self.obs_dim, expected_act_dim=self._active.policy.spec.act_dim,
                                     key=self.key, expected_spec=self._active.policy.spec, session=session,
                                     expected_session=self.session)
        except UpdateRejected as exc:
            return Verdict(False, str(exc), exc.authentic, exc.sha256, isinstance(exc, StaleSession))
        if (earlier := self.refused_weights.get(verified.sha256)) is not None:
            return Verdict(False, f"these weights were refused before in this run of the policy node: {earlier}",
                           True, verified.sha256)
        for _ in range(JUDGE_TRIES):
            # Judged against what the motors run: updates staged while no tick swaps them in (an e-stop) are each
            # judged against it, not against the one staged before (three steps of 0.8 rad were one jump of 2.4 at
            # the re-arm). A tick that changed it meanwhile (a swap, a withdrawal) has the update judged again.
            with self._lock:
                running, states = self._active, list(self.recent)
            refusal, moved = self._judge(verified, running, states)
            with self._lock:
                if self._active is running:
                    if refusal is None:
                        self._pending = verified
                    break
        else:
            return Verdict(False, f"the running version changed {JUDGE_TRIES} times while version {version} was "
                           "judged against it: offer it again", True, verified.sha256)
        if refusal is not None:
            return self._refuse(verified, refusal)
        return Verdict(True, f"version {version} staged: it {moved}", True, verified.sha256)

    def _judge(self, verified: VerifiedPolicy, running: VerifiedPolicy,
               states: list[np.ndarray]) -> tuple[str | None, str]:
        """(why `verified` may not replace `running`, None if it may; how far it moves the joint targets), judged
        on `states` and the robot standing."""
        # The robot standing still is always among the states: an update that arrives before the first
        # state (a learner's latest version reaches a starting policy node at once) is checked too.
        states = [*states, self.standing_history()]
        try:
            shifts = joint_target_shifts(running, verified, np.stack(states), sampled=not self.deterministic)
        except RuntimeError as exc:  # a forward pass the checks above did not foresee
            return f"running it on recent states failed: {exc}", ""
        compared = shifts[~np.isnan(shifts)]  # the states the running version acts finitely on
        on = f"{len(states) - 1} recent states and the robot standing"
        if len(compared) < len(states):
            on += f" ({len(compared)} of them: v{running.version}'s actions on the others are not finite)"
        if np.isinf(shifts).any():  # whatever max_update_shift says: NaN never reaches a motor
            return f"its actions are not finite on {on}: a learner that diverged", ""
        shift = float(compared.mean()) if len(compared) else 0.0
        spread = "" if self.deterministic else " (at the mean action and 2 std either side)"
        moved = f"moves the joint targets {shift:.3f} rad{spread} from v{running.version}'s, on {on}"
        if self.max_update_shift and not shift <= self.max_update_shift:
            return (f"it {moved} (per state the largest joint, averaged), more than max_update_shift "
                    f"{self.max_update_shift} rad: a learner that diverged, or another robot's policy? Raise "
                    "max_update_shift only if so large a change is meant"), moved
        return None, moved

    def _refuse(self, verified: VerifiedPolicy, reason: str) -> Verdict:
        """A verdict on an authentic update's behaviour, remembered for its weights."""
        with self._lock:  # the tick thread adds withdrawn ones
            if len(self.refused_weights) >= 1000:  # bounded: anyone without the key is refused before this
                del self.refused_weights[next(iter(self.refused_weights))]
            self.refused_weights[verified.sha256] = reason
        return Verdict(False, reason, True, verified.sha256)

    def standing_history(self) -> np.ndarray:
        """The observation history of the robot standing still at its default pose, upright, under the
        current command: the state every episode starts from."""
        builder, zero = ObservationBuilder(), np.zeros(12, np.float32)
        for _ in range(builder.history):
            history = builder.push(builder.frame(np.array([1.0, 0.0, 0.0, 0.0]), self.command, DEFAULT_Q, zero, zero))
        return history

    def reset(self, episode: int | None = None) -> None:
        """A fresh history. With `episode` (the robot's reset count, in simulation) the sampling noise
        restarts from (seed, episode): an episode's noise does not depend on how many states were
        answered before it began, which message timing decides."""
        self.obs.reset()
        self.last_action[:] = 0.0
        if episode is not None:
            self.generator.manual_seed(self.seed * 1_000_003 + episode)

    def tick(self, quat_wxyz: np.ndarray, q: np.ndarray, dq: np.ndarray) -> TickResult:
        with self._lock:
            if self._pending is not None:
                self._earlier = [*self._earlier, self._active][-KEEP_EARLIER:]
                self._active, self._pending = self._pending, None
        frame = self.obs.frame(quat_wxyz, self.command, q, dq, self.last_action)
        history = self.obs.push(frame)
        with self._lock:  # offer() copies them from the verifier's thread
            self.recent.append(history)
        active = self._active
        action, logp = self._act(active, history)
        if not np.isfinite(action).all():
            active, action, logp = self._fall_back(active, history)
        self.last_action = action
        return TickResult(action_to_joint_targets(action), action, logp, history, active.version)

    def _fall_back(self, failed: VerifiedPolicy, history: np.ndarray) -> tuple[VerifiedPolicy, np.ndarray, float]:
        """The newest earlier version whose action on `history` is finite, `failed` and those newer than it
        withdrawn; NonFiniteAction if none is, and then nothing is withdrawn: no version answering the state, the
        state is the likelier fault (the policy node leaves it unanswered, as a bad state)."""
        with self._lock:
            earlier = list(self._earlier)
        dropped = [failed]
        for fallback in reversed(earlier):
            action, logp = self._act(fallback, history)
            if np.isfinite(action).all():
                break
            dropped.append(fallback)
        else:
            raise NonFiniteAction(f"version {failed.version}'s action on this robot state is not finite, and no "
                                  f"earlier version of this run ({len(earlier)} kept) answers it either")
        with self._lock:
            self._active, self._earlier = fallback, self._earlier[:len(earlier) - len(dropped)]
            staged, self._pending = self._pending, None
            if staged is not None:
                # judged against the version withdrawn now: said withdrawn too, before it ever ran (its learner made
                # it from a dropped version, and goes back to the one running), not swapped in unjudged next tick
                dropped.insert(0, staged)
            for gone, after in zip(dropped, [*dropped[1:], fallback], strict=True):
                why = ("staged, judged against version " f"{failed.version}, which was just withdrawn" if gone is staged
                       else "its action on a robot state was not finite")
                self.refused_weights[gone.sha256] = f"withdrawn at a tick: {why}"
                self.withdrawn.append(Withdrawal(gone.version, gone.sha256, after.version,
                                                 f"version {gone.version} was withdrawn at a tick: {why}; version "
                                                 f"{after.version} answers again"))
        return fallback, action, logp

    def _act(self, active: VerifiedPolicy, history: np.ndarray) -> tuple[np.ndarray, float]:
        with torch.no_grad():
            x = active.normalizer(torch.from_numpy(history).unsqueeze(0))
            mean, log_std = active.policy(x)
            if self.deterministic:
                a = mean
            else:
                a = mean + torch.randn(mean.shape, generator=self.generator) * log_std.exp()
            logp = float(active.policy.gaussian_log_prob(mean, log_std, a)[0, 0])
        return a[0, 0].numpy().astype(np.float32), logp
