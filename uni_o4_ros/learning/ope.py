"""AM-Q offline policy evaluation (Definition 1): J(pi) = E[sum_{t<H} Q(s_t, a_t)] along model rollouts.

Rollouts start from dataset states, use each policy's deterministic (mean) action, and advance
with the learned dynamics ensemble. A rollout stops contributing once the termination rule
fires. All policies of an ensemble, and all start states, are evaluated as one batch with the
same start states and the same model noise, so comparisons between policies are paired.
"""

from __future__ import annotations

from typing import Any

import torch

from .dynamics import GaussianEnsembleModel
from .networks import copy_member, same_member
from .normalizer import StateNormalizer
from .policy import GaussianPolicyEnsemble
from .termination import TerminationFn
from .value import DoubleQ


def am_q(*args: Any, **kwargs: Any) -> torch.Tensor:
    """AM-Q of every member of every ensemble: `am_q_per_start` (same arguments) averaged over
    the start states, shape (sum of members,)."""
    return am_q_per_start(*args, **kwargs).mean(1)


@torch.no_grad()
def am_q_per_start(
    policies: list[GaussianPolicyEnsemble],
    q: DoubleQ,
    model: GaussianEnsembleModel,
    termination: TerminationFn,
    normalizer: StateNormalizer,
    start_states: torch.Tensor,
    horizon: int,
    gamma: float = 1.0,
    generator: torch.Generator | None = None,
    state_bounds: tuple[torch.Tensor, torch.Tensor] | None = None,
    q_head: int | None = None,
    trace: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Each member's return estimate from each start state: (sum of members, S).

    `start_states` are raw (unnormalised) states (S, obs); AM-Q is the mean over starts, and
    because every member sees the same starts and model draws, per-start differences between
    members are paired samples (their spread gives the standard error of a comparison).
    `state_bounds` (low, high), e.g. the dataset's range, keep model states where Q was trained:
    a model fitted on little data can otherwise drift to states where Q extrapolates without
    bound (seen: AM-Q of 1e14 from 200 robot transitions). `q_head` scores with that Q head
    alone instead of the min of both (config `ope.q_head`). A `trace` dict receives, per member and
    start (same shape as the result), `live_steps` (steps before the termination rule fired) and
    `clamped_steps` (model steps that left `state_bounds`): what a score is made of.
    """
    policies, rows = _distinct_members(policies)
    m, s = sum(p.n for p in policies), start_states.shape[0]
    state = start_states.unsqueeze(0).expand(m, -1, -1).reshape(m * s, -1).clone()
    total = torch.zeros(m * s, device=state.device)
    alive = torch.ones(m * s, dtype=torch.bool, device=state.device)
    live = torch.zeros(m * s, device=state.device)
    clamped = torch.zeros(m * s, device=state.device)
    discount = 1.0
    for _ in range(horizon):
        idx = alive.nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        # Policies are small: run every member on its own (m, S) block in one batched call,
        # then spend the expensive Q and model evaluations on live rollouts only.
        blocks, offset = [], 0
        grid = normalizer(state).view(m, s, -1)
        for p in policies:
            mean, _ = p(grid[offset : offset + p.n])
            blocks.append(p.executed(mean))
            offset += p.n
        act = torch.cat(blocks, 0).reshape(m * s, -1)[idx]
        cur = state[idx]
        total[idx] += discount * q.head_or_min(normalizer(cur), act, q_head)
        live[idx] += 1
        # Common random numbers: rollout j of every policy sees the same model noise and elite
        # draws, so score differences between policies come from the policies, not from the draws.
        slot = idx % s
        noise = torch.randn((model.n, s, cur.shape[1] + 1), generator=generator, device=cur.device)[:, slot]
        elite = torch.randint(len(model.elites), (s,), generator=generator, device=cur.device)[slot]
        nxt, _ = model.step(cur, act, noise=noise, elite_draw=elite)
        if state_bounds is not None:
            inside = torch.maximum(torch.minimum(nxt, state_bounds[1]), state_bounds[0])
            clamped[idx] += (inside != nxt).any(1).float()
            nxt = inside
        done = termination(nxt)
        state[idx] = torch.where(torch.isfinite(nxt), nxt, cur)
        # A rollout that terminates keeps the Q it summed so far and adds nothing after: the value of an absorbing
        # state is 0, as IQL's backup takes it. (The authors' code averages Q over the (state, step) pairs that
        # survived, so a rollout's steps after its end count for nothing there either, but a short rollout weighs
        # as much per step as a long one; the paper says nothing of it.)
        alive[idx[done]] = False
        discount *= gamma
    total = total.view(m, s)
    if trace is not None:
        for name, t in (("live_steps", live), ("clamped_steps", clamped)):
            trace[name] = t.view(m, s) if rows is None else t.view(m, s)[rows]
    return total if rows is None else total[rows]


def _distinct_members(
    policies: list[GaussianPolicyEnsemble],
) -> tuple[list[GaussianPolicyEnsemble], torch.Tensor | None]:
    """One ensemble of the distinct members, and for every original member its row in it.

    The final choice scores the starting members (often n copies of one online policy) and the
    final targets (equal to their behaviours when accepted at the last evaluation): each copy
    would cost a full set of rollouts for the same score. Noise and elite draws depend only on
    the start index, so a member's score does not depend on which others are in the batch.
    (policies, None) when every member is distinct or the architectures differ."""
    if not all(isinstance(p, GaussianPolicyEnsemble) for p in policies) or any(
            p.spec != policies[0].spec for p in policies):
        return policies, None
    distinct: list[tuple[GaussianPolicyEnsemble, int]] = []
    rows = []
    for p in policies:
        for i in range(p.n):
            j = next((j for j, (q, k) in enumerate(distinct) if same_member(p, i, q, k)), None)
            if j is None:
                j = len(distinct)
                distinct.append((p, i))
            rows.append(j)
    if len(distinct) == len(rows):
        return policies, None
    pool = GaussianPolicyEnsemble(policies[0].spec, len(distinct))
    for j, (p, i) in enumerate(distinct):
        copy_member(pool, j, p, i)
    return [pool], torch.tensor(rows)
