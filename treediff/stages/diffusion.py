"""The diffusion second stage as a stage: eps-prediction loss of a TreeDenoiser on a frozen tree.

Per batch: conditions from the frozen TreeVAE (posterior leaf sample, path latents, x_hat),
a per-sample conditioning drop (classifier-free guidance), t ~ U{0..T-1}, MSE on the noise.
AdamW with linear warm-up; the EMA of the weights is updated after every step and exported
with them. The random draws come from a generator seeded by the runtime (`setup`), so ranks
draw differently while each run is reproducible.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..diffusion.conditioning import drop_mask
from ..diffusion.config import DiffusionConfig
from ..diffusion.model import TreeDenoiser, frozen, posterior_condition
from ..diffusion.schedule import EMA
from ..vae.trainer import load_tree_model
from .base import Batch, Stage


@dataclass
class DiffusionStage(Stage):
    cfg: DiffusionConfig
    tree_checkpoint: str
    epochs: int = 1
    name: str = "diffusion"
    _state: dict = field(default_factory=dict, repr=False)

    @property
    def grad_clip(self) -> float:
        return self.cfg.grad_clip  # diffusion.grad_clip, on every runtime

    @property
    def checkpoint_steps(self) -> int:
        return self.cfg.checkpoint_every  # diffusion.checkpoint_every (optimiser steps), on every runtime

    def setup(self, seed: int) -> None:
        torch.manual_seed(seed)
        self.tree_model = frozen(load_tree_model(self.tree_checkpoint))
        self.generator = torch.Generator().manual_seed(seed + 1)

    def build(self) -> TreeDenoiser:
        denoiser = TreeDenoiser.for_tree(self.cfg, self.tree_model)
        self.schedule = denoiser.schedule()
        self.ema = EMA(denoiser, decay=self.cfg.ema_decay, warmup=self.cfg.ema_warmup)
        return denoiser

    def optimizer(self, params: list[nn.Parameter]) -> torch.optim.Optimizer:
        return torch.optim.AdamW(params, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay, foreach=True)

    def lr_lambda(self, steps_per_epoch: int) -> Callable[[int], float]:
        warmup = self.cfg.warmup_steps
        return lambda step: 1.0 if warmup <= 0 else min(1.0, (step + 1) / warmup)

    def _follow(self, device: torch.device) -> None:
        """Keep the frozen tree, the schedule's tables and the EMA on the batches' device."""
        if self.schedule.device != device:
            self.tree_model.to(device)
            self.schedule.to(device)
            self.ema.to(device)

    def loss(self, forward: Callable[..., Any], batch: Batch) -> tuple[torch.Tensor, dict[str, Any]]:
        x0 = batch[0]
        self._follow(x0.device)
        b, g = len(x0), self.generator
        cond = posterior_condition(self.tree_model, x0, g, decode=self.cfg.uses_recon)
        # drawn on the CPU generator (the same draws on any device), then moved
        drop = drop_mask(b, self.cfg.cond_drop_prob, g).to(x0.device)
        t = torch.randint(0, self.cfg.T, (b,), generator=g).to(x0.device)
        noise = torch.randn(x0.shape, generator=g).to(x0.device)
        eps = forward(self.schedule.q_sample(x0, t, noise), t, cond, drop)
        loss = F.mse_loss(eps.float(), noise)
        return loss, {"loss": loss.detach()}

    def after_step(self, model: nn.Module) -> None:
        self.ema.update(model)

    def export(self, model: nn.Module) -> dict[str, Any]:
        cpu = lambda d: {k: v.detach().cpu() for k, v in d.items()}  # noqa: E731
        ema = self.ema.state_dict()
        return {"model": cpu(model.state_dict()), "ema": ema | {"shadow": cpu(ema["shadow"]), "buffers": cpu(ema["buffers"])}}

    def load_export(self, model: nn.Module, state: dict[str, Any]) -> None:
        model.load_state_dict(state["model"], strict=True)
        self.ema.load_state_dict(state["ema"])
