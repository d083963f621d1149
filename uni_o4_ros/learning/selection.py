"""The final choice among the offline candidates (the output of Algorithm 1).

Candidates are the policies the improvement started from (`initial`), the accepted behaviour
policies and the final targets, all scored by AM-Q on the same start states and model draws.

Two rules:
- `am_q` (the paper): the highest AM-Q.
- `closest_certified`: among candidates whose AM-Q beats their own starting policy with
  confidence (paired per-start gains, mean - z * standard error > 0), the one that moved least
  from it (mean KL on dataset states); the starting policy itself if none is certified.
  Why: AM-Q's error grows with the distance from the data its Q and model were fitted on, and
  the improvement pushes exactly along Q's errors. On one mattress recording (BENCHMARKS §6.2)
  AM-Q ranked first the member that moved furthest, which falls at 1.0 m/s in the simulator (on
  both draws, and with an independently trained Q); the closest certified one walks. On another
  recording AM-Q's pick was the better one. Offline improvement bounds (BPPO, Uni-O4 Sec. 3)
  likewise hold only while the policy stays near the behaviour policy.
  Measured since on 14 candidate sets (BENCHMARKS §6.2): worse than `am_q` at 1.0 m/s in 10,
  better in 4. Kept as an option; no budget uses it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

RULES = ("am_q", "closest_certified")


def gaussian_kl(mean_p: torch.Tensor, log_std_p: torch.Tensor, mean_q: torch.Tensor,
                log_std_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) of diagonal Gaussians, summed over the last (action) dimension."""
    var_ratio = (2 * (log_std_p - log_std_q)).exp()
    mahal = ((mean_p - mean_q) / log_std_q.exp()).pow(2)
    return 0.5 * (var_ratio + mahal - 1.0 - 2 * (log_std_p - log_std_q)).sum(-1)


@dataclass
class Choice:
    index: int  # into the candidate rows
    rule: str
    scores: list[float]  # AM-Q per candidate
    gain: list[float]  # mean paired AM-Q gain over the candidate's starting policy
    gain_se: list[float]  # its standard error
    certified: list[bool]
    kl: list[float]  # mean KL(start || candidate) on dataset states

    def to_dict(self) -> dict:
        return asdict(self)


def choose(per_start: torch.Tensor, start_row: list[int], kl: torch.Tensor, rule: str, z: float = 2.0) -> Choice:
    """Pick a candidate. `per_start` (m, S) AM-Q per candidate and start state; `start_row[k]` is
    the row of candidate k's starting policy (itself for a starting policy); `kl` (m,)."""
    if rule not in RULES:
        raise ValueError(f"selection rule must be one of {', '.join(RULES)}, got {rule!r}")
    m, s = per_start.shape
    scores = per_start.mean(1)
    diff = per_start - per_start[torch.as_tensor(start_row)]
    gain = diff.mean(1)
    se = diff.std(1) / math.sqrt(max(1, s - 1)) if s > 1 else torch.zeros(m)
    is_start = torch.as_tensor([start_row[k] == k for k in range(m)])
    certified = (gain - z * se > 0) & ~is_start
    if not bool(torch.isfinite(scores).any()):
        raise ValueError("no candidate has a finite AM-Q score (diverged Q or dynamics model)")
    # torch.argmax ranks NaN above every number: a diverged candidate must never win.
    ranked = torch.nan_to_num(scores, nan=-math.inf, posinf=-math.inf)
    if rule == "am_q":
        index = int(torch.argmax(ranked))
    elif bool(certified.any()):
        index = int(torch.where(certified, kl, torch.full_like(kl, math.inf)).argmin())
    else:
        index = int(torch.where(is_start, ranked, torch.full_like(scores, -math.inf)).argmax())
    return Choice(index, rule, scores.tolist(), gain.tolist(), se.tolist(), certified.tolist(), kl.tolist())
