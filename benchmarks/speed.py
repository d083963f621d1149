"""Gradient steps per second of each Uni-O4 stage on this machine, and the batched-ensemble
speedup against a Python loop over separate member networks (same maths, same batch).

    python benchmarks/speed.py --threads 2 --out benchmarks/results/speed.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from uni_o4_ros.learning.behavior_cloning import ensemble_bc_loss  # noqa: E402
from uni_o4_ros.learning.config import ValueConfig  # noqa: E402
from uni_o4_ros.learning.dynamics import GaussianEnsembleModel, _nll, soft_bound_logvar  # noqa: E402
from uni_o4_ros.learning.improvement import MultiStepImprover  # noqa: E402
from uni_o4_ros.learning.normalizer import StateNormalizer  # noqa: E402
from uni_o4_ros.learning.ope import am_q  # noqa: E402
from uni_o4_ros.learning.policy import GaussianPolicyEnsemble, PolicySpec, bounded_log_std, make_policy  # noqa: E402
from uni_o4_ros.learning.value import IQLCritic  # noqa: E402

OBS, ACT = 11, 3  # Hopper
BC_HIDDEN = (256, 256, 256)  # Table 5 policy widths: the batched ensemble, the loop and the FLOP count


def bc_step_flops(n: int, hidden: tuple[int, ...], batch: int) -> float:
    """Floating-point operations of one BC gradient step: 2 per multiply-add forward, twice that
    backward (input and weight gradients), so 6 per weight and sample; biases and Adam are noise."""
    dims = [OBS, *hidden, 2 * ACT]
    return 6.0 * n * batch * sum(a * b for a, b in zip(dims[:-1], dims[1:]))


def rate(fn, seconds: float = 3.0, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    return n / (time.perf_counter() - t0)


class LoopPolicy(nn.Module):
    """The same Gaussian MLP members as separate nn.Sequential modules, evaluated one by one."""

    def __init__(self, n: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        dims = [OBS, *hidden]
        self.members = nn.ModuleList(
            nn.Sequential(*[m for a, b in zip(dims[:-1], dims[1:]) for m in (nn.Linear(a, b), nn.ReLU())],
                          nn.Linear(dims[-1], 2 * ACT)) for _ in range(n))

    def loss(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        total = 0.0
        for m in self.members:
            mean, pre = m(obs).chunk(2, -1)
            log_std = bounded_log_std(pre, PolicySpec.log_std_min, PolicySpec.log_std_max)
            total = total - GaussianPolicyEnsemble.gaussian_log_prob(torch.tanh(mean), log_std, act).mean()
        return total


class LoopDynamics(nn.Module):
    """The dynamics members as separate Swish MLPs with the same log-variance bounds and NLL."""

    def __init__(self, n: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        dims, out = [OBS + ACT, *hidden], OBS + 1
        self.members = nn.ModuleList(
            nn.Sequential(*[m for a, b in zip(dims[:-1], dims[1:]) for m in (nn.Linear(a, b), nn.SiLU())],
                          nn.Linear(dims[-1], 2 * out)) for _ in range(n))
        self.max_logvar = nn.Parameter(torch.full((1, out), 0.5))
        self.min_logvar = nn.Parameter(torch.full((1, out), -10.0))

    def loss(self, obs: torch.Tensor, act: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = 0.0
        for i, m in enumerate(self.members):
            mean, logvar = m(torch.cat([obs[i], act[i]], -1)).chunk(2, -1)
            logvar = soft_bound_logvar(logvar, self.min_logvar, self.max_logvar)
            total = total + _nll(mean[None], logvar[None], target[i][None]).sum()
        return total


def adam_step(loss_fn: Callable[[], torch.Tensor], params: Iterable[nn.Parameter]) -> Callable[[], None]:
    """One Adam step on loss_fn() per call: the unit every steps-per-second figure counts."""
    opt = torch.optim.Adam(params, 1e-4)

    def step():
        loss = loss_fn()
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--out")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    b = 512
    obs, act = torch.randn(b, OBS), torch.rand(b, ACT) * 2 - 1
    rew, done = torch.randn(b), torch.zeros(b)
    res: dict[str, float] = {}

    for q_hidden in ((1024, 1024), (256, 256)):
        critic = IQLCritic.from_config(ValueConfig(q_hidden=q_hidden), OBS, ACT)  # Table 5 otherwise
        res[f"iql_value_q{q_hidden[0]}_steps_per_s"] = rate(lambda c=critic: c.update(obs, act, rew, obs, done),
                                                             args.seconds)

    for n in (1, 4):
        pol = make_policy(OBS, ACT, n=n, hidden=BC_HIDDEN)
        res[f"ensemble_bc_n{n}_steps_per_s"] = rate(
            adam_step(lambda p=pol: ensemble_bc_loss(p, obs, act, 0.1)[0], pol.parameters()), args.seconds)
    loop = LoopPolicy(4, BC_HIDDEN)
    res["loop_bc_n4_steps_per_s"] = rate(adam_step(lambda: loop.loss(obs, act), loop.parameters()), args.seconds)
    res["batched_vs_loop_speedup_n4"] = res["ensemble_bc_n4_steps_per_s"] / res["loop_bc_n4_steps_per_s"]

    # The same comparison at smaller batches, where the loop's per-operation overhead weighs more
    # against its arithmetic (Table 5's BC batch is 512, above).
    for bs in (64, 128, 256):
        o, a = obs[:bs], act[:bs]
        pol = make_policy(OBS, ACT, n=4, hidden=BC_HIDDEN)
        batched = rate(adam_step(lambda p=pol, o=o, a=a: ensemble_bc_loss(p, o, a, 0.1)[0], pol.parameters()),
                       args.seconds)
        lp = LoopPolicy(4, BC_HIDDEN)
        looped = rate(adam_step(lambda m=lp, o=o, a=a: m.loss(o, a), lp.parameters()), args.seconds)
        res[f"batched_vs_loop_speedup_n4_batch{bs}"] = batched / looped

    # Where the time goes, layer by layer: forward and backward of one BC layer for all 4 members,
    # one batched product against a loop of nn.Linear (the input needs no gradient, as in BC).
    for fan_in, fan_out in ((OBS, 256), (256, 256), (256, 2 * ACT)):
        x = torch.randn(4, b, fan_in, requires_grad=fan_in != OBS)
        w = torch.randn(4, fan_in, fan_out, requires_grad=True)
        bias = torch.zeros(4, 1, fan_out, requires_grad=True)
        g = torch.randn(4, b, fan_out)
        linears = [nn.Linear(fan_in, fan_out) for _ in range(4)]
        xs = [x[i].detach().requires_grad_(fan_in != OBS) for i in range(4)]
        res[f"layer_{fan_in}x{fan_out}_batched_ms"] = 1e3 / rate(
            lambda x=x, w=w, bias=bias, g=g: torch.baddbmm(bias, x, w).backward(g), args.seconds)
        res[f"layer_{fan_in}x{fan_out}_loop_ms"] = 1e3 / rate(
            lambda ls=linears, xs=xs, g=g: [lin(xi).backward(g[i]) for i, (lin, xi) in enumerate(zip(ls, xs))],
            args.seconds)

    # How much batching could gain at most: the loop's arithmetic rate against the rate of one
    # batched matmul of the members' widest layer, the best a fully batched step could sustain.
    flops = bc_step_flops(4, BC_HIDDEN, b)
    x4, w4 = torch.randn(4, b, 256), torch.randn(4, 256, 256)
    res["bmm_4x512x256x256_gflops"] = rate(lambda: torch.bmm(x4, w4), args.seconds) * 2 * x4.numel() * 256 / 1e9
    res["ensemble_bc_n4_gflops"] = res["ensemble_bc_n4_steps_per_s"] * flops / 1e9
    res["loop_bc_n4_gflops"] = res["loop_bc_n4_steps_per_s"] * flops / 1e9
    res["batched_vs_loop_speedup_bound_n4"] = res["bmm_4x512x256x256_gflops"] / res["loop_bc_n4_gflops"]

    model = GaussianEnsembleModel(7, OBS, ACT, (200, 200, 200, 200), n_elites=5)
    target = torch.randn(7, 256, OBS + 1)
    mo, ma = torch.randn(7, 256, OBS), torch.randn(7, 256, ACT)
    res["dynamics_n7_steps_per_s"] = rate(
        adam_step(lambda: _nll(*model(mo, ma), target).sum(), model.parameters()), args.seconds)
    loop_dyn = LoopDynamics(7, (200, 200, 200, 200))
    res["loop_dynamics_n7_steps_per_s"] = rate(
        adam_step(lambda: loop_dyn.loss(mo, ma, target), loop_dyn.parameters()), args.seconds)
    res["batched_vs_loop_speedup_dynamics_n7"] = res["dynamics_n7_steps_per_s"] / res["loop_dynamics_n7_steps_per_s"]

    critic = IQLCritic.from_config(ValueConfig(), OBS, ACT)
    imp = MultiStepImprover(make_policy(OBS, ACT, n=4), critic, lr=1e-4, clip=0.25, total_steps=10_000,
                            grad_clip=0.5)
    res["improvement_n4_steps_per_s"] = rate(lambda: imp.update(obs), args.seconds)
    norm = StateNormalizer.identity(OBS)
    starts = torch.randn(512, OBS) * 0.1 + torch.tensor([1.25] + [0.0] * (OBS - 1))
    t0 = time.perf_counter()
    am_q([imp.target, imp.behavior], critic.q, model, lambda s: torch.zeros(len(s), dtype=torch.bool), norm,
         starts, horizon=20)
    res["am_q_8_policies_512_starts_per_model_step_ms"] = (time.perf_counter() - t0) / 20 * 1000
    res["threads"] = args.threads
    res["cpu"] = platform.processor() or platform.machine()
    print(json.dumps(res, indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
