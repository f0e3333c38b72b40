"""The stage protocol, and the plain single-process loop that drives one (the reference the
distributed loop is checked against)."""
from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
from torch import nn

Batch = tuple  # (x (B, C, H, W) in [-1, 1], labels (B,), keys)


class Stage:
    """One training stage. The runtime calls, in order:

        setup(seed)                       once per process, before anything else
        model = build()                   the module to train (initial weights loaded)
        params = trainable(model)         the parameters the optimiser updates
        opt = optimizer(params)           a fresh optimiser
        lr_lambda(steps_per_epoch)        LambdaLR factor per optimiser step
        for epoch: begin_epoch(model, epoch)
            for batch: loss, logs = loss(forward, batch); backward; step; after_step(model)
        export(model) -> dict             what a checkpoint stores (state dicts)

    `forward` is the callable that runs the model (the module itself, or a DeepSpeed engine).
    """

    name = "stage"
    epochs = 1
    grad_clip: float | None = None  # max grad norm of this stage (0: none); None: the runtime's setting
    lr_scale: float = 1.0  # the runtime's factor on the optimiser's learning rates (a scaled global batch)
    checkpoint_steps: int = 0  # also a checkpoint every this many optimiser steps; 0: the runtime's epochs only
    views: int = 1  # > 1: every image comes as this many augmented views, (B, views, C, H, W); the batch counts views

    def augmentation(self):
        """The uint8 (C, H, W) -> (C, H, W) augmentation that makes the views (views > 1)."""
        return None

    def setup(self, seed: int) -> None:
        torch.manual_seed(seed)

    def build(self) -> nn.Module:
        raise NotImplementedError

    def trainable(self, model: nn.Module) -> list[nn.Parameter]:
        return [p for p in model.parameters() if p.requires_grad]

    def optimizer(self, params: list[nn.Parameter]) -> torch.optim.Optimizer:
        raise NotImplementedError

    def lr_lambda(self, steps_per_epoch: int) -> Callable[[int], float]:
        return lambda step: 1.0

    def begin_epoch(self, model: nn.Module, epoch: int) -> dict[str, float]:
        """Per-epoch settings (e.g. the KL weight); returns what to log."""
        return {}

    def loss(self, forward: Callable[..., Any], batch: Batch) -> tuple[torch.Tensor, dict[str, Any]]:
        """The batch's loss, and what to log of it: floats or (0-dim) tensors, which the runtime
        averages on the device (no host sync per step)."""
        raise NotImplementedError

    def after_step(self, model: nn.Module) -> None:
        pass

    def export(self, model: nn.Module) -> dict[str, Any]:
        return {"model": model.state_dict()}

    def load_export(self, model: nn.Module, state: dict[str, Any]) -> None:
        model.load_state_dict(state["model"], strict=True)


def run_plain(stage: Stage, batches: Callable[[int], Iterable[Batch]], steps_per_epoch: int, seed: int = 0,
              max_steps: int | None = None) -> tuple[nn.Module, list[float]]:
    """Train `stage` in this process; `batches(epoch)` yields that epoch's batches. Returns (model, losses)."""
    stage.setup(seed)
    model = stage.build()
    opt = stage.optimizer(stage.trainable(model))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, stage.lr_lambda(steps_per_epoch))
    losses: list[float] = []
    model.train()
    for epoch in range(stage.epochs):
        stage.begin_epoch(model, epoch)
        for batch in batches(epoch):
            loss, _ = stage.loss(model, batch)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{stage.name}: loss is {loss.item()} at step {len(losses)}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if stage.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), stage.grad_clip)
            opt.step()
            sched.step()
            stage.after_step(model)
            losses.append(loss.item())
            if max_steps is not None and len(losses) >= max_steps:
                return model, losses
    return model, losses
