"""Forward-process noise schedules, the epsilon-prediction loss and an EMA of model weights.

Conventions (as in DDPM/DiffuseVAE and the reference models, notes §3.1):

* Timesteps are 0-indexed, ``t in {0, ..., T-1}``; ``alpha_bars[t] = prod_{s<=t} (1 - betas[s])``.
  "One step before t = 0" is written ``t = -1`` and has ``alpha_bar = 1`` (clean data).
* ``x_t = sqrt(alpha_bar_t) * x_0 + sqrt(1 - alpha_bar_t) * eps``, ``eps ~ N(0, I)``.
* Schedule tables are float64; coefficients are gathered per sample and cast to the dtype of the
  tensor they multiply, so results keep the input's dtype.
* Images are in [-1, 1].
"""
from __future__ import annotations

import math
from typing import Callable, Union

import torch
import torch.nn.functional as F
from torch import nn

TimeLike = Union[int, torch.Tensor]

__all__ = [
    "linear_betas",
    "cosine_betas",
    "NoiseSchedule",
    "epsilon_loss",
    "EMA",
]


def linear_betas(T: int, beta_1: float = 1e-4, beta_T: float = 0.02) -> torch.Tensor:
    """DDPM linear schedule: ``T`` betas evenly spaced from ``beta_1`` to ``beta_T`` (float64)."""
    if T < 1:
        raise ValueError(f"diffusion.T must be >= 1, got {T}")
    if not (0.0 < beta_1 <= beta_T < 1.0):
        raise ValueError(
            f"diffusion linear betas need 0 < beta_1 <= beta_T < 1, got beta_1={beta_1}, beta_T={beta_T}"
        )
    return torch.linspace(beta_1, beta_T, T, dtype=torch.float64)


def cosine_alpha_bar(t: torch.Tensor, T: int, s: float = 0.008) -> torch.Tensor:
    """Nichol & Dhariwal's ``f(t) / f(0)`` with ``f(t) = cos^2(((t/T) + s) / (1 + s) * pi/2)``.

    ``t`` is continuous "time elapsed" in [0, T]; the discrete ``alpha_bars[i]`` of the cosine
    schedule equals ``cosine_alpha_bar(i + 1)`` wherever no beta was clipped.
    """
    t = torch.as_tensor(t, dtype=torch.float64)
    f = torch.cos(((t / T) + s) / (1 + s) * (math.pi / 2)) ** 2
    f0 = math.cos(s / (1 + s) * (math.pi / 2)) ** 2
    return f / f0


def cosine_betas(T: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Cosine schedule (Nichol & Dhariwal 2021): ``beta_i = 1 - abar(i+1)/abar(i)``, clipped to
    ``max_beta`` (float64, length ``T``)."""
    if T < 1:
        raise ValueError(f"diffusion.T must be >= 1, got {T}")
    if not (0.0 < max_beta < 1.0):
        raise ValueError(f"diffusion cosine max_beta must be in (0, 1), got {max_beta}")
    ab = cosine_alpha_bar(torch.arange(T + 1, dtype=torch.float64), T, s)
    betas = 1.0 - ab[1:] / ab[:-1]
    return betas.clamp(min=0.0, max=max_beta)


def _as_time(t: TimeLike, batch: int, device: torch.device) -> torch.Tensor:
    """Turn an int / 0-d / (B,) timestep into a LongTensor of shape (B,) on ``device``."""
    t = torch.as_tensor(t, dtype=torch.long, device=device)
    if t.dim() == 0:
        t = t.expand(batch)
    return t


def _bcast(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(B,) coefficient -> (B, 1, ..., 1) in ``x``'s dtype and device."""
    return v.to(device=x.device, dtype=x.dtype).reshape(-1, *([1] * (x.dim() - 1)))


class NoiseSchedule:
    """Discrete forward process built from ``betas`` (kept in float64).

    Attributes (all float64 tensors of length ``T`` unless noted): ``betas``, ``alphas``,
    ``alpha_bars``, ``alpha_bars_prev`` (``alpha_bars`` shifted right with a leading 1),
    ``sqrt_alpha_bars``, ``sqrt_one_minus_alpha_bars``, ``sqrt_recip_alpha_bars``,
    ``sqrt_recipm1_alpha_bars``, ``posterior_variance`` (``beta_t (1 - abar_{t-1}) / (1 - abar_t)``,
    0 at t = 0), ``posterior_log_variance_clipped`` (log of it, t = 0 replaced by t = 1),
    ``posterior_mean_coef1`` / ``posterior_mean_coef2`` (q(x_{t-1} | x_t, x_0) mean =
    coef1 * x_0 + coef2 * x_t); ``T`` (int).
    """

    _TABLES = (
        "betas",
        "alphas",
        "alpha_bars",
        "alpha_bars_prev",
        "sqrt_alpha_bars",
        "sqrt_one_minus_alpha_bars",
        "sqrt_recip_alpha_bars",
        "sqrt_recipm1_alpha_bars",
        "posterior_variance",
        "posterior_log_variance_clipped",
        "posterior_mean_coef1",
        "posterior_mean_coef2",
    )

    def __init__(self, betas: torch.Tensor):
        betas = torch.as_tensor(betas, dtype=torch.float64).detach().flatten()
        if betas.numel() < 1:
            raise ValueError("diffusion.schedule: betas must be non-empty")
        if not bool(((betas > 0) & (betas < 1)).all()):
            raise ValueError("diffusion.schedule: betas must lie in (0, 1)")
        self.T = int(betas.numel())
        self.betas = betas
        self.alphas = 1.0 - betas
        self.alpha_bars = torch.cumprod(self.alphas, dim=0)
        self.alpha_bars_prev = torch.cat([betas.new_ones(1), self.alpha_bars[:-1]])
        self.sqrt_alpha_bars = self.alpha_bars.sqrt()
        self.sqrt_one_minus_alpha_bars = (1.0 - self.alpha_bars).sqrt()
        self.sqrt_recip_alpha_bars = (1.0 / self.alpha_bars).sqrt()
        self.sqrt_recipm1_alpha_bars = (1.0 / self.alpha_bars - 1.0).sqrt()
        self.posterior_variance = betas * (1.0 - self.alpha_bars_prev) / (1.0 - self.alpha_bars)
        pv = self.posterior_variance
        first = pv[1:2] if self.T > 1 else betas[:1]
        self.posterior_log_variance_clipped = torch.cat([first, pv[1:]]).log()
        self.posterior_mean_coef1 = betas * self.alpha_bars_prev.sqrt() / (1.0 - self.alpha_bars)
        self.posterior_mean_coef2 = (1.0 - self.alpha_bars_prev) * self.alphas.sqrt() / (1.0 - self.alpha_bars)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_name(cls, name: str, T: int, **kwargs) -> "NoiseSchedule":
        """``"linear"`` (kwargs ``beta_1``, ``beta_T``) or ``"cosine"`` (kwargs ``s``, ``max_beta``)."""
        key = str(name).lower()
        if key == "linear":
            return cls(linear_betas(T, **kwargs))
        if key == "cosine":
            return cls(cosine_betas(T, **kwargs))
        raise ValueError(f"diffusion.schedule: unknown schedule {name!r}; expected 'linear' or 'cosine'")

    def to(self, device: Union[str, torch.device]) -> "NoiseSchedule":
        """Move the (float64) tables to ``device`` in place; returns ``self``."""
        for name in self._TABLES:
            setattr(self, name, getattr(self, name).to(device))
        return self

    @property
    def device(self) -> torch.device:
        return self.betas.device

    def __repr__(self) -> str:
        return (
            f"NoiseSchedule(T={self.T}, beta[0]={self.betas[0].item():.3g}, "
            f"beta[-1]={self.betas[-1].item():.3g}, alpha_bar[-1]={self.alpha_bars[-1].item():.3g})"
        )

    # ------------------------------------------------------------------ lookups
    def gather(self, table: Union[str, torch.Tensor], t: TimeLike, x: torch.Tensor) -> torch.Tensor:
        """``table[t]`` broadcast to ``x`` (shape (B, 1, ..., 1), ``x``'s dtype and device).

        Call :meth:`to` once with the model's device to avoid host round trips per lookup.
        """
        arr = getattr(self, table) if isinstance(table, str) else table
        tt = _as_time(t, x.shape[0], arr.device)
        if tt.device.type == "cpu" and (bool((tt < 0).any()) or bool((tt >= self.T).any())):
            raise IndexError(f"timesteps must lie in [0, {self.T - 1}], got {tt.tolist()}")
        return _bcast(arr[tt], x)

    def alpha_bar(self, t: TimeLike, batch: int = 1) -> torch.Tensor:
        """float64 ``alpha_bar`` at ``t`` (shape (B,)), with ``alpha_bar(-1) = 1``."""
        tt = _as_time(t, batch, self.alpha_bars.device)
        if tt.device.type == "cpu" and (bool((tt < -1).any()) or bool((tt >= self.T).any())):
            raise IndexError(f"timesteps must lie in [-1, {self.T - 1}], got {tt.tolist()}")
        return torch.where(tt >= 0, self.alpha_bars[tt.clamp(min=0)], torch.ones((), dtype=torch.float64,
                                                                                  device=tt.device))

    # ------------------------------------------------------------------ forward process
    def q_sample(self, x0: torch.Tensor, t: TimeLike, noise: torch.Tensor | None = None) -> torch.Tensor:
        """``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise`` (``noise`` drawn if None)."""
        if noise is None:
            noise = torch.randn_like(x0)
        return self.gather("sqrt_alpha_bars", t, x0) * x0 + self.gather("sqrt_one_minus_alpha_bars", t, x0) * noise

    def predict_x0(self, x_t: torch.Tensor, t: TimeLike, eps: torch.Tensor) -> torch.Tensor:
        """Invert ``q_sample`` given the noise: ``(x_t - sqrt(1 - abar) eps) / sqrt(abar)``."""
        return self.gather("sqrt_recip_alpha_bars", t, x_t) * x_t - self.gather("sqrt_recipm1_alpha_bars", t, x_t) * eps

    def predict_eps(self, x_t: torch.Tensor, t: TimeLike, x0: torch.Tensor) -> torch.Tensor:
        """Noise implied by ``x_t`` and ``x0``: ``(x_t - sqrt(abar) x0) / sqrt(1 - abar)``."""
        return (x_t - self.gather("sqrt_alpha_bars", t, x_t) * x0) / self.gather("sqrt_one_minus_alpha_bars", t, x_t)

    def q_posterior_mean(self, x0: torch.Tensor, x_t: torch.Tensor, t: TimeLike) -> torch.Tensor:
        """Mean of q(x_{t-1} | x_t, x_0)."""
        return self.gather("posterior_mean_coef1", t, x_t) * x0 + self.gather("posterior_mean_coef2", t, x_t) * x_t

    # ------------------------------------------------------------------ training loss
    def epsilon_loss(self, model_fn: Callable[..., torch.Tensor], x0: torch.Tensor, t: TimeLike,
                     noise: torch.Tensor | None = None, **cond) -> torch.Tensor:
        """Scalar ``mean((model_fn(q_sample(x0, t, noise), t, **cond) - noise) ** 2)``."""
        if noise is None:
            noise = torch.randn_like(x0)
        t = _as_time(t, x0.shape[0], x0.device)
        x_t = self.q_sample(x0, t, noise)
        return F.mse_loss(model_fn(x_t, t, **cond), noise)


def epsilon_loss(schedule: NoiseSchedule, model_fn: Callable[..., torch.Tensor], x0: torch.Tensor,
                 t: TimeLike, noise: torch.Tensor | None = None, **cond) -> torch.Tensor:
    """Function form of :meth:`NoiseSchedule.epsilon_loss` (L2 / MSE, mean over all elements)."""
    return schedule.epsilon_loss(model_fn, x0, t, noise, **cond)


class EMA:
    """Exponential moving average of a module's parameters (buffers are copied, not averaged).

    ``shadow = d * shadow + (1 - d) * param`` on every :meth:`update`, with ``d = decay`` or,
    when ``warmup`` is on, ``d = min(decay, (1 + n) / (10 + n))`` where ``n`` counts updates
    including the current one (n = 1 on the first update). The reference (DV/TD/DT) uses
    ``decay = 0.9999`` without warm-up. Non-floating parameters are copied.
    """

    def __init__(self, module: nn.Module, decay: float = 0.9999, warmup: bool = False):
        if not (0.0 <= decay <= 1.0):
            raise ValueError(f"ema.decay must be in [0, 1], got {decay}")
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.num_updates = 0
        with torch.no_grad():
            self.shadow: dict[str, torch.Tensor] = {
                k: p.detach().clone() for k, p in module.named_parameters()
            }
            self.buffers: dict[str, torch.Tensor] = {
                k: b.detach().clone() for k, b in module.named_buffers()
            }

    def current_decay(self) -> float:
        """The decay the next :meth:`update` will use."""
        if not self.warmup:
            return self.decay
        n = self.num_updates + 1
        return min(self.decay, (1.0 + n) / (10.0 + n))

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        d = self.current_decay()
        self.num_updates += 1
        params = dict(module.named_parameters())
        if params.keys() != self.shadow.keys():
            raise KeyError("EMA.update: module parameters do not match the shadow copy")
        for k, p in params.items():
            s = self.shadow[k]
            if s.is_floating_point():
                s.lerp_(p.detach().to(s.device, s.dtype), 1.0 - d)
            else:
                s.copy_(p.detach())
        for k, b in module.named_buffers():
            if k in self.buffers:
                self.buffers[k].copy_(b.detach())
            else:
                self.buffers[k] = b.detach().clone()

    @torch.no_grad()
    def copy_to(self, module: nn.Module) -> None:
        """Write the averaged parameters (and copied buffers) into ``module``."""
        for k, p in module.named_parameters():
            p.copy_(self.shadow[k])
        for k, b in module.named_buffers():
            if k in self.buffers:
                b.copy_(self.buffers[k])

    def to(self, device: Union[str, torch.device]) -> "EMA":
        self.shadow = {k: v.to(device) for k, v in self.shadow.items()}
        self.buffers = {k: v.to(device) for k, v in self.buffers.items()}
        return self

    def state_dict(self) -> dict:
        return {
            "decay": self.decay,
            "warmup": self.warmup,
            "num_updates": self.num_updates,
            "shadow": {k: v.clone() for k, v in self.shadow.items()},
            "buffers": {k: v.clone() for k, v in self.buffers.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        if state["shadow"].keys() != self.shadow.keys():
            raise KeyError("EMA.load_state_dict: parameter names do not match")
        self.decay = float(state["decay"])
        self.warmup = bool(state["warmup"])
        self.num_updates = int(state["num_updates"])
        with torch.no_grad():
            for k, v in state["shadow"].items():
                self.shadow[k].copy_(v)
            for k, v in state.get("buffers", {}).items():
                if k in self.buffers:
                    self.buffers[k].copy_(v)
                else:
                    self.buffers[k] = v.detach().clone()
