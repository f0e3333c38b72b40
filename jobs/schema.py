"""Structured-config schema: the Hydra tree is validated against these dataclasses.

Unknown keys and wrongly typed values are rejected by OmegaConf; value checks run in the
dataclasses' __post_init__ (treediff.vae.config), each error naming its field.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from treediff.vae.config import GrowthConfig, OptimConfig, TreeVAEConfig


@dataclass
class DataConfig:
    name: str = "digits"  # digits | mnist | fashion_mnist
    root: Optional[str] = None  # directory of the on-disk files (not needed for bundled data)
    limit_train: int = 0  # 0: all; otherwise the first N training images (quick runs)
    limit_test: int = 0

    def __post_init__(self) -> None:
        for name in ("limit_train", "limit_test"):
            if getattr(self, name) < 0:
                raise ValueError(f"data.{name}: must be >= 0, got {getattr(self, name)}")


@dataclass
class GrowJobConfig:
    run_dir: str = "runs/default"
    data: DataConfig = field(default_factory=DataConfig)
    model: TreeVAEConfig = field(default_factory=TreeVAEConfig)
    growth: GrowthConfig = field(default_factory=GrowthConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    threads: int = 0  # torch intra-op threads; 0: leave torch's default


def register() -> None:
    ConfigStore.instance().store(name="treediff_schema", node=GrowJobConfig)


def to_objects(cfg: DictConfig) -> GrowJobConfig:
    """Resolve and validate: DictConfig -> dataclasses (runs every __post_init__ check)."""
    return OmegaConf.to_object(cfg)


def to_plain(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True)
