"""Classifier-free guidance (Ho & Salimans 2022).

One network provides a conditional prediction ``eps(x_t, t, c)`` and an unconditional one
``eps(x_t, t, null)`` (the condition dropped, as during training with drop probability
``cfg_drop``). The guided prediction is

    eps_guided = eps_uncond + w * (eps_cond - eps_uncond)

so ``w = 0`` is unconditional, ``w = 1`` is plain conditional sampling and ``w > 1``
extrapolates away from the unconditional prediction (stronger guidance).

Convention note: the reference code (DiffuseVAE / TreeDiffusion, notes §3.1) writes
``(1 + w_ref) * eps_cond - w_ref * eps_uncond``; that equals ours with ``w = w_ref + 1``.
The reference's default ``guidance_weight = 0`` therefore corresponds to our ``w = 1``.
"""
from __future__ import annotations

from typing import Callable

import torch

__all__ = ["guided_eps", "guided_eps_fn", "reference_to_ours"]


def guided_eps(eps_cond: torch.Tensor, eps_uncond: torch.Tensor, w: float) -> torch.Tensor:
    """``eps_uncond + w * (eps_cond - eps_uncond)``."""
    if w == 1:
        return eps_cond
    if w == 0:
        return eps_uncond
    return eps_uncond + w * (eps_cond - eps_uncond)


def reference_to_ours(w_ref: float) -> float:
    """Convert the reference's guidance weight ``(1 + w) eps_c - w eps_u`` to ours."""
    return w_ref + 1.0


def guided_eps_fn(
    eps_cond_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    eps_uncond_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    w: float,
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Wrap two ``eps_fn(x_t, t)`` callables into one guided ``eps_fn`` for the samplers.

    Only the needed branch is evaluated when ``w`` is exactly 0 or 1.
    """

    def eps_fn(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if w == 1:
            return eps_cond_fn(x_t, t)
        if w == 0:
            return eps_uncond_fn(x_t, t)
        return guided_eps(eps_cond_fn(x_t, t), eps_uncond_fn(x_t, t), w)

    return eps_fn
