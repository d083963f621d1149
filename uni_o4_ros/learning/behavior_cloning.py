"""Ensemble behaviour cloning with disagreement regularisation (Section 3.1, Eq. 6 and Eq. 25).

Eq. 6 maximises, for every member i,
    E_D[log pi_i(a|s)] + alpha * E_D[log pi_i(a|s) - log max_j pi_j(a|s)].
The authors' code detaches the max, which turns the second term into alpha * log pi_i: a mere
rescaling of the BC loss. Here the members are trained jointly as one batched network and the
gradient flows through both pi_i and the max, so the term redistributes probability between
members. Eq. 25 (online -> offline, ensemble initialised from one online policy) uses the KL
form KL(pi_i || max_j pi_j / Z) estimated with reparameterised samples; log Z is estimated by
importance sampling from the uniform mixture of members.

Measured on a bimodal dataset (test/test_learning_core.py, the bimodal tests): the literal Eq. 6 term, sampled on
dataset actions, pulls members towards each other (the member with the highest density at a
sample is pushed down there, the others up), so it does not by itself spread Gaussian members
over two action modes. `form="envelope"` flips the sign, which turns the term into the
likelihood of the members' max-envelope (a hard-EM mixture fit): with alpha = 1 the members
split over the modes. The default stays the paper's Eq. 6.

Why no form splits the modes at the paper's alpha = 0.1: with the envelope the per-sample weight
of member i is (1 - alpha) + alpha * n where it is the max and (1 - alpha) elsewhere, so a
Gaussian member settles on a weighted mean of the data. On modes +-0.6 with masses 0.7 / 0.3 and
n = 4, the member owning the minor mode sits at 0.6 (0.7 * 0.9 - 0.3 * 1.3) / (0.7 * 0.9 + 0.3 * 1.3)
= 0.14 and the major one at 0.33 (measured: 0.11 and 0.31); reaching within 0.1 of -0.6 needs
alpha >= 0.86. Eq. 6's own sign moves members towards each other at every alpha.
"""

from __future__ import annotations

import math

import torch

from .policy import GaussianPolicyEnsemble


def eq6_disagreement(log_probs: torch.Tensor) -> torch.Tensor:
    """log pi_i(a|s) - log max_j pi_j(a|s) per member and sample: (n, B) -> (n, B), <= 0."""
    return log_probs - log_probs.max(dim=0, keepdim=True).values


def kl_disagreement(policy: GaussianPolicyEnsemble, obs: torch.Tensor, n_samples: int = 4) -> torch.Tensor:
    """Monte-Carlo KL(pi_i || max_j pi_j / Z) per member and state: (n, B)."""
    mean, log_std = policy(obs)  # (n, B, A)
    n = mean.shape[0]
    eps = torch.randn((n_samples, *mean.shape), device=mean.device)
    samples = mean + eps * log_std.exp()  # (K, n_i, B, A): K samples from each member i
    flat = samples.reshape(n_samples * n, *mean.shape[1:])
    # log pi_j(sample) for every member j: (K*n_i, n_j, B)
    cross = policy.gaussian_log_prob(mean.unsqueeze(0), log_std.unsqueeze(0), flat.unsqueeze(1))
    log_max = cross.max(dim=1).values  # (K*n_i, B)
    log_mix = torch.logsumexp(cross, dim=1) - math.log(n)
    # Z(s) = E_{a ~ mixture}[max_j pi_j(a) / mixture(a)]; samples from all members together are
    # exactly mixture samples.
    log_z = torch.logsumexp(log_max - log_mix, dim=0) - math.log(n_samples * n)  # (B,)
    own = cross.reshape(n_samples, n, n, -1).diagonal(dim1=1, dim2=2)  # (K, B, n_i)
    own = own.permute(0, 2, 1)  # (K, n_i, B)
    log_max_i = log_max.reshape(n_samples, n, -1)
    return (own - log_max_i).mean(0) + log_z.unsqueeze(0)


def ensemble_bc_loss(
    policy: GaussianPolicyEnsemble,
    obs: torch.Tensor,
    act: torch.Tensor,
    alpha: float,
    form: str = "eq6",
) -> tuple[torch.Tensor, dict[str, float]]:
    """Negated Eq. 6 (or Eq. 25 when form == "kl") summed over members, mean over the batch."""
    log_probs = policy.log_prob(obs, act)  # (n, B)
    bc = log_probs.mean(1)
    if alpha == 0.0 or policy.n == 1:
        dis = torch.zeros_like(bc)
    elif form == "eq6":
        dis = eq6_disagreement(log_probs).mean(1)
    elif form == "envelope":
        # Opposite sign: rewards the ensemble's max-envelope for covering the data.
        dis = -eq6_disagreement(log_probs).mean(1)
    elif form == "kl":
        dis = kl_disagreement(policy, obs).mean(1)
    else:
        raise ValueError(f"unknown disagreement form {form!r} (eq6 | envelope | kl)")
    loss = -(bc + alpha * dis).sum()
    return loss, {"bc_log_prob": float(bc.detach().mean()), "disagreement": float(dis.detach().mean())}
