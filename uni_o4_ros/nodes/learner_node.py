"""learner node, two modes (parameter `mode`):

online  - Transition stream of the deployed version -> PPO update every `rollout_steps`
          transitions -> PolicyUpdate (safetensors + sha256 [+ HMAC]) for the policy node. A refused
          update is dropped: the learner goes back to the version the robot runs (policy_status). Every
          update is checkpointed before it is published; a restarted learner resumes from its
          checkpoint and republishes its newest weights. The newest version is also a deployable
          policy folder, run_dir/policy (for robot.launch.py, or `uni-o4 offline --init-policy`).
offline - Uni-O4 offline on a logged `dataset` (an episode folder from the dataset_logger, or a
          D4RL-layout HDF5 file), the ensemble initialised from `policy_dir` when given (online ->
          offline, Eq. 25, no BC), then the AM-Q-selected policy is published as the next version
          and written to run_dir/final (+ summary.json). Training runs on a worker thread so the
          node keeps answering; cached stages make a restarted offline run resume.

Every update is signed for the policy node run that announced its session on `policy_session`
(update_session.SessionChoice: the newest by its signed start time): until one has, the learner holds
its update back (and says so), and when a newer run announces itself (a restarted policy node) the
learner signs its newest version again for it. A replayed announcement of an earlier run is ignored; a run
that refuses this learner's newest update, made for the run held, as signed for another run names itself and is
signed for from then on (a policy node restarted with its clock set back announces a start before the run it
replaces).

A crash of this process never stops the controller: the policy node keeps running the last
verified version. Parameters: mode, policy_dir, run_dir, rollout_steps, epochs, minibatch_size,
actor_lr, critic_lr, clip, critic_warmup_steps (transitions during which only V learns and nothing is
published; useful when the initial policy has no V), target_kl (PPO's KL early stop of the actor per
update; 0 = off), hmac_key_file (as the policy node's: 'auto', a path or ''), torch_threads (default
1); offline: dataset, offline_overrides (["section.key=value"]).
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.node import Node

from uni_o4_ros.data.atomic import write_json, write_text
from uni_o4_ros.learning import checkpoint as ckpt
from uni_o4_ros.learning.config import OnlineConfig
from uni_o4_ros.learning.offline import load_policy, load_value
from uni_o4_ros.learning.online_learner import OnlineLearnerCore
from uni_o4_ros.learning.value import ValueNet
from uni_o4_ros.msg import PolicyUpdate, Transition
from uni_o4_ros.robot.episodes import run_name, transition_row, wall_time
from uni_o4_ros.robot.policy_update import encode_update, refusal_in
from uni_o4_ros.robot.runs import QUIET_S, remember
from uni_o4_ros.robot.update_session import SESSION_STATUS, SessionChoice, session_in, stale_answer_in

from .params import Doc, declare_read_only, update_key, writable_folder
from .qos import EVENTS, POLICY_SESSION, POLICY_UPDATE, TRANSITIONS
from .run import NodeConfigError, run_node

PARAMETERS = {
    "mode": Doc("online | offline; PPO on the robot's transitions, or Uni-O4 offline on a logged dataset"),
    "policy_dir": Doc("folder; online: the deployed policy to fine-tune (required); offline: optional, the "
                      "policy the ensemble starts from"),
    "run_dir": Doc("folder; checkpoints and the newest policy (run_dir/policy), offline: run_dir/final and "
                   "summary.json"),
    "rollout_steps": Doc("transitions; online: one PPO update, and one PolicyUpdate, per this many", ">=1"),
    "epochs": Doc("online: PPO passes over each rollout", ">=1"),
    "minibatch_size": Doc("transitions; online: per PPO gradient step", ">=1"),
    "actor_lr": Doc("online: the actor's learning rate (0 freezes it)", ">=0"),
    "critic_lr": Doc("online: the value function's learning rate", ">=0"),
    "clip": Doc("online: PPO's clip ratio", "(0,1)"),
    "critic_warmup_steps": Doc("transitions; online: at first only V learns and nothing is published, for this "
                               "many", ">=0"),
    "target_kl": Doc("online: PPO's KL early stop of the actor per update; 0: off", ">=0"),
    "hmac_key_file": Doc("'auto' | path | ''; the key updates are signed with: auto is this computer's own "
                         "(~/.config/uni_o4_ros/), a path another's copy (a learner off the robot), '' unsigned"),
    "dataset": Doc("path; offline only: an episode folder of the dataset_logger, or a D4RL-layout HDF5 file"),
    "offline_overrides": Doc("offline only: config settings as key=value or section.key=value, as `uni-o4 offline "
                             "--set` takes them, over env=go1's defaults ([]: none)"),
    "torch_threads": Doc("threads; torch's for training: 1 by default, since the learner shares the robot "
                         "computer with the control loop", ">=1"),
}


class LearnerNode(Node):
    def __init__(self) -> None:
        super().__init__("learner")
        import torch

        d = OnlineConfig()
        p = declare_read_only(self, PARAMETERS, {
            "mode": "online", "policy_dir": "", "run_dir": "runs/learner", "rollout_steps": d.rollout_steps,
            "epochs": d.epochs, "minibatch_size": d.minibatch_size, "actor_lr": d.actor_lr,
            "critic_lr": d.critic_lr, "clip": d.clip, "critic_warmup_steps": d.critic_warmup_steps,
            "target_kl": d.target_kl or 0.0, "hmac_key_file": "auto", "dataset": "",
            "offline_overrides": ["env=go1"], "torch_threads": 1})
        # Default 1: the learner shares the robot computer with the control loop and must never spin
        # on every core. An offline run with nothing else on the machine may take more.
        torch.set_num_threads(int(p["torch_threads"]))
        writable_folder(p["run_dir"], "run_dir")  # checkpoints go here: an update the learner cannot save is lost
        self.key = update_key(self, p["hmac_key_file"])
        self.pub = self.create_publisher(PolicyUpdate, "policy_update", POLICY_UPDATE)
        self.published: tuple[int, str] | None = None  # (version, sha256) of the update this learner published last
        # sha256 of each version published (the newest few): a withdrawal names a version published before the last
        self.published_shas: dict[int, str] = {}
        # The policy node run updates are signed for, and the newest update (policy, normalizer, version): signed
        # again for each new run. Guarded, and held while an update is signed and sent: the offline result is
        # published from its worker thread, and an update signed for an older run must never be sent after
        # (and so kept, transient-local, in place of) one for the newer run.
        self.sessions = SessionChoice()
        self.newest: tuple | None = None
        self.publish_lock = threading.Lock()
        self.held_back: int | None = None  # the version said to wait for a session, so it is said once
        # What was said once, so each is said once (bounded: anyone on the domain can publish statuses)
        self.ignored_sessions: dict[str, None] = {}  # announcements ignored
        self.stale_refusals: dict[str, None] = {}  # versions whose stale-session refusal was said
        self.both_answered: dict[str, None] = {}  # runs answering beside the one held
        self.create_subscription(DiagnosticStatus, "policy_session", self.on_session, POLICY_SESSION)
        self.create_subscription(DiagnosticStatus, "policy_status", self.on_policy_status, EVENTS)
        if p["mode"] == "offline":
            self._start_offline(p)
            return
        if p["mode"] != "online":
            raise NodeConfigError(f"parameter mode must be 'online' or 'offline', got {p['mode']!r}")
        if not p["policy_dir"] or not Path(p["policy_dir"]).is_dir():
            raise NodeConfigError(f"parameter policy_dir must name a saved policy folder, got {p['policy_dir']!r}")
        actor, normalizer, meta, tensors = load_policy(p["policy_dir"])
        critic = load_value(p["policy_dir"], meta, tensors, actor.spec.obs_dim, default_hidden=(256, 256, 256))
        if critic is None:
            critic = ValueNet(actor.spec.obs_dim, (256, 256, 256))  # Table 5's widths
            self.get_logger().warning("initial policy has no value function: V starts untrained "
                                      "(consider critic_warmup_steps)")
        cfg = OnlineConfig(rollout_steps=int(p["rollout_steps"]), epochs=int(p["epochs"]),
                           minibatch_size=int(p["minibatch_size"]), actor_lr=float(p["actor_lr"]),
                           critic_lr=float(p["critic_lr"]), clip=float(p["clip"]),
                           critic_warmup_steps=int(p["critic_warmup_steps"]),
                           target_kl=float(p["target_kl"]) or None)
        self.core = OnlineLearnerCore(actor, critic, normalizer, cfg, p["run_dir"],
                                      version=int(meta.get("version", 0)))
        self.create_subscription(Transition, "transitions", self.on_transition, TRANSITIONS)
        # (version, running) of each signed verdict acted on or said: each once. (By version alone, a refusal
        # that could not be acted on hid a later one, naming a version this learner can go back to.)
        self.verdicts: dict[tuple[int, int], None] = {}
        self.earlier_runs: dict[str, None] = {}  # recorder runs said to be left out, so each is said once (bounded)
        self.unsigned_refusals: set[int] = set()
        if self.core.updates:
            # Published when the policy node's session arrives (at once if one runs: it is kept for late joiners).
            self.newest = (self.core.ppo.actor, self.core.ppo.normalizer, self.core.version)
            self.get_logger().info(f"resumed at version {self.core.version} ({self.core.updates} updates): published "
                                   "for the policy node run that announces itself on policy_session")

    # ------------------------------------------------------------------ offline mode
    def _start_offline(self, p: dict) -> None:
        from uni_o4_ros.learning.config import load_config

        dataset = Path(p["dataset"])
        if not p["dataset"] or not dataset.exists():
            raise NodeConfigError(
                f"offline mode needs parameter dataset (episode folder or HDF5), got {p['dataset']!r}")
        if p["policy_dir"] and not Path(p["policy_dir"]).is_dir():
            raise NodeConfigError(f"policy_dir {p['policy_dir']!r} is not a saved policy folder")
        # env=go1 underneath: the learner trains the robot's policy, and `offline_overrides:=[]` (no settings) took
        # Hopper's config for the robot's data.
        self.cfg = load_config(None, [str(o) for o in p["offline_overrides"] if str(o)], base=["env=go1"])
        self.offline_args = (dataset, p["policy_dir"], Path(p["run_dir"]))
        self.stopping = threading.Event()
        self.worker = threading.Thread(target=self._run_offline, name="offline", daemon=True)
        self.worker.start()

    def _run_offline(self) -> None:
        from uni_o4_ros.data import read_hdf5, validate
        from uni_o4_ros.learning.offline import OfflineTrainer, TrainingStopped
        from uni_o4_ros.robot.episodes import lost_in_recording, read_episodes

        dataset, policy_dir, run_dir = self.offline_args
        try:
            ds = read_episodes(dataset) if dataset.is_dir() else read_hdf5(dataset)
            validate(ds)
            if lost := lost_in_recording(ds):
                self.get_logger().warning(f"{dataset}: {lost}")
            init, version = None, 0
            if policy_dir:
                pol, norm, meta, _ = load_policy(policy_dir)
                init, version = (pol, norm), int(meta.get("version", 0))
            self.get_logger().info(f"offline Uni-O4 on {len(ds)} transitions from {dataset}")
            # final/ says the version it is published as: started from it, a policy node or an online learner took
            # it for version 0, and the learner dropped every transition of the version the robot ran as stale
            res = OfflineTrainer(self.cfg, ds, run_dir, init_policy=init, progress=False,
                                 should_stop=self.stopping.is_set).run(version=version + 1)
        except TrainingStopped as exc:
            self.get_logger().info(f"offline learning: {exc}")
            return
        except Exception as exc:  # noqa: BLE001 - report and keep the node (and the robot) up
            self.get_logger().error(f"offline learning failed: {type(exc).__name__}: {exc}")
            write_text(run_dir / "failed.txt", f"{type(exc).__name__}: {exc}\n")
            return
        write_json(run_dir / "summary.json", {
            "am_q": res.am_q, "transitions": len(ds), "version": version + 1, "policy": str(run_dir / "final")})
        try:
            sent = self.publish(res.policy, res.normalizer, version + 1)
        except Exception as exc:  # noqa: BLE001 - in this thread an error would vanish, and nothing be published
            self.get_logger().error(f"publishing the offline policy failed: {type(exc).__name__}: {exc}; it is "
                                    f"saved in {run_dir / 'final'}")
            return
        self.get_logger().info(f"offline policy {'published' if sent else 'made'} as version {version + 1} (AM-Q "
                               f"{res.am_q:.3f})" + ("" if sent else ": published once a policy node announces itself"))

    # ------------------------------------------------------------------ online mode
    def on_transition(self, m: Transition) -> None:
        invalid, unexplored = self.core.dropped_invalid, self.core.not_exploring
        earlier = self.core.dropped_earlier_run
        res = self.core.add(transition_row(m))
        held = self.core.recorder_runs.current
        if self.core.dropped_earlier_run > earlier and self.core.earlier_run not in self.earlier_runs:
            remember(self.earlier_runs, self.core.earlier_run)
            self.get_logger().warning(
                f"left out transitions of recorder run {run_name(self.core.earlier_run)} (started "
                f"{wall_time(m.recorder_started_ns)}): it started before the run learned from "
                f"({run_name(held.session)}, started {wall_time(held.started_ns)}), so they are an old recording "
                "played back (ros2 bag play?), left out while that run is heard")
        elif self.core.gave_up is not None and held.session == m.recorder_session:
            self.get_logger().warning(
                f"learning from recorder run {run_name(held.session)} from now on, though it started before run "
                f"{run_name(self.core.gave_up)}, silent for {QUIET_S:.0f} s: a recorder restarted with its clock set "
                "back, or an old recording played back while the robot's recorder is paused (ros2 bag play?)")
        n = self.core.dropped_invalid
        if n > invalid and (n == 1 or n % 100 == 0):
            self.get_logger().warning(f"left out {n} transition(s) so far with NaN/inf values, wrong dimensions or "
                                      "a recorder_session that is no recorder's "
                                      f"(latest: episode {m.episode_id}, step {m.step})")
        if self.core.stalled:
            self.get_logger().error(
                f"the last {self.core.stale_streak} transitions came from policy version {self.core.stale_version}, "
                f"not version {self.core.version}, this learner's newest: the policy node has not swapped it in "
                "(refused it? its log and the policy_status topic say why). Nothing is learned until it runs "
                "this learner's version")
        if self.core.not_exploring > unexplored:
            self.get_logger().error(
                f"a batch of {self.core.cfg.rollout_steps} transitions was not used ({self.core.not_exploring} so "
                "far): the deployed policy acted with its mean, from which PPO cannot learn the mean. Start the "
                "policy node with deterministic:=false (ros2 launch ... deterministic:=false)")
        if res is not None:
            self.get_logger().info(f"update -> version {res.version}: " +
                                   ", ".join(f"{k} {v:.3g}" for k, v in res.stats.items()))
            self.publish(self.core.ppo.actor, self.core.ppo.normalizer, self.core.version)

    def on_policy_status(self, st: DiagnosticStatus) -> None:
        """The policy node's verdict on an update: a refusal of this learner's newest version is said at once
        (the robot keeps the version before, whose transitions this learner no longer learns from)."""
        if st.name != "policy_update":
            return
        values = {kv.key: kv.value for kv in st.values}
        if values.get("stale_session") == "True":
            self.on_stale_answer(values, st.message)
            return
        if not hasattr(self, "core"):  # offline: nothing to go back to
            return
        refusal = refusal_in(values, st.message, self.key)
        if refusal is None:  # an acceptance, or not a policy node's verdict
            return
        version, running = refusal.version, refusal.running
        # A resumed learner republishes the version the robot may already run: refused as not newer, and fine.
        if version != self.core.version or version == running:
            return
        if refusal.signed and self.published_shas.get(version) != refusal.sha256:
            # a verdict on other bytes under this version's number (a replay, another learner's): not ours. (Of a
            # version published before the last: a withdrawal of the version gone back to, the robot's next one)
            return
        if not refusal.signed:  # said, for its reason (a learner with another key than its robot's hears why
            # here), but not acted on
            if version not in self.unsigned_refusals:
                self.unsigned_refusals.add(version)
                self.get_logger().warning(
                    f"a policy node refused version {version}: {st.message}. Its status is not signed with this "
                    "learner's key, so it may be another suite's policy node: this learner does not go back")
            return
        if (version, running) in self.verdicts:
            return
        remember(self.verdicts, (version, running))
        if self.core.refused(version, running, st.message):
            with self.publish_lock:  # what a restarted policy node is offered: the version gone back to
                self.newest = (self.core.ppo.actor, self.core.ppo.normalizer, self.core.version)
                # its bytes, as the policy node got them when it was published (perhaps before a restart of this
                # node): a later withdrawal of it names them
                remember(self.published_shas, running,
                         encode_update(self.core.ppo.actor, self.core.ppo.normalizer, running)["sha256"])
            self.get_logger().error(
                f"the policy node refused version {version}: {st.message}. Went back to version {running}, "
                f"which the robot runs and version {version} descends from: learning goes on from its "
                f"transitions, and the next update is version {self.core.published + 1}")
            return
        self.get_logger().error(f"the policy node refused version {version}: {st.message}. The robot keeps "
                                f"version {running}, none this learner keeps of those version {version} descends "
                                "from; it learns only from transitions of its newest version, so it waits")

    def on_stale_answer(self, values: dict[str, str], message: str) -> None:
        """A policy node run refused an update as signed for another run. Seen when a policy node restarts: the
        update kept for late joiners was signed for its previous run, and its announcement has the learner sign
        again. A signed refusal of the update this learner published last, for the run it holds, is taken as that
        run's end (SessionChoice.answered), even if the refusing run's announcement was dated before the held
        run's and so ignored as played back: a policy node restarted with its clock set back (a robot computer
        with no RTC or NTP)."""
        answer = stale_answer_in(values, message, self.key)
        with self.publish_lock:
            held = self.sessions.current
            ours = answer is not None and answer.run.signed and self.published is not None \
                and (answer.version, answer.sha256) == self.published
            choice = self.sessions.answered(answer.run, answer.refused_session) if ours else "other"
            if choice == "switch" and self.newest is not None:
                self._send(*self.newest, answer.run.session)
        if choice == "switch":
            name, then = f"policy node session {answer.run.session[:8]}...", (
                f"version {self.newest[2]} is signed for it again" if self.newest else "updates are signed for it")
            if answer.run.started_ns <= held.started_ns:
                self.get_logger().warning(
                    f"{name} refused version {answer.version} as signed for session {held.session[:8]}...: it runs, "
                    f"though it started ({wall_time(answer.run.started_ns)}) before that run did, by its clock "
                    f"(restarted with its clock set back?): {then}")
            else:  # a new run whose announcement has not arrived yet
                self.get_logger().info(f"{name} (a new run of the policy node) refused version {answer.version} as "
                                       f"signed for the run before: {then}")
        elif choice == "both":
            if answer.run.session in self.both_answered:
                return
            remember(self.both_answered, answer.run.session)
            self.get_logger().error(
                f"policy node sessions {answer.run.session[:8]}... and {held.session[:8]}... both answer this "
                "learner's updates: two policy nodes with this key run on this ROS domain (two suites, or one "
                f"started twice). Updates stay signed for {held.session[:8]}...; stop the other one")
        elif values.get("version", "") not in self.stale_refusals:
            remember(self.stale_refusals, values.get("version", ""))
            self.get_logger().info(f"a policy node refused version {values.get('version')} as signed for another run "
                                   f"of it ({message}); this learner signs for the run it heard on policy_session")

    def on_session(self, st: DiagnosticStatus) -> None:
        """A policy node run announced its session: updates are signed for it from now on, and the newest one
        again at once (the run may be a restarted policy node, which took none of this learner's updates yet)."""
        if st.name != SESSION_STATUS:
            return
        heard = session_in({kv.key: kv.value for kv in st.values}, st.message, self.key)
        if heard is None:
            return
        with self.publish_lock:
            held = self.sessions.current
            choice = self.sessions.hear(heard)
            newest = self.newest if choice == "switch" else None
            if newest is not None:
                self._send(*newest, heard.session)
        name = f"policy node session {heard.session[:8]}..."
        if choice in ("earlier", "unchecked"):
            if heard.session not in self.ignored_sessions:
                remember(self.ignored_sessions, heard.session)
                why = ("announced by a run that started before the one updates are signed for: an old announcement "
                       "played back (ros2 bag play?). A policy node restarted with its clock set back is taken once it "
                       "refuses the update kept for it" if choice == "earlier" else
                       "announced in a status not signed with this learner's key, while its own robot's run is known")
                self.get_logger().warning(f"ignored {name}: {why} (signing for {held.session[:8]}...)")
            return
        if choice != "switch":
            return
        if not heard.signed:
            self.get_logger().warning(f"{name} is announced in a status not signed with this learner's key (another "
                                      "key than the robot's, or another suite's policy node on this ROS domain): "
                                      "updates are signed for it until the robot's own is heard")
        self.get_logger().info(f"{name}: " + (f"version {newest[2]} published for it" if newest is not None
                                               else "updates are signed for it"))

    def close(self) -> None:
        """Called by run_node on Ctrl-C/SIGTERM: an offline run checkpoints and its thread ends
        before the process does (a thread killed inside torch aborted the process)."""
        worker = getattr(self, "worker", None)
        if worker is not None and worker.is_alive():
            self.stopping.set()
            worker.join(timeout=120.0)  # the longest uninterruptible piece is the final AM-Q choice

    def publish(self, actor, normalizer, version: int) -> bool:
        """Publish `version` for the policy node run chosen, or hold it back until one announces itself (False).
        `actor` is signed again for each later run: online, the PPO actor, which holds `version` until the next
        publish."""
        with self.publish_lock:
            self.newest, current = (actor, normalizer, version), self.sessions.current
            if current is not None:
                self._send(actor, normalizer, version, current.session)
                return True
        if self.held_back != version:
            self.held_back = version
            self.get_logger().warning(f"version {version} waits for a policy node: none has announced its session on "
                                      "policy_session yet, and updates are signed for one")
        return False

    def _send(self, actor, normalizer, version: int, session: str) -> None:
        """Sign and publish; the caller holds publish_lock."""
        fields = encode_update(actor, normalizer, version, self.key, session)
        self.published = (version, fields["sha256"])
        remember(self.published_shas, version, fields["sha256"])
        msg = PolicyUpdate(**fields)
        msg.header.stamp = self.get_clock().now().to_msg()
        self.pub.publish(msg)


def main(args: list[str] | None = None) -> int:
    return run_node(LearnerNode, "learner", args, errors=(ckpt.CheckpointError,))


if __name__ == "__main__":
    sys.exit(main())
