"""One phase of TreeVAE growth as a stage: initial tree, new subtree, full retraining, fine-tuning.

The phase starts from a model state (weights + tree topology, as the driver left it: for a
subtree phase the leaf is already split and its new modules freshly initialised), trains the
whole tree (`subtree=None`) or only the subtree below `subtree` (everything else frozen, in
eval mode), with a fresh Adam (L2 decay), step learning-rate decay (budget.phase_lr_factor) and
KL annealing restarted at epoch 0, as the reference does at every phase.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from ..tree import Tree
from ..data.augment import contrastive_augment
from ..vae.config import OptimConfig, TreeVAEConfig
from ..vae.contrastive import pair_views
from ..vae.budget import phase_lr_factor
from ..vae.losses import kl_weight
from ..vae.model import TreeVAE
from .base import Batch, Stage


@dataclass
class TreePhaseStage(Stage):
    model_cfg: TreeVAEConfig
    tree_json: str  # the topology this phase trains
    init_state: dict[str, torch.Tensor]  # its initial weights (strictly loaded)
    subtree: int | None  # None: the whole tree trains
    optim: OptimConfig
    epochs: int = 1
    name: str = "tree"

    def __post_init__(self) -> None:
        self.alpha = kl_weight(0, self.optim.kl_start, self.optim.kl_decay)
        self.views = self.model_cfg.views  # the contrastive term's two augmented views

    def augmentation(self):
        c = self.model_cfg
        return contrastive_augment(c.contrastive_augment, c.image_size, c.in_channels)

    def build(self) -> TreeVAE:
        model = TreeVAE(self.model_cfg, Tree.from_json(self.tree_json))
        model.load_state_dict(self.init_state, strict=True)
        model.set_trainable(self.subtree)
        return model

    def trainable(self, model: TreeVAE) -> list[nn.Parameter]:
        return model.set_trainable(self.subtree)

    def optimizer(self, params: list[nn.Parameter]) -> torch.optim.Optimizer:
        return torch.optim.Adam(params, lr=self.optim.lr, weight_decay=self.optim.weight_decay, foreach=True)

    def lr_lambda(self, steps_per_epoch: int) -> Callable[[int], float]:
        factor = phase_lr_factor(self.optim, self.epochs)
        return lambda step: factor(step // max(1, steps_per_epoch))

    def begin_epoch(self, model: nn.Module, epoch: int) -> dict[str, float]:
        self.alpha = kl_weight(epoch, self.optim.kl_start, self.optim.kl_decay)
        return {"alpha": self.alpha}

    def loss(self, forward: Callable[..., Any], batch: Batch) -> tuple[torch.Tensor, dict[str, Any]]:
        x = batch[0]  # (B, C, H, W), or (B, 2, C, H, W): two views of every image
        if self.views == 2:
            x = pair_views(x)  # (2B, C, H, W): [x'; x'']
        out = forward(x, subtree=self.subtree, views=self.views)
        loss = out.loss(self.alpha)
        # tensors: the runtime averages them on the device
        logs = out.mean_terms() | {"loss": loss.detach()}
        logs |= {f"kl_node/{i}": v.mean().detach() for i, v in out.kl_per_node.items()}
        logs |= {f"leaf_prob/{leaf}": p for leaf, p in zip(out.leaves, out.leaf_probs.mean(0).detach())}
        return loss, logs
