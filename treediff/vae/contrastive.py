"""The contrastive routing term on two augmented views (reference notes, section 1.5).

A training batch holds 2B samples: B images in a first view, then the same B images in a second
view (x = [x'; x'']). Sample k and sample k + B are a positive pair; every other sample of the
batch is a negative. With cosine similarities s_kj of L2-normalised vectors u and temperature tau,
NT-Xent is, per sample,

    l_k = -log( exp(s_k,pos / tau) / sum_{j != k} exp(s_kj / tau) )          (the positive included)

Two uses, summed and weighted by model.contrastive_weight (100 in the reference's colour configs):

  routing   at every internal node i: u = normalise([q_i, 1 - q_i]) with q_i = P(left at i | x), tau 1;
            the 2B per-sample losses are averaged with weights P(i | x), detached.
  instance  at the root only (when the whole tree trains): u = a 10-d projection of each bottom-up
            level d_0 .. d_L (blocks.Projection), tau 0.5; the mean over samples, averaged over levels.

It is added in training phases only; a subtree phase applies the routing part at the subtree's
own routers (the reference's small tree has no instance part).
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

ROUTING_TEMPERATURE = 1.0
INSTANCE_TEMPERATURE = 0.5


def nt_xent(u: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-sample NT-Xent of 2B vectors u (2B, D) whose halves are positive pairs -> (2B,)."""
    n = u.shape[0]
    if n % 2 or n < 4:
        raise ValueError(f"the contrastive term needs an even batch of at least 2 image pairs, got {n} samples")
    u = F.normalize(u, dim=1)
    sim = u @ u.t() / temperature  # (2B, 2B)
    self_mask = torch.eye(n, dtype=torch.bool, device=u.device)
    positive = torch.roll(torch.arange(n, device=u.device), n // 2)  # k <-> k + B
    log_denominator = torch.logsumexp(sim.masked_fill(self_mask, float("-inf")), dim=1)
    return log_denominator - sim[torch.arange(n, device=u.device), positive]


def routing_term(q_left: torch.Tensor, reach: torch.Tensor) -> torch.Tensor:
    """NT-Xent on the routing vectors [q, 1 - q] of one node, weighted by P(node | x) (detached)."""
    w = reach.detach()
    losses = nt_xent(torch.stack([q_left, 1.0 - q_left], 1), ROUTING_TEMPERATURE)
    return (w * losses).sum() / w.sum().clamp_min(1e-12)


def instance_term(embeddings: list[torch.Tensor]) -> torch.Tensor:
    """Instance-wise NT-Xent on the projections of the bottom-up levels, averaged over levels."""
    return torch.stack([nt_xent(e, INSTANCE_TEMPERATURE).mean() for e in embeddings]).mean()


def pair_views(x: torch.Tensor) -> torch.Tensor:
    """(B, 2, C, H, W) from the stream -> (2B, C, H, W): all first views, then all second views."""
    if x.dim() != 5 or x.shape[1] != 2:
        raise ValueError(f"the contrastive term needs two views per image, (B, 2, C, H, W); got {tuple(x.shape)}")
    return x.transpose(0, 1).reshape(-1, *x.shape[2:])


__all__ = ["nt_xent", "routing_term", "instance_term", "pair_views"]
