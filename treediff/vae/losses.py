"""The ELBO's pieces: posterior merge, KL terms, reconstruction likelihoods, KL annealing.

All per-sample quantities have shape (B,); sums run over C x R x R latent elements or over
pixels, as in the reference (distributions are Independent over all non-batch dims).
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

EPS = 1e-7


def precision_merge(mu_hat: torch.Tensor, var_hat: torch.Tensor, mu_p: torch.Tensor, var_p: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Ladder-VAE posterior: the precision-weighted product of the bottom-up and prior Gaussians.

    var_q = 1 / (1/var_hat + 1/var_p),  mu_q = var_q * (mu_hat/var_hat + mu_p/var_p)
    """
    prec_hat = 1.0 / (var_hat + EPS)
    prec_p = 1.0 / (var_p + EPS)
    var_q = 1.0 / (prec_hat + prec_p)
    mu_q = var_q * (mu_hat * prec_hat + mu_p * prec_p)
    return mu_q, var_q


def kl_normal(mu_q: torch.Tensor, var_q: torch.Tensor, mu_p: torch.Tensor, var_p: torch.Tensor) -> torch.Tensor:
    """KL(N(mu_q, var_q) || N(mu_p, var_p)) summed over all non-batch dims -> (B,)."""
    var_q = var_q + EPS
    var_p = var_p + EPS
    kl = 0.5 * (torch.log(var_p) - torch.log(var_q) + (var_q + (mu_q - mu_p) ** 2) / var_p - 1.0)
    return kl.flatten(1).sum(1)


def kl_bernoulli(logit_q: torch.Tensor, logit_p: torch.Tensor) -> torch.Tensor:
    """KL(Bern(q) || Bern(p)) from logits, computed in log space (stable) -> (B,)."""
    q = torch.sigmoid(logit_q)
    log_q, log_1mq = F.logsigmoid(logit_q), F.logsigmoid(-logit_q)
    log_p, log_1mp = F.logsigmoid(logit_p), F.logsigmoid(-logit_p)
    return q * (log_q - log_p) + (1 - q) * (log_1mq - log_1mp)


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] -> [0, 1] (the Bernoulli targets, and the encoder's input with encoder_input=unit)."""
    return (x + 1.0) / 2.0


def reconstruction_nll(x: torch.Tensor, out: torch.Tensor, likelihood: str) -> torch.Tensor:
    """Negative log-likelihood summed over pixels -> (B,). x is in [-1, 1].

    bernoulli: `out` are logits, targets (x + 1) / 2 in [0, 1] (BCE, as the reference on [0, 1]).
    gaussian: `out` is the image in [-1, 1] units; squared error measured in [0, 1] units,
    i.e. sum(((x - out) / 2)^2), the reference's SSE scale.
    """
    if likelihood == "bernoulli":
        return F.binary_cross_entropy_with_logits(out, to_unit(x), reduction="none").flatten(1).sum(1)
    if likelihood == "gaussian":
        return (((x - out) / 2.0) ** 2).flatten(1).sum(1)
    raise ValueError(f"model.likelihood: unknown likelihood {likelihood!r}")


def decoder_image(out: torch.Tensor, likelihood: str) -> torch.Tensor:
    """Decoder output -> image in [-1, 1]."""
    if likelihood == "bernoulli":
        return torch.sigmoid(out) * 2.0 - 1.0
    return out.clamp(-1.0, 1.0)


def kl_weight(epoch: int, kl_start: float, kl_decay: float) -> float:
    """KL annealing, restarted at every phase: alpha = min(1, kl_start + epoch * kl_decay)."""
    return min(1.0, kl_start + epoch * kl_decay)
