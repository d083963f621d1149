"""Dataclass configs with the paper's defaults (Table 5, Appendix A.5.2).

Where Table 5 is silent the value comes from the authors' code (see
shared/notes/uni-o4-reference-implementation.md) and is marked "code". Every field can be
overridden from YAML (`load_config`) or from `key=value` strings (`apply_overrides`), and every
run stores the resolved config as JSON beside its checkpoints.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from ..ranges import ConfigValueError, check_ranges

# The names each setting takes (the implementations' own lists, kept equal by a test): checked when the config
# is made, since a misspelt one used to be refused only by the stage that reads it, after those before it
# trained (hours at the paper's budget).
ACTIVATIONS = ("relu", "tanh", "elu", "swish")  # networks.ACTIVATIONS
MEAN_ACTIVATIONS = ("tanh", "clip", "none")  # policy.GaussianPolicyEnsemble
DISAGREEMENTS = ("eq6", "envelope", "kl")  # behavior_cloning
TERMINATIONS = ("auto", "hopper", "walker2d", "halfcheetah", "robot", "never")  # termination.RULES, and auto
SELECTION_RULES = ("am_q", "closest_certified")  # selection.RULES
Q_HEADS = ("min", "independent")


def _one_of(cfg: Any, name: str, choices: tuple[str, ...]) -> None:
    value = getattr(cfg, name)
    if value not in choices:
        raise ConfigValueError(name, f"must be one of {', '.join(choices)}, got {value!r}")


@dataclass
class PolicyConfig:
    hidden: tuple[int, ...] = (256, 256, 256)  # Table 5 "others"; 512-256-128 for quadrupeds
    activation: str = "relu"
    mean_activation: str = "tanh"  # "clip": linear mean, clipped actions; "none" for robot PD-target actions
    log_std_min: float = -5.0  # code: log std in [-5, 0]
    log_std_max: float = 0.0

    def __post_init__(self) -> None:
        check_ranges(self, {"hidden": ">=1"})
        _one_of(self, "activation", ACTIVATIONS)
        _one_of(self, "mean_activation", MEAN_ACTIVATIONS)
        if not (math.isfinite(self.log_std_min) and math.isfinite(self.log_std_max)
                and self.log_std_min < self.log_std_max):
            raise ConfigValueError("log_std_min", f"must be below log_std_max, got {self.log_std_min} and "
                                   f"{self.log_std_max}")


@dataclass
class BCConfig:
    n_policies: int = 4  # paper: ensemble of 4
    alpha: float = 0.1  # Eq. 6 disagreement coefficient
    disagreement: str = "eq6"  # eq6 (paper) | envelope | kl (Eq. 25), see behavior_cloning.py
    steps: int = 400_000  # code: 4e5
    lr: float = 1e-4
    batch_size: int = 512

    def __post_init__(self) -> None:
        check_ranges(self, {"n_policies": ">=1", "alpha": ">=0", "steps": ">=0", "lr": ">=0", "batch_size": ">=1"})
        _one_of(self, "disagreement", DISAGREEMENTS)


@dataclass
class ValueConfig:
    q_hidden: tuple[int, ...] = (1024, 1024)  # Table 5
    v_hidden: tuple[int, ...] = (256, 256, 256)  # Table 5
    expectile: float = 0.7  # IQL omega; 0.5 for hopper/halfcheetah medium-expert, 0.9 antmaze
    gamma: float = 0.99
    tau: float = 0.005  # Polyak rate of the target Q
    target_every: int = 2  # code
    steps: int = 2_000_000  # paper: 2e6 joint Q/V steps
    # Not in the paper: regress Q and V on the data's Monte-Carlo returns for this many steps
    # before IQL, so short budgets start from the right value level (value.py warmup_update).
    mc_warmup_steps: int = 0
    lr: float = 1e-4
    batch_size: int = 512
    # Not in the paper: LayerNorm after each hidden layer of Q, which bounds how far Q can
    # extrapolate to actions off the data (BENCHMARKS §1).
    q_layer_norm: bool = False

    def __post_init__(self) -> None:
        check_ranges(self, {"q_hidden": ">=1", "v_hidden": ">=1", "expectile": "(0,1)", "gamma": "(0,1]",
                             "tau": "(0,1]", "target_every": ">=1", "steps": ">=0", "mc_warmup_steps": ">=0",
                             "lr": ">=0", "batch_size": ">=1"})


@dataclass
class DynamicsConfig:
    n_members: int = 7
    n_elites: int = 5
    hidden: tuple[int, ...] = (200, 200, 200, 200)  # Table 5, MuJoCo locomotion
    lr: float = 1e-3
    batch_size: int = 256
    weight_decay: tuple[float, ...] = (2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4)  # code, per layer
    holdout_ratio: float = 0.2
    max_holdout: int = 1000
    # None: train the whole budget (the paper: 1e5 steps), keeping each member's best-holdout
    # weights. An int is the authors' code's rule: stop after that many epochs without a >1%
    # holdout improvement. That rule stops early on a transient: hopper-medium seed 1's holdout MSE
    # is lowest after 2 epochs (0.063) while the NLL fits the variances, it stops at 6k steps;
    # trained on, the elites reach 0.024 at 1e5 steps (BENCHMARKS §1).
    patience: int | None = None
    max_epochs: int = 200
    max_steps: int = 100_000  # gradient-step cap (paper trains ~1e5 steps)
    termination: str = "auto"  # hopper | walker2d | halfcheetah | robot | never | auto (from env)

    def __post_init__(self) -> None:
        check_ranges(self, {"n_members": ">=1", "n_elites": ">=1", "hidden": ">=1", "lr": ">=0", "batch_size": ">=1",
                             "weight_decay": ">=0", "holdout_ratio": "(0,1)", "max_holdout": ">=1",
                             "patience": ">=1", "max_epochs": ">=1", "max_steps": ">=1"})
        if self.n_elites > self.n_members:
            raise ConfigValueError("n_elites", f"cannot exceed n_members ({self.n_members}), got {self.n_elites}")
        _one_of(self, "termination", TERMINATIONS)


@dataclass
class OPEConfig:
    horizon: int = 1000  # Table 5: 1000 MuJoCo, 20 quadruped
    n_start_states: int = 512
    gamma: float = 1.0  # the paper's AM-Q is an undiscounted sum of Q over the rollout
    # Which Q scores candidates. "min": min of the double Q, for the improvement's advantage and
    # AM-Q alike (paper). "independent": the improvement climbs head 0 (A = Q_0 - V) and AM-Q
    # scores with head 1 only, so a policy is not rewarded for exploiting the errors of the very
    # Q it was improved on (the optimiser's curse; double Q-learning's split of choosing and
    # evaluating). Both heads regress on the same targets, so they agree on the data's actions
    # and differ, by their initialisation, where the improvement leaves it.
    q_head: str = "min"

    def __post_init__(self) -> None:
        check_ranges(self, {"horizon": ">=1", "n_start_states": ">=1", "gamma": "(0,1]"})
        _one_of(self, "q_head", Q_HEADS)

    def heads(self) -> tuple[int | None, int | None]:
        """(Q head of the improvement's advantage, Q head of AM-Q); None means the min of both."""
        return (None, None) if self.q_head == "min" else (0, 1)


@dataclass
class SelectionConfig:
    # The final choice among the 2n candidates (Algorithm 1's output) is made once, so it can
    # afford far more start states than the AM-Q calls inside the loop. Measured on a 10k-step
    # mattress dataset (seed 0, 8 candidates whose returns in the simulator ranged 2.6-20.6):
    # with 256 starts the scores lay within 0.35 of each other and the worst was chosen; 2048
    # starts alone still chose a poor one in a new draw; with common random numbers in AM-Q
    # (ope.py) as well, 3 independent draws all chose the best. Not part of any cached stage.
    start_states: int = 2048
    # am_q (the paper: highest AM-Q) | closest_certified (selection.py: the smallest change that
    # AM-Q certifies as an improvement; lost to am_q on the field's candidate sets, BENCHMARKS §6.2)
    rule: str = "am_q"
    z: float = 2.0  # standard errors a paired AM-Q gain must clear to count as certified

    def __post_init__(self) -> None:
        check_ranges(self, {"start_states": ">=1", "z": ">=0"})
        _one_of(self, "rule", SELECTION_RULES)


@dataclass
class ImprovementConfig:
    steps: int = 10_000  # per policy
    lr: float = 1e-4  # Table 5, decays linearly to 0
    clip: float = 0.25  # offline clip ratio
    eval_every: int = 100  # C in Algorithm 1
    batch_size: int = 512
    grad_clip: float = 0.5
    normalize_advantage: bool = True
    # Eq. 25 (online -> offline -> online): KL disagreement added while improving an ensemble
    # initialised from one online policy (the only source of diversity there); 0 disables it.
    # Not used when the ensemble comes from behaviour cloning (Eq. 6 acts there instead).
    kl_alpha: float = 0.1

    def __post_init__(self) -> None:
        check_ranges(self, {"steps": ">=0", "lr": ">=0", "clip": "(0,1)", "eval_every": ">=1", "batch_size": ">=1",
                             "grad_clip": ">0", "kl_alpha": ">=0"})


@dataclass
class OnlineConfig:
    # The offline -> online budget and the paper's robot figure (~1e5); its simulated tasks ran 1e6
    # (Section 5, A.5.2): `--steps 1000000` for those.
    total_steps: int = 100_000
    rollout_steps: int = 2048
    minibatch_size: int = 128
    # Not in Table 5; the authors' code runs 30 epochs with entropy 0.01 (and clip 0.05, lrs 2e-5/2e-4): that set
    # was measured against this one in BENCHMARKS.md §2 (the ablation "The authors' code's fine-tuning settings").
    epochs: int = 10
    clip: float = 0.1  # Table 5 online clip ratio (the authors' code uses 0.05)
    gamma: float = 0.99
    gae_lambda: float = 0.95
    actor_lr: float = 3e-5  # Table 5 online learning rate, MuJoCo and quadruped
    critic_lr: float = 3e-4  # not in Table 5; 10x actor as in the authors' code ratio
    entropy_coef: float = 0.0  # the authors' code: 0.01 (see epochs)
    value_coef: float = 0.5
    grad_clip: float = 0.5
    lr_decay: bool = True
    normalize_advantage: bool = True
    reward_scale: float = 1.0
    normalize_reward: bool = False  # running return-std scaling; on for PPO from scratch only
    # True freezes state normalisation to the offline dataset statistics (paper and code);
    # False keeps a running estimate (PPO from scratch; or fine-tuning that may drift from them).
    fixed_state_norm: bool = True
    eval_every: int = 10_000
    eval_episodes: int = 5
    n_envs: int = 1
    # Environment steps at the start during which only the critic learns (the actor is frozen):
    # the offline V was fit to the dataset's behaviour, not to the policy being fine-tuned, and
    # advantages against it can push a good policy the wrong way before V catches up.
    critic_warmup_steps: int = 0
    # Stop the actor's epochs once the minibatch KL to the rollout's policy exceeds 1.5x this (the
    # critic keeps training). Not in the paper (None = off); bounds how far one update moves the mean.
    target_kl: float | None = None

    def __post_init__(self) -> None:
        # actor_lr = 0 is allowed on purpose: the frozen-actor control of BENCHMARKS §2.
        check_ranges(self, {"total_steps": ">=1", "rollout_steps": ">=1", "minibatch_size": ">=1", "epochs": ">=1",
                             "clip": "(0,1)", "gamma": "(0,1]", "gae_lambda": "[0,1]", "actor_lr": ">=0",
                             "critic_lr": ">=0", "entropy_coef": ">=0", "value_coef": ">=0", "grad_clip": ">0",
                             "reward_scale": ">0", "eval_every": ">=1", "eval_episodes": ">=1", "n_envs": ">=1",
                             "critic_warmup_steps": ">=0", "target_kl": ">0"})


@dataclass
class UniO4Config:
    env: str = "Hopper-v5"
    seed: int = 0
    device: str = "cpu"
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    bc: BCConfig = field(default_factory=BCConfig)
    value: ValueConfig = field(default_factory=ValueConfig)
    dynamics: DynamicsConfig = field(default_factory=DynamicsConfig)
    ope: OPEConfig = field(default_factory=OPEConfig)
    improvement: ImprovementConfig = field(default_factory=ImprovementConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    online: OnlineConfig = field(default_factory=OnlineConfig)

    def __post_init__(self) -> None:
        # numpy and Gymnasium refuse negative seeds, deep in a stage, and a seed past 64 bits overflowed there; 32
        # bits, as every --seed and the policy node take
        check_ranges(self, {"seed": "[0,4294967295]"})
        if self.device != "cpu":  # said at once, not ignored: nothing here moves a tensor to another device
            raise ConfigValueError("device", f"only 'cpu' is supported (every stage runs on the CPU), got "
                                   f"{self.device!r}")


def to_dict(cfg: Any) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def from_dict(cls: type, data: dict) -> Any:
    """Build a (nested) dataclass from a dict, rejecting unknown keys with a clear error."""
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        unknown_keys = sorted(map(str, unknown))  # str: a YAML file's keys may be numbers (1: a)
        raise ValueError(f"unknown config key(s) for {cls.__name__}: {unknown_keys}; known: {sorted(names)}")
    kwargs = {}
    for k, v in data.items():
        t = hints[k]
        if not dataclasses.is_dataclass(t):
            kwargs[k] = _coerce(v, t, k)
            continue
        if v is not None and not isinstance(v, dict):  # `--set online=5`, or `online: 5` in a YAML file
            raise ConfigValueError(k, f"is a section of settings, not one value: set its keys ({k}.KEY=VALUE, "
                                   f"or a mapping under {k}: in YAML), got {v!r}")
        try:
            kwargs[k] = from_dict(t, v or {})
        except ConfigValueError as exc:  # a nested section's key gains its section: clip -> online.clip
            raise ConfigValueError(f"{k}.{exc.key}", exc.problem) from None
    return cls(**kwargs)


def _coerce(value: Any, t: Any, key: str) -> Any:
    args = getattr(t, "__args__", ())
    if type(None) in args:  # `X | None`: null / "none" switch the setting off, anything else must be an X
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null", "")):
            return None
        return _coerce(value, next(a for a in args if a is not type(None)), key)
    origin = getattr(t, "__origin__", None)
    if origin is tuple:
        if isinstance(value, str):
            value = [x for x in value.replace("[", "").replace("]", "").split(",") if x.strip()]
        if not isinstance(value, (list, tuple)) or not value:
            raise ConfigValueError(key, f"expected a list such as [256, 256], got {value!r}")
        inner = t.__args__[0]
        if Ellipsis not in t.__args__ and len(value) != len(t.__args__):  # tuple[float, float]: a range, say
            raise ConfigValueError(key, f"expected {len(t.__args__)} values, got {value!r}")
        return tuple(_coerce(x, inner, key) for x in value)
    if t in (int, float) and isinstance(value, bool):  # YAML's true is not the number 1
        raise ConfigValueError(key, f"expected {t.__name__}, got {value!r}")
    if t is bool:
        if isinstance(value, str):
            # Avoid the authors' `type=bool` bug where the string "False" became True.
            low = value.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ConfigValueError(key, f"expected a boolean, got {value!r}")
        return bool(value)
    if t in (int, float, str):
        try:
            number = float(value) if t is int and isinstance(value, (str, float)) else None
            if number is not None and not number.is_integer():  # steps=1.5 is a typo, not 1 step
                raise ValueError
            return t(number) if number is not None else t(value)
        except (TypeError, ValueError, OverflowError) as exc:
            what = "a whole number" if t is int else t.__name__
            raise ConfigValueError(key, f"expected {what}, got {value!r}") from exc
    return value


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                base: list[str] | None = None) -> UniO4Config:
    """Defaults <- `base` overrides (a budget) <- YAML file <- `section.key=value` overrides."""
    return apply_overrides(UniO4Config(), path, overrides, base)


def apply_overrides(default: Any, path: str | Path | None = None, overrides: list[str] | None = None,
                    base: list[str] | None = None) -> Any:
    """Any config dataclass: `default` <- `base` overrides <- YAML file <- `section.key=value` overrides.
    `base` is what a named budget changes: a user's file must win over it, not the other way round."""
    data: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"config file {'is a folder' if p.is_dir() else 'not found'}: {p}")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ValueError(f"{p}: not valid YAML ({yaml_problem(exc)})") from None
        except UnicodeDecodeError:
            raise ValueError(f"{p}: not a YAML file (not text)") from None
        if not isinstance(loaded, dict):
            raise ValueError(f"{p}: top level must be a mapping")
        data = loaded
    cfg_dict = to_dict(default)
    _override(cfg_dict, base or [])
    _deep_update(cfg_dict, data)
    _override(cfg_dict, overrides or [])
    return from_dict(type(default), cfg_dict)


def _override(cfg_dict: dict, overrides: list[str]) -> None:
    for ov in overrides:
        if "=" not in ov:
            raise ValueError(f"override {ov!r} must look like section.key=value")
        key, value = ov.split("=", 1)
        node = cfg_dict
        parts = key.strip().split(".")
        for part in parts[:-1]:
            if part not in node or not isinstance(node[part], dict):
                raise ValueError(f"unknown config section {part!r} in override {ov!r}")
            node = node[part]
        if parts[-1] not in node:
            raise ValueError(f"unknown config key {key!r}")
        try:
            node[parts[-1]] = yaml.safe_load(value) if not isinstance(node[parts[-1]], str) else value
        except yaml.YAMLError as exc:
            raise ValueError(f"override {ov!r}: value is not valid YAML ({yaml_problem(exc)})") from None


def yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's messages span several lines with a caret drawing; keep the problem and its position."""
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{getattr(exc, 'problem', None) or type(exc).__name__}{where}"


def _deep_update(dst: dict, src: dict) -> None:
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _deep_update(dst[k], v)
        else:
            dst[k] = v


def config_hash(*parts: Any) -> str:
    """Stable short hash of config sections (and dataset digests) keying cached stages."""
    blob = json.dumps([to_dict(p) if dataclasses.is_dataclass(p) else p for p in parts], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
