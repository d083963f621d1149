"""learner node (online mode): Transition stream of the deployed version -> PPO update every
`rollout_steps` transitions -> PolicyUpdate (safetensors + sha256 [+ HMAC]) for the policy node.

Every update is checkpointed before it is published; a restarted learner resumes from its
checkpoint and republishes its newest weights. A crash of this process never stops the
controller: the policy node keeps running the last verified version. Parameters: policy_dir
(initial policy, with V if it has one), run_dir, rollout_steps, epochs, minibatch_size,
actor_lr, critic_lr, clip, hmac_key_file. The offline mode runs as `uni-o4 offline` on the
logged episode folder.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from rclpy.node import Node

from uni_o4_ros.learning import checkpoint as ckpt
from uni_o4_ros.learning.config import OnlineConfig
from uni_o4_ros.learning.offline import load_policy
from uni_o4_ros.learning.online_learner import OnlineLearnerCore
from uni_o4_ros.learning.value import ValueNet
from uni_o4_ros.msg import PolicyUpdate, Transition
from uni_o4_ros.robot.policy_update import encode_update

from .qos import POLICY_UPDATE, TRANSITIONS
from .run import NodeConfigError, run_node


class LearnerNode(Node):
    def __init__(self) -> None:
        super().__init__("learner")
        import torch

        torch.set_num_threads(1)  # shares the robot computer with the control loop: never spin on every core
        d = OnlineConfig()
        p = {k: self.declare_parameter(k, v).value for k, v in {
            "policy_dir": "", "run_dir": "runs/learner", "rollout_steps": d.rollout_steps, "epochs": d.epochs,
            "minibatch_size": d.minibatch_size, "actor_lr": d.actor_lr, "critic_lr": d.critic_lr, "clip": d.clip,
            "hmac_key_file": ""}.items()}
        if not p["policy_dir"] or not Path(p["policy_dir"]).is_dir():
            raise NodeConfigError(f"parameter policy_dir must name a saved policy folder, got {p['policy_dir']!r}")
        actor, normalizer, meta, tensors = load_policy(p["policy_dir"])
        critic = ValueNet(actor.spec.obs_dim, tuple(meta.get("v_hidden", (256, 256, 256))))
        if any(k.startswith("value.") for k in tensors):
            ckpt.load_prefixed("value", critic, tensors)
        else:
            self.get_logger().warn("initial policy has no value function: V starts untrained")
        cfg = OnlineConfig(rollout_steps=int(p["rollout_steps"]), epochs=int(p["epochs"]),
                           minibatch_size=int(p["minibatch_size"]), actor_lr=float(p["actor_lr"]),
                           critic_lr=float(p["critic_lr"]), clip=float(p["clip"]))
        self.core = OnlineLearnerCore(actor, critic, normalizer, cfg, p["run_dir"],
                                      version=int(meta.get("version", 0)))
        self.key = Path(p["hmac_key_file"]).read_bytes().strip() if p["hmac_key_file"] else None
        self.pub = self.create_publisher(PolicyUpdate, "policy_update", POLICY_UPDATE)
        self.create_subscription(Transition, "transitions", self.on_transition, TRANSITIONS)
        if self.core.updates:
            self.get_logger().info(f"resumed at version {self.core.version} ({self.core.updates} updates)")
            self.publish()

    def on_transition(self, m: Transition) -> None:
        res = self.core.add({"observation": np.asarray(m.observation),
                             "next_observation": np.asarray(m.next_observation),
                             "action": np.asarray(m.action), "log_prob": m.log_prob, "reward": m.reward,
                             "terminal": m.terminal, "timeout": m.timeout, "policy_version": m.policy_version,
                             "step": m.step, "episode_id": m.episode_id})
        if res is not None:
            self.get_logger().info(f"update -> version {res.version}: " +
                                   ", ".join(f"{k} {v:.3g}" for k, v in res.stats.items()))
            self.publish()

    def publish(self) -> None:
        fields = encode_update(self.core.ppo.actor, self.core.ppo.normalizer, self.core.version, self.key)
        msg = PolicyUpdate(**fields)
        msg.header.stamp = self.get_clock().now().to_msg()
        self.pub.publish(msg)


def main(args: list[str] | None = None) -> int:
    return run_node(LearnerNode, "learner", args, errors=(ckpt.CheckpointError,))


if __name__ == "__main__":
    sys.exit(main())
