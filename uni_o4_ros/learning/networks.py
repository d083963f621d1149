"""Batched ensemble networks.

Every ensemble in Uni-O4 (the n behaviour-cloned policies, the n policies improved in parallel,
the 7 dynamics members, the two Q heads) is one set of stacked weight tensors evaluated with a
single batched matmul, so adding members costs far less than a Python loop over modules.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "swish": nn.SiLU,
}


class EnsembleLinear(nn.Module):
    """`n` independent affine maps applied to an input of shape (n, batch, in) or (batch, in)."""

    def __init__(self, n: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.n, self.in_features, self.out_features = n, in_features, out_features
        self.weight = nn.Parameter(torch.empty(n, in_features, out_features))
        self.bias = nn.Parameter(torch.zeros(n, 1, out_features))
        self.reset_parameters()

    def reset_parameters(self, gain: float = math.sqrt(2.0)) -> None:
        # Orthogonal per member (as in PPO practice); each member gets its own draw, which is
        # what makes the ensemble members differ before any diversity term acts.
        for w in self.weight.data:
            nn.init.orthogonal_(w.T, gain=gain)
        nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(self.n, -1, -1)
        return torch.baddbmm(self.bias, x, self.weight)

    def extra_repr(self) -> str:
        return f"n={self.n}, in={self.in_features}, out={self.out_features}"


class EnsembleMLP(nn.Module):
    """Stack of EnsembleLinear layers with one activation between them."""

    def __init__(
        self,
        n: int,
        in_dim: int,
        out_dim: int,
        hidden: Sequence[int],
        activation: str = "relu",
        out_gain: float = 1.0,
        layer_norm: bool = False,
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose from {sorted(ACTIVATIONS)}")
        dims = [in_dim, *hidden]
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            layers.append(EnsembleLinear(n, a, b))
            if layer_norm:
                # No affine part: its weights would be shared by the members, and what bounds the
                # output off the data is the normalisation itself (features of norm sqrt(width)).
                layers.append(nn.LayerNorm(b, elementwise_affine=False))
            layers.append(ACTIVATIONS[activation]())
        last = EnsembleLinear(n, dims[-1], out_dim)
        last.reset_parameters(gain=out_gain)
        layers.append(last)
        self.net = nn.Sequential(*layers)
        self.n = n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def forward_member(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Member i alone on x (batch, in) -> (batch, out), at 1/n of the ensemble's cost."""
        for layer in self.net:
            x = torch.addmm(layer.bias[i], x, layer.weight[i]) if isinstance(layer, EnsembleLinear) else layer(x)
        return x


def _n_of(module: nn.Module) -> int:
    n = getattr(module, "n", None)
    if n is None:
        raise TypeError(f"{type(module).__name__} is not an ensemble module")
    return int(n)


def copy_member(dst: nn.Module, dst_index: int, src: nn.Module, src_index: int) -> None:
    """Copy one member's weights from `src` into slot `dst_index` of `dst` (same architecture)."""
    src_sd = src.state_dict()
    with torch.no_grad():
        for name, t in dst.state_dict().items():
            if t.dim() >= 1 and t.shape[0] == _n_of(dst):
                t[dst_index].copy_(src_sd[name][src_index])


def same_member(a: nn.Module, a_index: int, b: nn.Module, b_index: int) -> bool:
    """True when member `a_index` of `a` and member `b_index` of `b` have identical weights."""
    a_sd, b_sd, n_a, n_b = a.state_dict(), b.state_dict(), _n_of(a), _n_of(b)
    if a_sd.keys() != b_sd.keys():
        return False
    for name, t in a_sd.items():
        u = b_sd[name]
        per_member = t.dim() >= 1 and t.shape[0] == n_a and u.dim() >= 1 and u.shape[0] == n_b
        x, y = (t[a_index], u[b_index]) if per_member else (t, u)
        if x.shape != y.shape or not torch.equal(x, y):
            return False
    return True


def clip_grad_norm_per_member(module: nn.Module, max_norm: float) -> torch.Tensor:
    """Clip each member's gradient norm separately, so one member's large step never shrinks
    another's (a global clip would couple members that are meant to be independent)."""
    n = _n_of(module)
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return torch.zeros(n)
    sq = torch.zeros(n, device=grads[0].device)
    for g in grads:
        sq += g.reshape(n, -1).pow(2).sum(1)
    norms = sq.sqrt()
    scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(scale.view(n, *([1] * (g.dim() - 1))))
    return norms
