"""How much training a growth phase gets: epochs with a floor in optimiser steps, its KL schedule
and its learning-rate steps.

A subtree phase trains on the samples of one leaf, so with a budget in epochs a small leaf gets
a few dozen optimiser steps (review of 2026-12, "Model faithfulness" 1). The floor
`optim.min_steps_<kind>` raises a phase's epochs until it gets at least that many steps. Every
epoch drops its partial last batch (as the reference does, for the BatchNorm statistics), so an
epoch of n samples at batch b has max(1, n // b) steps, in one process and on Ray alike.
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Callable

from .config import OptimConfig

KINDS = ("initial", "subtree", "intermediate", "finetune")


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Optimiser steps of one epoch over n samples (the partial last batch dropped)."""
    return max(1, n // max(1, batch_size))


def phase_epochs(optim: OptimConfig, kind: str, n: int) -> int:
    """The epochs a phase of `kind` trains on n samples: optim.epochs_<kind>, or more when that
    gives fewer than optim.min_steps_<kind> optimiser steps. 0 epochs stays 0 (the phase is off)."""
    if kind not in KINDS:
        raise ValueError(f"phase kind must be one of {KINDS}, got {kind!r}")
    epochs = getattr(optim, f"epochs_{kind}")
    floor = getattr(optim, f"min_steps_{kind}")
    if epochs == 0 or floor == 0:
        return epochs
    return max(epochs, math.ceil(floor / steps_per_epoch(n, optim.batch_size)))


def phase_kl_decay(optim: OptimConfig, kind: str, epochs: int) -> float:
    """The KL annealing's increase per epoch in a phase of `kind` (alpha = kl_start + epoch x decay).

    optim.kl_finetune="reach_one" gives the fine-tuning the reference's decay
    max(0.01, 1 / max(1, epochs - 1)), so that alpha reaches 1 by its last epoch and the prior
    the generator samples from is fit at the full ELBO; "phase" keeps optim.kl_decay there too."""
    if kind == "finetune" and optim.kl_finetune == "reach_one":
        return max(0.01, 1.0 / max(1, epochs - 1))
    return optim.kl_decay


def phase_lr_factor(optim: OptimConfig, epochs: int) -> Callable[[int], float]:
    """The learning-rate factor at each epoch of a phase of `epochs` epochs (a fresh schedule every
    phase): x0.1 every optim.lr_step_epochs epochs, or, with optim.lr_step_fraction > 0, x0.1 once
    from epoch round(fraction x epochs) on (at least epoch 1)."""
    if optim.lr_step_fraction > 0:
        at = max(1, round(optim.lr_step_fraction * epochs))
        return lambda epoch: 0.1 if epoch >= at else 1.0
    return lambda epoch: 0.1 ** (epoch // optim.lr_step_epochs)


def at_global_batch(optim: OptimConfig, global_batch: int, lr_scale: float) -> OptimConfig:
    """The growth's optimiser settings when the runtime trains at `global_batch` instead of
    optim.batch_size (trainer.batch_scaling=linear: k workers of optim.batch_size each, the learning
    rate x lr_scale). The step floors count steps of the configured batch, so a phase sees as many
    images as it does in one process (diffusion.steps is counted the same way)."""
    k = global_batch / optim.batch_size
    floors = {f"min_steps_{kind}": math.ceil(getattr(optim, f"min_steps_{kind}") / k) for kind in KINDS}
    return replace(optim, batch_size=global_batch, lr=optim.lr * lr_scale, **floors)
