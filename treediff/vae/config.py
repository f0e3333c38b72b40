"""Configuration of the CNN-TreeVAE and of its growth schedule (plain dataclasses).

jobs/ registers these in Hydra's ConfigStore; treediff/ itself never imports hydra.
Every check raises ValueError naming the offending field.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..data.augment import COLOUR_PRESETS, PRESETS as AUGMENT_PRESETS

ACTIVATIONS = ("silu", "relu", "leaky_relu")
ENCODERS = ("cnn1", "cnn2", "flat", "mlp")
LIKELIHOODS = ("bernoulli", "gaussian")
ENCODER_INPUTS = ("signed", "unit")
KL_FINETUNE = ("phase", "reach_one")


def _check(cond: bool, field_name: str, msg: str) -> None:
    if not cond:
        raise ValueError(f"{field_name}: {msg}")


@dataclass
class TreeVAEConfig:
    """Architecture of the CNN-TreeVAE (names follow the reference notes, section 1)."""

    in_channels: int = 1
    image_size: int = 8
    # cnn1: small conv net (grey); cnn2: residual conv net (colour); flat and mlp: the original
    # TreeVAE's flat latents (R = 1), its conv net for 28 x 28 images and its dense net (encoders.py)
    encoder: str = "cnn1"
    representation_dim: int = 2  # R: latents are C_lat x R x R
    latent_channels: int = 8  # C_lat
    bottom_up_channels: int = 32  # C_bu
    max_depth: int = 6  # the bottom-up ladder has max_depth + 1 levels
    activation: str = "silu"
    likelihood: str = "bernoulli"  # bernoulli: BCE on [0,1] targets; gaussian: squared error
    # what the encoder reads: signed, the images in [-1, 1] as stored; unit, (x + 1) / 2 in [0, 1] (the
    # reference's input for its sigmoid decoders: the convs' zero padding is then the black background)
    encoder_input: str = "signed"
    res_connections: bool = False  # residual connection in the bottom-up conv blocks
    router_hidden: int = 0  # 0: C_bu, as in the reference
    dropout_router: float = 0.0
    contrastive: bool = False  # the contrastive routing term on two augmented views (treediff/vae/contrastive.py)
    contrastive_weight: float = 100.0  # its weight (the reference's colour configs: 100)
    contrastive_augment: str = "cifar"  # the views' augmentation preset (treediff/data/augment.py)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        _check(self.in_channels in (1, 3), "model.in_channels", f"must be 1 or 3, got {self.in_channels}")
        _check(self.encoder in ENCODERS, "model.encoder", f"must be one of {ENCODERS}, got {self.encoder!r}")
        _check(self.activation in ACTIVATIONS, "model.activation",
               f"must be one of {ACTIVATIONS}, got {self.activation!r}")
        _check(self.likelihood in LIKELIHOODS, "model.likelihood",
               f"must be one of {LIKELIHOODS}, got {self.likelihood!r}")
        _check(self.encoder_input in ENCODER_INPUTS, "model.encoder_input",
               f"must be one of {ENCODER_INPUTS}, got {self.encoder_input!r}")
        for name in ("image_size", "representation_dim", "latent_channels", "bottom_up_channels", "max_depth"):
            _check(getattr(self, name) >= 1, f"model.{name}", f"must be >= 1, got {getattr(self, name)}")
        _check(self.representation_dim < self.image_size, "model.representation_dim",
               f"must be smaller than model.image_size={self.image_size}, got {self.representation_dim}")
        if self.encoder == "cnn2":
            ratio = self.image_size / self.representation_dim
            _check(ratio == int(ratio) and math.log2(ratio).is_integer(), "model.representation_dim",
                   f"cnn2 needs image_size / representation_dim to be a power of 2, "
                   f"got {self.image_size}/{self.representation_dim}")
        if self.encoder in ("flat", "mlp"):
            _check(self.representation_dim == 1, "model.representation_dim",
                   f"the {self.encoder} encoder gives flat latents: needs 1, got {self.representation_dim}")
        if self.encoder == "flat":
            _check(self.image_size == 28, "model.image_size",
                   f"the flat encoder is the original TreeVAE's 28 x 28 network: needs 28, got {self.image_size}")
            _check(self.bottom_up_channels % 16 == 0, "model.bottom_up_channels",
                   f"the flat encoder's convs have C_bu/16, C_bu/8, C_bu/4 channels: needs a multiple of 16, "
                   f"got {self.bottom_up_channels}")
        _check(0.0 <= self.dropout_router < 1.0, "model.dropout_router", f"must be in [0, 1), got {self.dropout_router}")
        _check(self.router_hidden >= 0, "model.router_hidden", f"must be >= 0, got {self.router_hidden}")
        _check(self.contrastive_weight >= 0, "model.contrastive_weight", f"must be >= 0, got {self.contrastive_weight}")
        _check(self.contrastive_augment in AUGMENT_PRESETS, "model.contrastive_augment",
               f"must be one of {AUGMENT_PRESETS}, got {self.contrastive_augment!r}")
        if self.contrastive and self.contrastive_augment in COLOUR_PRESETS:
            _check(self.in_channels == 3, "model.contrastive_augment",
                   f"preset {self.contrastive_augment!r} jitters colours and needs model.in_channels=3, "
                   f"got {self.in_channels} (grey data: contrastive_augment=crop, flip or affine)")

    @property
    def hidden(self) -> int:
        return self.router_hidden or self.bottom_up_channels

    @property
    def views(self) -> int:
        """Samples per image in a training batch: two augmented views with the contrastive term."""
        return 2 if self.contrastive else 1


@dataclass
class GrowthConfig:
    """The growth schedule (reference notes, section 2)."""

    initial_depth: int = 1
    num_clusters_tree: int = 10  # stop when this many effective leaves exist
    max_depth: int = 6
    max_phases: int = 150
    min_samples: int = 0  # a leaf needs this many samples to be split; 0: the batch size
    effective_leaf_mass: float = 0.01  # a leaf is effective with >= 1 % of the probability mass
    intermediate_fulltrain_every: int = 0  # 0: never; k: full-tree retraining every k splits
    prune: bool = True
    prune_fraction: float = 0.01  # prune leaves holding fewer than this fraction of samples

    def __post_init__(self) -> None:
        _check(self.initial_depth >= 1, "growth.initial_depth", f"must be >= 1, got {self.initial_depth}")
        _check(self.max_depth >= self.initial_depth, "growth.max_depth",
               f"must be >= growth.initial_depth={self.initial_depth}, got {self.max_depth}")
        _check(self.num_clusters_tree >= 2, "growth.num_clusters_tree", f"must be >= 2, got {self.num_clusters_tree}")
        _check(self.max_phases >= 0, "growth.max_phases", f"must be >= 0, got {self.max_phases}")
        _check(self.min_samples >= 0, "growth.min_samples", f"must be >= 0, got {self.min_samples}")
        _check(0.0 <= self.effective_leaf_mass < 1.0, "growth.effective_leaf_mass",
               f"must be in [0, 1), got {self.effective_leaf_mass}")
        _check(0.0 <= self.prune_fraction < 1.0, "growth.prune_fraction", f"must be in [0, 1), got {self.prune_fraction}")
        _check(self.intermediate_fulltrain_every >= 0, "growth.intermediate_fulltrain_every",
               f"must be >= 0, got {self.intermediate_fulltrain_every}")


@dataclass
class OptimConfig:
    """Optimiser and per-phase epochs (a fresh optimiser and KL annealing every phase)."""

    lr: float = 1e-3
    weight_decay: float = 1e-5
    lr_step_epochs: int = 100  # StepLR(gamma=0.1) every this many epochs
    # > 0: instead, one step x0.1 after this fraction of every phase's epochs, whatever its length
    # (the reference's 150-epoch phases spend their last third at lr / 10); 0: lr_step_epochs
    lr_step_fraction: float = 0.0
    batch_size: int = 256
    epochs_initial: int = 150
    epochs_subtree: int = 150
    epochs_intermediate: int = 80
    epochs_finetune: int = 200
    kl_start: float = 0.0
    kl_decay: float = 0.001
    # floors in optimiser steps per phase kind (0: none): a phase trains at least this many steps,
    # whatever the size of its data (treediff/vae/budget.py)
    min_steps_initial: int = 0
    min_steps_subtree: int = 0
    min_steps_intermediate: int = 0
    min_steps_finetune: int = 0
    kl_finetune: str = "phase"  # phase: optim.kl_decay; reach_one: alpha reaches 1 by the fine-tune's end
    seed: int = 42

    def __post_init__(self) -> None:
        _check(self.lr > 0, "optim.lr", f"must be > 0, got {self.lr}")
        _check(self.weight_decay >= 0, "optim.weight_decay", f"must be >= 0, got {self.weight_decay}")
        _check(self.batch_size >= 1, "optim.batch_size", f"must be >= 1, got {self.batch_size}")
        _check(self.lr_step_epochs >= 1, "optim.lr_step_epochs", f"must be >= 1, got {self.lr_step_epochs}")
        _check(0.0 <= self.lr_step_fraction < 1.0, "optim.lr_step_fraction",
               f"must be in [0, 1), got {self.lr_step_fraction}")
        for name in ("epochs_initial", "epochs_subtree", "epochs_intermediate", "epochs_finetune"):
            _check(getattr(self, name) >= 0, f"optim.{name}", f"must be >= 0, got {getattr(self, name)}")
        _check(self.kl_start >= 0, "optim.kl_start", f"must be >= 0, got {self.kl_start}")
        _check(self.kl_decay >= 0, "optim.kl_decay", f"must be >= 0, got {self.kl_decay}")
        for name in ("min_steps_initial", "min_steps_subtree", "min_steps_intermediate", "min_steps_finetune"):
            _check(getattr(self, name) >= 0, f"optim.{name}", f"must be >= 0, got {getattr(self, name)}")
        _check(self.kl_finetune in KL_FINETUNE, "optim.kl_finetune",
               f"must be one of {KL_FINETUNE}, got {self.kl_finetune!r}")
