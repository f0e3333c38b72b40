"""Samplers for epsilon-prediction models: DDIM (with eta), DDIM inversion and ancestral DDPM.

``eps_fn(x_t, t_batch) -> eps`` is any callable (a UNet with its conditioning bound, or a
guided wrapper from :mod:`treediff.diffusion.guidance`); ``t_batch`` is a LongTensor (B,) of
0-indexed timesteps. Images are in [-1, 1]: with ``clip_x0`` the predicted x_0 is clamped to
[-1, 1] at every step, so the returned samples lie in [-1, 1].

Reference behaviour (notes §3.2/3.3): TD samples with DDIM, eta = 0, 100 "quad" steps, clamped
x_0; DT samples with ancestral DDPM over all 1000 steps with "fixedlarge" variance.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import torch

from .schedule import NoiseSchedule, _bcast

EpsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

__all__ = ["timesteps", "ddim_step", "ddim_sample", "ddim_invert", "ddpm_sample"]

SPACINGS = ("uniform", "quad")


def timesteps(T: int, steps: int, spacing: str = "uniform") -> torch.Tensor:
    """``steps`` distinct timesteps in ascending order (LongTensor), from 0 to ``T - 1``.

    * ``"uniform"``: ``round(k (T-1) / (steps-1))``, k = 0..steps-1 (evenly spaced, both ends).
    * ``"quad"``: ``round((T-1) (k / (steps-1))^2)`` over the **full** range 0..T-1, de-duplicated
      by pushing a value that collides with its predecessor one step up
      (``t_k = max(q_k, t_{k-1} + 1)``). Because the quadratic lies below the line
      ``t = T - steps + k``, this never overshoots and always yields exactly ``steps`` values
      ending at T-1. (The reference's quad spacing spans only 0..0.8T and loses steps to
      de-duplication; this one does not.)

    ``steps == 1`` gives ``[T - 1]`` (a single jump from x_{T-1} to x_0).
    """
    T = int(T)
    steps = int(steps)
    if T < 1:
        raise ValueError(f"diffusion.T must be >= 1, got {T}")
    if steps < 1 or steps > T:
        raise ValueError(f"sampler.steps must be in [1, T={T}], got {steps}")
    if spacing not in SPACINGS:
        raise ValueError(f"sampler.spacing: unknown spacing {spacing!r}; expected one of {SPACINGS}")
    if steps == 1:
        return torch.tensor([T - 1], dtype=torch.long)
    n1 = steps - 1
    if spacing == "uniform":
        # exact integer round-half-up of k (T-1) / (steps-1)
        ts = [(2 * k * (T - 1) + n1) // (2 * n1) for k in range(steps)]
    else:
        ts = []
        for k in range(steps):
            q = (2 * (T - 1) * k * k + n1 * n1) // (2 * n1 * n1)  # round((T-1) (k/n1)^2)
            ts.append(q if not ts else max(q, ts[-1] + 1))
    assert len(set(ts)) == steps and ts[0] == 0 and ts[-1] == T - 1, ts
    return torch.tensor(ts, dtype=torch.long)


def _alpha_bar(schedule: NoiseSchedule, t: Union[int, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """float64 alpha_bar(t) as (B, 1, ..., 1) on x's device; t = -1 means 1."""
    ab = schedule.alpha_bar(t, x.shape[0])
    return ab.to(x.device).reshape(-1, *([1] * (x.dim() - 1)))


def ddim_step(
    schedule: NoiseSchedule,
    x_t: torch.Tensor,
    t: Union[int, torch.Tensor],
    t_prev: Union[int, torch.Tensor],
    eps: torch.Tensor,
    eta: float = 0.0,
    noise: Optional[torch.Tensor] = None,
    clip_x0: bool = True,
) -> torch.Tensor:
    """One DDIM update x_t -> x_{t_prev} (Song et al. 2021, eq. 12).

    ``x0_hat = predict_x0(x_t, t, eps)`` (clamped to [-1, 1] when ``clip_x0``),
    ``sigma = eta sqrt((1 - ab_prev) / (1 - ab_t)) sqrt(1 - ab_t / ab_prev)``,
    ``x_prev = sqrt(ab_prev) x0_hat + sqrt(1 - ab_prev - sigma^2) eps + sigma noise``.
    ``t_prev = -1`` means ``ab_prev = 1``: the result is ``x0_hat``. ``t``/``t_prev`` are ints or
    LongTensors (B,). ``noise`` is drawn with ``randn_like`` if needed and not given.
    """
    ab_t = _alpha_bar(schedule, t, x_t)
    ab_prev = _alpha_bar(schedule, t_prev, x_t)
    x0_hat = (x_t - (1.0 - ab_t).sqrt().to(x_t.dtype) * eps) / ab_t.sqrt().to(x_t.dtype)
    if clip_x0:
        x0_hat = x0_hat.clamp(-1.0, 1.0)
    sigma = eta * ((1.0 - ab_prev) / (1.0 - ab_t)).sqrt() * (1.0 - ab_t / ab_prev).clamp(min=0.0).sqrt()
    dir_coef = (1.0 - ab_prev - sigma**2).clamp(min=0.0).sqrt()
    x_prev = ab_prev.sqrt().to(x_t.dtype) * x0_hat + dir_coef.to(x_t.dtype) * eps
    if eta > 0 and bool((sigma > 0).any()):
        if noise is None:
            noise = torch.randn_like(x_t)
        x_prev = x_prev + sigma.to(x_t.dtype) * noise
    return x_prev


def _progress(it: Sequence, progress: bool, desc: str):
    if not progress:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, desc=desc, disable=None, leave=False)


def _default_device(x: Optional[torch.Tensor], generator: Optional[torch.Generator],
                    device: Optional[Union[str, torch.device]]) -> torch.device:
    if device is not None:
        return torch.device(device)
    if x is not None:
        return x.device
    if isinstance(generator, torch.Generator):
        return generator.device
    return torch.device("cpu")


def _randn(shape, generator, device, dtype) -> torch.Tensor:
    """N(0, I) of `shape`; `generator` may be a list with one generator per batch row (per-sample
    seeds: row b is then the same whatever batch it is drawn in)."""
    if isinstance(generator, (list, tuple)):
        if len(generator) != shape[0]:
            raise ValueError(f"{len(generator)} generators for a batch of {shape[0]}")
        return torch.stack([torch.randn(tuple(shape[1:]), generator=g, dtype=dtype) for g in generator]).to(device)
    return torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype)


@torch.no_grad()
def ddim_sample(
    eps_fn: EpsFn,
    shape: Sequence[int],
    schedule: NoiseSchedule,
    steps: int = 50,
    eta: float = 0.0,
    spacing: str = "uniform",
    generator: Optional[torch.Generator] = None,
    x_T: Optional[torch.Tensor] = None,
    clip_x0: bool = True,
    progress: bool = False,
    device: Optional[Union[str, torch.device]] = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """DDIM sampling from x_{T-1} (``x_T`` or N(0, I) drawn from ``generator``) to x_0.

    Visits ``timesteps(T, steps, spacing)`` in descending order, then a final step to t = -1
    that returns the (clamped) predicted x_0. With ``eta = 0`` the map x_T -> x_0 is
    deterministic; with ``eta > 0`` per-step noise is drawn from ``generator``.
    """
    dev = _default_device(x_T, generator, device)
    x = x_T.to(dev) if x_T is not None else _randn(shape, generator, dev, dtype)
    if x_T is not None and tuple(x.shape) != tuple(shape):
        raise ValueError(f"ddim_sample: x_T has shape {tuple(x.shape)}, expected {tuple(shape)}")
    ts = timesteps(schedule.T, steps, spacing).flip(0).tolist()
    prevs = ts[1:] + [-1]
    B = x.shape[0]
    for t, t_prev in _progress(list(zip(ts, prevs)), progress, "ddim"):
        t_batch = torch.full((B,), t, dtype=torch.long, device=dev)
        eps = eps_fn(x, t_batch)
        noise = None
        if eta > 0 and t_prev >= 0:
            noise = _randn(x.shape, generator, dev, x.dtype)
        x = ddim_step(schedule, x, t, t_prev, eps, eta=eta, noise=noise, clip_x0=clip_x0)
    return x


@torch.no_grad()
def ddim_invert(
    eps_fn: EpsFn,
    x0: torch.Tensor,
    schedule: NoiseSchedule,
    steps: int = 50,
    spacing: str = "uniform",
    progress: bool = False,
) -> torch.Tensor:
    """Deterministic (eta = 0) DDIM inversion x_0 -> x_{T-1} over ``timesteps(T, steps, spacing)``.

    Runs the DDIM update backwards: from time a (starting at a = -1, x = x0) to the next time b,
    ``x_b = sqrt(ab_b) x0_hat + sqrt(1 - ab_b) e`` with ``e = eps_fn(x_a, b)`` and
    ``x0_hat = (x_a - sqrt(1 - ab_a) e) / sqrt(ab_a)`` (no clamping). ``ddim_sample`` with the
    same ``steps``/``spacing``, ``eta = 0`` and ``x_T`` = the result approximately returns
    ``x0`` (exactly in the limit of many steps, for smooth ``eps_fn``).
    """
    ts = timesteps(schedule.T, steps, spacing).tolist()
    x = x0
    B = x.shape[0]
    t_a = -1
    for t_b in _progress(ts, progress, "ddim-invert"):
        t_batch = torch.full((B,), t_b, dtype=torch.long, device=x.device)
        e = eps_fn(x, t_batch)
        ab_a = _alpha_bar(schedule, t_a, x)
        ab_b = _alpha_bar(schedule, t_b, x)
        x0_hat = (x - (1.0 - ab_a).sqrt().to(x.dtype) * e) / ab_a.sqrt().to(x.dtype)
        x = ab_b.sqrt().to(x.dtype) * x0_hat + (1.0 - ab_b).sqrt().to(x.dtype) * e
        t_a = t_b
    return x


@torch.no_grad()
def ddpm_sample(
    eps_fn: EpsFn,
    shape: Sequence[int],
    schedule: NoiseSchedule,
    generator: Optional[torch.Generator] = None,
    x_T: Optional[torch.Tensor] = None,
    variance: str = "fixedlarge",
    clip_x0: bool = True,
    progress: bool = False,
    device: Optional[Union[str, torch.device]] = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Ancestral DDPM sampling over all T steps (t = T-1, ..., 0).

    Each step: ``x0_hat = predict_x0`` (clamped when ``clip_x0``), mean = posterior mean
    ``coef1 x0_hat + coef2 x_t``, ``x_{t-1} = mean + sqrt(var_t) z`` (no noise at t = 0, where the
    mean equals x0_hat). ``variance="fixedlarge"``: ``var_t = beta_t``, except that index 0 uses
    the posterior variance at t = 1 (improved-diffusion/DV convention); ``"fixedsmall"``: the
    posterior variance ``beta_t (1 - ab_{t-1}) / (1 - ab_t)``.
    """
    if variance == "fixedlarge":
        var_table = schedule.betas.clone()
        if schedule.T > 1:
            var_table[0] = schedule.posterior_variance[1]
    elif variance == "fixedsmall":
        var_table = schedule.posterior_variance
    else:
        raise ValueError(f"sampler.variance: unknown {variance!r}; expected 'fixedlarge' or 'fixedsmall'")
    dev = _default_device(x_T, generator, device)
    x = x_T.to(dev) if x_T is not None else _randn(shape, generator, dev, dtype)
    if x_T is not None and tuple(x.shape) != tuple(shape):
        raise ValueError(f"ddpm_sample: x_T has shape {tuple(x.shape)}, expected {tuple(shape)}")
    B = x.shape[0]
    for t in _progress(range(schedule.T - 1, -1, -1), progress, "ddpm"):
        t_batch = torch.full((B,), t, dtype=torch.long, device=dev)
        eps = eps_fn(x, t_batch)
        x0_hat = schedule.predict_x0(x, t, eps)
        if clip_x0:
            x0_hat = x0_hat.clamp(-1.0, 1.0)
        mean = schedule.q_posterior_mean(x0_hat, x, t)
        if t > 0:
            z = _randn(x.shape, generator, dev, x.dtype)
            x = mean + _bcast(var_table[t : t + 1].sqrt(), x) * z
        else:
            x = mean
    return x
